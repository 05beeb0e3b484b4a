//! [`SysctlKey`]: the sysctls egress reads and writes, as typed values. A key is built from its
//! parts (a family, a conf entry, a known name), never from a path, so none can name a file
//! outside `/proc/sys/net/ipv{4,6}/conf/<entry>/` or the two fixed files egress uses.

use std::{fmt, str::FromStr};

use super::knob::Knob;
use crate::{error::Error, kernel::ifname::IfName};

/// An address family of `/proc/sys/net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Family {
    /// `net/ipv4`.
    V4,
    /// `net/ipv6`.
    V6,
}

impl Family {
    /// IPv6 when `ipv6`, else IPv4.
    pub(crate) fn of(ipv6: bool) -> Family {
        match ipv6 {
            true => Family::V6,
            false => Family::V4,
        }
    }
}

/// An entry of `net/ipv{4,6}/conf/`: `all`, `default`, or a link's own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ConfEntry {
    /// `all`: every link (writing `forwarding` there changes every link's).
    All,
    /// `default`: what a new link starts with.
    Default,
    /// One link's own values.
    Link(IfName),
}

impl ConfEntry {
    /// `all`, `default`, or the link's name as it is; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<ConfEntry> {
        match s {
            "all" => Some(ConfEntry::All),
            "default" => Some(ConfEntry::Default),
            name => IfName::parse(name).map(ConfEntry::Link),
        }
    }

    /// The entry of link `name`, a name the kernel gave a link or a spec validated; `None` if
    /// it is not a link name.
    pub(crate) fn link(name: &str) -> Option<ConfEntry> {
        IfName::parse(name).map(ConfEntry::Link)
    }

    /// The directory's name.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            ConfEntry::All => "all",
            ConfEntry::Default => "default",
            ConfEntry::Link(name) => name.as_str(),
        }
    }
}

/// A key of a conf entry that egress reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ConfName {
    /// One a router changes.
    Knob(Knob),
    /// `rp_filter` (diagnose reads it).
    RpFilter,
    /// `keep_addr_on_down` (IPv6: set for the moment an adopted link goes down).
    KeepAddrOnDown,
}

impl ConfName {
    /// The keys that are not knobs.
    const OTHERS: [ConfName; 2] = [ConfName::RpFilter, ConfName::KeepAddrOnDown];

    /// The key whose file is `name`, when it exists in `family`.
    fn parse(family: Family, name: &str) -> Option<ConfName> {
        match Knob::named(name) {
            Some(knob) => knob.exists_in(family).then_some(ConfName::Knob(knob)),
            None => ConfName::OTHERS.into_iter().find(|n| n.as_str() == name),
        }
    }

    /// Every key's file name, as the grammar lists them (`forwarding|…`).
    fn grammar() -> String {
        let knobs = Knob::ALL.iter().map(|k| k.as_str());
        let others = ConfName::OTHERS.iter().map(|n| n.as_str());
        knobs.chain(others).collect::<Vec<_>>().join("|")
    }

    /// The file's name.
    fn as_str(self) -> &'static str {
        match self {
            ConfName::Knob(k) => k.as_str(),
            ConfName::RpFilter => "rp_filter",
            ConfName::KeepAddrOnDown => "keep_addr_on_down",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Conf {
        family: Family,
        entry: ConfEntry,
        name: ConfName,
    },
    IpForward,
    ConntrackCount,
}

/// A sysctl of the router's namespace that egress reads or writes: a key of a conf entry
/// (`net/ipv4/conf/macvlan0/arp_notify`: the family, `all`, `default` or a link name as the
/// kernel allows one, and one of the keys egress knows), `net/ipv4/ip_forward`, or
/// `net/netfilter/nf_conntrack_count`. No other file can be named: a key is opened beneath its
/// fixed directory, never by a path built from data.
///
/// `Display` is the dotted form `sysctl` prints (a `.` in a link name becomes `/`:
/// `net.ipv4.conf.eth0/100.forwarding`); [`FromStr`] takes the path form.
///
/// ```
/// use egress_core::SysctlKey;
/// let key: SysctlKey = "net/ipv4/conf/eth0.100/forwarding".parse()?;
/// assert_eq!(key.to_string(), "net.ipv4.conf.eth0/100.forwarding");
/// assert!("net/ipv4/conf/../../../etc/forwarding".parse::<SysctlKey>().is_err());
/// # Ok::<(), egress_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SysctlKey(Key);

/// Where a key's file is: the directory it is opened beneath, and its path there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dir {
    /// `/proc/sys/net/ipv{4,6}/conf`.
    Conf(Family),
    /// `/proc/sys/net/ipv4`.
    Ipv4,
    /// `/proc/sys/net/netfilter`.
    Netfilter,
}

