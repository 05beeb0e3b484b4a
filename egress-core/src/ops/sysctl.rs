//! Sysctls under `/proc/sys`, read and written inside the router namespace; the [`Sysctl`]
//! object (a link's `arp_notify` / `ndisc_notify`) and [`Forwarding`] (one family forwards,
//! on the router's links too).
//!
//! A write to `/proc/sys/net/...` applies to the namespace of the writing thread, so every access
//! runs on a thread that has entered the namespace ([`NsHandle::run`]).

use std::collections::BTreeMap;

use super::{link::LinkRef, Current, KernelObject, Step};
use crate::{
    drift::Drift,
    error::{Error, Result},
    netns::{NsHandle, PerProcess},
};

/// The dotted form of a key given in path form (`net/ipv4/conf/eth0.100/forwarding` →
/// `net.ipv4.conf.eth0/100.forwarding`), as `sysctl` prints it: path components are joined
/// with dots, and a dot inside a component (a link name such as `eth0.100`) becomes `/`.
pub(crate) fn dotted(path: &str) -> String {
    // `sysctl` writes a `.` inside a component (a link name such as eth0.100) as `/`.
    path.split('/')
        .map(|c| c.replace('.', "/"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Reads each key; `None` for a key that does not exist.
pub(crate) fn read_many(ns: &NsHandle, keys: &[String]) -> Result<Vec<Option<String>>> {
    let keys = keys.to_vec();
    ns.run(move || {
        keys.iter()
            .map(|k| {
                std::fs::read_to_string(format!("/proc/sys/{k}"))
                    .ok()
                    .map(|v| v.trim().to_string())
            })
            .collect()
    })
}

/// Writes each `(key, value)` in order, stopping at the first failure; returns how many were
/// written and the failure.
pub(crate) fn write_many(
    ns: &NsHandle,
    writes: &[(String, String)],
) -> Result<(usize, Option<Error>)> {
    let writes = writes.to_vec();
    ns.run(move || {
        for (i, (k, v)) in writes.iter().enumerate() {
            if let Err(e) = std::fs::write(format!("/proc/sys/{k}"), v) {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                return (
                    i,
                    Some(Error::kernel(format!("sysctl -w {}={v}", dotted(k)), errno)),
                );
            }
        }
        (writes.len(), None)
    })
}

/// Link deletions of this process take this gate shared; writes of `forwarding` take it
/// exclusively.
///
/// The kernel changes `forwarding` only when it gets the RTNL lock with a trylock; when the
/// lock is taken it restarts the write (`restart_syscall`) in a busy loop, and a trylock
/// keeps losing against the link deletions queued on the lock, each of which holds it while
/// it waits for RCU grace periods. With 16 routers torn down side by side, a write took 73 ms
/// at the median and 256 ms at p90 (300 routers: 3.2 s); with the gate the write itself takes
/// 0.1 ms, and more teardowns can run side by side, sharing grace periods, instead of
/// spinning (300 routers, 128 at a time: 0.6 s; without the gate more at a time is slower).
/// The gate orders this process's own calls only: another process deleting links still makes
/// the kernel retry the write, as before. Per process: a child of `fork` does not inherit a
/// gate held by one of its parent's threads.
pub(crate) static RTNL_GATE: PerProcess<tokio::sync::RwLock<()>> = PerProcess::new();

/// Whether writing `key` takes the RTNL lock with a trylock (see [`RTNL_GATE`]).
pub(crate) fn takes_rtnl(key: &str) -> bool {
    key == "net/ipv4/ip_forward" || key.ends_with("/forwarding")
}

/// [`write_many`], holding [`RTNL_GATE`] exclusively when a key needs it.
pub(crate) async fn write_gated(
    ns: &NsHandle,
    writes: &[(String, String)],
) -> Result<(usize, Option<Error>)> {
    let _writing = match writes.iter().any(|(k, _)| takes_rtnl(k)) {
        true => Some(RTNL_GATE.get().write().await),
        false => None,
    };
    write_many(ns, writes)
}

/// Reads, in one trip into the namespace, `net/<family>/conf/{all,default}/forwarding` of each
/// family and, for IPv4, `net/ipv4/conf/all/accept_redirects` (writing `forwarding` changes
/// it). Each link's own values come with the link dump instead ([`LinkConf`]), which spares
/// a file per link and family. Missing keys are left out.
///
/// [`LinkConf`]: crate::ops::link::LinkConf
pub(crate) fn read_forwarding(
    ns: &NsHandle,
    families: &[&'static str],
) -> Result<BTreeMap<String, String>> {
    let mut keys = Vec::new();
    for family in families {
        keys.push(format!("net/{family}/conf/all/forwarding"));
        keys.push(format!("net/{family}/conf/default/forwarding"));
        if *family == "ipv4" {
            keys.push(format!("net/{family}/conf/all/accept_redirects"));
        }
    }
    let values = read_many(ns, &keys)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k, v?)))
        .collect())
}