impl Dir {
    /// The directory's path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Dir::Conf(Family::V4) => "/proc/sys/net/ipv4/conf",
            Dir::Conf(Family::V6) => "/proc/sys/net/ipv6/conf",
            Dir::Ipv4 => "/proc/sys/net/ipv4",
            Dir::Netfilter => "/proc/sys/net/netfilter",
        }
    }
}

impl SysctlKey {
    /// `net/ipv4/ip_forward`: IPv4's `all.forwarding`, written to turn IPv4 forwarding on.
    pub(crate) const IP_FORWARD: SysctlKey = SysctlKey(Key::IpForward);
    /// `net/netfilter/nf_conntrack_count`: the connections the namespace tracks.
    pub(crate) const CONNTRACK_COUNT: SysctlKey = SysctlKey(Key::ConntrackCount);

    /// `net/<family>/conf/<entry>/<name>`.
    pub(crate) fn conf(family: Family, entry: ConfEntry, name: ConfName) -> SysctlKey {
        SysctlKey(Key::Conf {
            family,
            entry,
            name,
        })
    }

    /// `net/<family>/conf/<entry>/<knob>`.
    pub(crate) fn knob(family: Family, entry: ConfEntry, knob: Knob) -> SysctlKey {
        SysctlKey::conf(family, entry, ConfName::Knob(knob))
    }

    /// The conf key's parts, for a key of a conf entry.
    pub(crate) fn conf_parts(&self) -> Option<(Family, &ConfEntry, ConfName)> {
        match &self.0 {
            Key::Conf {
                family,
                entry,
                name,
            } => Some((*family, entry, *name)),
            _ => None,
        }
    }

    /// Whether the key belongs to one link (not `all` or `default`, not a fixed file).
    pub(crate) fn is_link_key(&self) -> bool {
        matches!(self.conf_parts(), Some((_, ConfEntry::Link(_), _)))
    }

    /// Whether writing the key takes the RTNL lock with a trylock: `ip_forward` and every
    /// `forwarding`.
    pub(crate) fn takes_rtnl(&self) -> bool {
        match &self.0 {
            Key::IpForward => true,
            Key::Conf { name, .. } => *name == ConfName::Knob(Knob::Forwarding),
            Key::ConntrackCount => false,
        }
    }

    /// The directory the key's file is opened beneath, and its path there (one component, or
    /// two for a conf key: the entry and the name).
    pub(crate) fn location(&self) -> (Dir, String) {
        match &self.0 {
            Key::Conf {
                family,
                entry,
                name,
            } => (
                Dir::Conf(*family),
                format!("{}/{}", entry.as_str(), name.as_str()),
            ),
            Key::IpForward => (Dir::Ipv4, "ip_forward".into()),
            Key::ConntrackCount => (Dir::Netfilter, "nf_conntrack_count".into()),
        }
    }

    /// The path form under `/proc/sys` (`net/ipv4/conf/eth0.100/forwarding`).
    pub(crate) fn path(&self) -> String {
        let (dir, rel) = self.location();
        format!("{}/{rel}", &dir.path()["/proc/sys/".len()..])
    }
}

impl fmt::Display for SysctlKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `sysctl` writes a `.` inside a component (a link name such as eth0.100) as `/`.
        let dotted: Vec<String> = self
            .path()
            .split('/')
            .map(|c| c.replace('.', "/"))
            .collect();
        f.write_str(&dotted.join("."))
    }
}