/// The writes that restore a family's forwarding after the router turned it on, or `None` when
/// it is on already (nothing to change), from the values [`read_forwarding`] and the link dump
/// read.
///
/// Writing `all.forwarding` (or `ip_forward`) resets `default` and every link's `forwarding`
/// (and, for IPv4, sets `all.accept_redirects` to the opposite): restoring means writing `all`
/// back first, then every entry whose value differed.
pub(crate) fn forwarding_restore(
    values: &BTreeMap<String, String>,
    family: &str,
) -> Option<Vec<(String, String)>> {
    let prefix = format!("net/{family}/conf/");
    let all = format!("{prefix}all/forwarding");
    let old_all = values.get(&all).cloned().unwrap_or_else(|| "0".into());
    if old_all == "1" {
        return None;
    }
    let mut writes = vec![(all.clone(), old_all.clone())];
    for (k, v) in values.range(prefix.clone()..) {
        if !k.starts_with(&prefix) {
            break;
        }
        if k.ends_with("/forwarding") && *k != all && *v != old_all {
            writes.push((k.clone(), v.clone()));
        }
    }
    if family == "ipv4" {
        let redirects = format!("{prefix}all/accept_redirects");
        let after = if old_all == "0" { "1" } else { "0" };
        if let Some(v) = values.get(&redirects).filter(|v| *v != after) {
            writes.push((redirects, v.clone()));
        }
    }
    Some(writes)
}

/// The key that turns a family's forwarding on: `ip_forward` for IPv4 (the same value as
/// `conf/all/forwarding`), `conf/all/forwarding` for IPv6.
pub(crate) fn forwarding_key(ipv6: bool) -> &'static str {
    if ipv6 {
        "net/ipv6/conf/all/forwarding"
    } else {
        "net/ipv4/ip_forward"
    }
}

/// `sysctl -w net.ipv4.ip_forward=1` (or IPv6's).
pub(crate) fn forwarding_command(ipv6: bool) -> &'static str {
    if ipv6 {
        "sysctl -w net.ipv6.conf.all.forwarding=1"
    } else {
        "sysctl -w net.ipv4.ip_forward=1"
    }
}

/// A sysctl of one of the router's links, with the value it must hold.
#[derive(Debug, Clone)]
pub(crate) struct Sysctl {
    /// The link.
    pub link: LinkRef,
    /// The key in path form.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KernelObject for Sysctl {
    fn render(&self) -> String {
        format!("sysctl -w {}={}", dotted(&self.key), self.value)
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // A missing link is the link's drift.
        if self.link.find(now).is_none() {
            return;
        }
        let actual = now.sysctl(&self.key).unwrap_or("(missing)");
        if actual != self.value {
            drift.push(Drift::SysctlChanged {
                key: dotted(&self.key),
                expected: self.value.clone(),
                actual: actual.to_string(),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let right = self.link.find(now).is_some() && now.sysctl(&self.key) == Some(&self.value);
        if !right {
            steps.push(Step::SetSysctl {
                key: self.key.clone(),
                value: self.value.clone(),
            });
        }
        Ok(())
    }
}

/// One family forwards: `all` on and, for IPv4 (where the link a packet arrives on decides),
/// the router's links too.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// The links that must forward (IPv4 only: the internal and the external link).
    pub links: Vec<LinkRef>,
}

impl Forwarding {
    fn family(&self) -> &'static str {
        if self.ipv6 {
            "ipv6"
        } else {
            "ipv4"
        }
    }

    /// `(key as reported, value)` of `all`.
    fn all(&self, now: &Current) -> (String, String) {
        let value = now
            .sysctl(&format!("net/{}/conf/all/forwarding", self.family()))
            .unwrap_or("(missing)");
        (dotted(forwarding_key(self.ipv6)), value.to_string())
    }

    /// The keys of present links whose forwarding is off.
    fn links_off(&self, now: &Current) -> Vec<String> {
        self.links
            .iter()
            .filter_map(|l| l.find(now))
            .map(|l| format!("net/{}/conf/{}/forwarding", self.family(), l.name))
            .filter(|k| now.sysctl(k).is_some_and(|v| v != "1"))
            .collect()
    }
}

impl KernelObject for Forwarding {
    fn render(&self) -> String {
        forwarding_command(self.ipv6).to_string()
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let (key, actual) = self.all(now);
        if actual != "1" {
            drift.push(Drift::SysctlChanged {
                key,
                expected: "1".into(),
                actual,
            });
            return;
        }
        for k in self.links_off(now) {
            drift.push(Drift::SysctlChanged {
                key: dotted(&k),
                expected: "1".into(),
                actual: now.sysctl(&k).unwrap_or_default().to_string(),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        // Turning `all` on turns every link's on as well.
        if self.all(now).1 != "1" {
            steps.push(Step::EnableForwarding { ipv6: self.ipv6 });
            return Ok(());
        }
        for key in self.links_off(now) {
            steps.push(Step::SetSysctl {
                key,
                value: "1".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_keys_are_gated() {
        assert!(takes_rtnl("net/ipv4/ip_forward"));
        assert!(takes_rtnl("net/ipv4/conf/all/forwarding"));
        assert!(takes_rtnl("net/ipv6/conf/eth0.100/forwarding"));
        assert!(!takes_rtnl("net/ipv4/conf/macvlan0/arp_notify"));
        assert!(!takes_rtnl("net/ipv6/conf/macvlan0/keep_addr_on_down"));
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forwarding_already_on_needs_no_restore() {
        let v = values(&[("net/ipv4/conf/all/forwarding", "1")]);
        assert_eq!(forwarding_restore(&v, "ipv4"), None);
    }

    #[test]
    fn forwarding_restore_writes_all_first_then_what_differed() {
        let v = values(&[
            ("net/ipv4/conf/all/forwarding", "0"),
            ("net/ipv4/conf/all/accept_redirects", "0"),
            ("net/ipv4/conf/default/forwarding", "0"),
            ("net/ipv4/conf/eth0/forwarding", "1"),
            ("net/ipv4/conf/lo/forwarding", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
        ]);
        assert_eq!(
            forwarding_restore(&v, "ipv4").unwrap(),
            vec![
                ("net/ipv4/conf/all/forwarding".into(), "0".into()),
                ("net/ipv4/conf/eth0/forwarding".into(), "1".into()),
                // Writing forwarding=0 sets accept_redirects=1; it was 0.
                ("net/ipv4/conf/all/accept_redirects".into(), "0".into()),
            ]
        );
        assert_eq!(
            forwarding_restore(&v, "ipv6").unwrap(),
            vec![("net/ipv6/conf/all/forwarding".into(), "0".into())]
        );
    }

    #[test]
    fn dotted_form_escapes_dots_in_link_names() {
        assert_eq!(dotted("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            dotted("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
    }
}