impl FromStr for SysctlKey {
    type Err = Error;

    /// The path form: `net/ipv{4,6}/conf/<all|default|link>/<name>` (`name`: a knob of the
    /// family, `rp_filter` or `keep_addr_on_down`), `net/ipv4/ip_forward` or
    /// `net/netfilter/nf_conntrack_count`.
    fn from_str(s: &str) -> Result<SysctlKey, Error> {
        let invalid = || {
            let expected = format!(
                "net/ipv4|ipv6/conf/<all|default|link name>/<{}>, net/ipv4/ip_forward or \
                 net/netfilter/nf_conntrack_count",
                ConfName::grammar()
            );
            Error::invalid("sysctl", s, expected)
        };
        match s {
            "net/ipv4/ip_forward" => return Ok(SysctlKey::IP_FORWARD),
            "net/netfilter/nf_conntrack_count" => return Ok(SysctlKey::CONNTRACK_COUNT),
            _ => {}
        }
        let parts: Vec<&str> = s.split('/').collect();
        let [net, family, conf, entry, name] = parts[..] else {
            return Err(invalid());
        };
        let family = match (net, family, conf) {
            ("net", "ipv4", "conf") => Family::V4,
            ("net", "ipv6", "conf") => Family::V6,
            _ => return Err(invalid()),
        };
        let entry = ConfEntry::parse(entry).ok_or_else(invalid)?;
        let name = ConfName::parse(family, name).ok_or_else(invalid)?;
        Ok(SysctlKey::conf(family, entry, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render_as_sysctl_prints_them_and_parse_back() {
        for (path, dotted) in [
            ("net/ipv4/ip_forward", "net.ipv4.ip_forward"),
            (
                "net/ipv4/conf/eth0.100/forwarding",
                "net.ipv4.conf.eth0/100.forwarding",
            ),
            (
                "net/ipv6/conf/all/keep_addr_on_down",
                "net.ipv6.conf.all.keep_addr_on_down",
            ),
            (
                "net/netfilter/nf_conntrack_count",
                "net.netfilter.nf_conntrack_count",
            ),
        ] {
            let key: SysctlKey = path.parse().unwrap();
            assert_eq!(key.path(), path);
            assert_eq!(key.to_string(), dotted);
        }
    }

    #[test]
    fn a_key_names_no_other_file() {
        for bad in [
            "net/ipv4/conf/../../../../etc/forwarding",
            "net/ipv4/conf/../forwarding",
            "net/ipv4/conf/a/b/forwarding",
            "net/ipv4/conf/eth0/forwarding/",
            "net/ipv4/conf/eth0/bogus",
            // A knob of the other family only.
            "net/ipv4/conf/eth0/ndisc_notify",
            "net/ipv6/conf/eth0/arp_notify",
            "net/ipv4/conf//forwarding",
            "net/ipv5/conf/eth0/forwarding",
            "net/ipv4/neigh/eth0/forwarding",
            "kernel/core_pattern",
            "/proc/sys/net/ipv4/ip_forward",
            "net/ipv4/conf/eth0:1/forwarding",
            "net/ipv4/conf/a b/forwarding",
        ] {
            assert!(bad.parse::<SysctlKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_keys_file_is_one_entry_below_its_directory() {
        let key = SysctlKey::knob(
            Family::V6,
            ConfEntry::link("eth0.100").unwrap(),
            Knob::NdiscNotify,
        );
        assert_eq!(
            key.location(),
            (Dir::Conf(Family::V6), "eth0.100/ndisc_notify".to_string())
        );
        assert!(key.is_link_key() && !key.takes_rtnl());
        assert_eq!(SysctlKey::IP_FORWARD.location().0, Dir::Ipv4);
        assert!(SysctlKey::IP_FORWARD.takes_rtnl());
        assert!(SysctlKey::knob(Family::V4, ConfEntry::All, Knob::Forwarding).takes_rtnl());
    }
}
