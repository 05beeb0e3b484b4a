//! [`Knob`]: the keys of a conf entry (`net/ipv{4,6}/conf/<entry>/`) that a router changes and
//! its crash record restores, as one table. Each row says everything egress knows about one
//! knob: its file's name, its key in a crash record, the families it exists in and how the link
//! dump reports a link's value in each (`IFLA_AF_SPEC`'s devconf), the value a new link starts
//! with, and the values a crash record keeps. The enum, the key grammar ([`SysctlKey`]'s
//! `FromStr`), the crash record's grammar and a link's values (`LinkConf`) all come from it:
//! a knob is added by adding its row, and nothing else lists knobs.
//!
//! [`SysctlKey`]: super::SysctlKey

use std::ops::RangeInclusive;

use netlink_packet_route::link::{Inet6DevConf, InetDevConf};

use super::key::Family;

/// Everything about one knob.
pub(crate) struct Row {
    /// The file's name under `net/ipv{4,6}/conf/<entry>/`.
    pub file: &'static str,
    /// Its key in a crash record's restore entry (short: a record fits in 253 bytes).
    pub record: &'static str,
    /// A link's IPv4 value, from the link dump's `IFLA_INET_CONF`; `None`: no IPv4 knob.
    pub ipv4: Option<fn(&InetDevConf) -> i32>,
    /// A link's IPv6 value, from the link dump's `IFLA_INET6_CONF`; `None`: no IPv6 knob.
    pub ipv6: Option<fn(&Inet6DevConf) -> i32>,
    /// The value of a new link, as the kernel sets it (what the dry run assumes).
    pub new_link: i64,
    /// The values a crash record keeps: what egress may replace and restore.
    pub values: RangeInclusive<u8>,
}

/// The table: `Variant: Row { … };` once per knob gives the enum [`Knob`], [`Knob::ALL`] in
/// the table's order, and [`Knob::row`].
macro_rules! knobs {
    ($($(#[doc = $doc:literal])* $knob:ident: $row:expr;)+) => {
        /// A key of a conf entry that a router changes, and that its crash record restores.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) enum Knob {
            $($(#[doc = $doc])* $knob,)+
        }

        impl Knob {
            /// Every knob, in the table's order.
            pub(crate) const ALL: &'static [Knob] = &[$(Knob::$knob),+];

            /// Everything about the knob.
            pub(crate) fn row(self) -> &'static Row {
                match self {
                    $(Knob::$knob => {
                        static ROW: Row = $row;
                        &ROW
                    })+
                }
            }
        }
    };
}

knobs! {
    /// `forwarding` (IPv4's `all` is written through `ip_forward`).
    Forwarding: Row {
        file: "forwarding",
        record: "f",
        ipv4: Some(|c| c.forwarding),
        ipv6: Some(|c| c.forwarding),
        new_link: 0,
        values: 0..=1,
    };
    /// `accept_redirects` (IPv4's `all`: writing `forwarding` sets it to the opposite).
    AcceptRedirects: Row {
        file: "accept_redirects",
        record: "ar",
        ipv4: Some(|c| c.accept_redirects),
        ipv6: Some(|c| c.accept_redirects),
        new_link: 1,
        values: 0..=1,
    };
    /// `arp_notify`: the kernel sends a gratuitous ARP for each address when the link comes
    /// up or changes its MAC.
    ArpNotify: Row {
        file: "arp_notify",
        record: "an",
        ipv4: Some(|c| c.arp_notify),
        ipv6: None,
        new_link: 0,
        values: 0..=1,
    };
    /// `ndisc_notify`: the kernel sends an unsolicited neighbour advertisement for each
    /// address when the link comes up or changes its MAC.
    NdiscNotify: Row {
        file: "ndisc_notify",
        record: "nn",
        ipv4: None,
        ipv6: Some(|c| c.ndisc_notify),
        new_link: 0,
        values: 0..=1,
    };
    /// `accept_ra`: whether the link takes router advertisements (1: unless it forwards, 2:
    /// even then) — a SLAAC address and a default route from whoever sends one.
    AcceptRa: Row {
        file: "accept_ra",
        record: "ra",
        ipv4: None,
        ipv6: Some(|c| c.accept_ra),
        new_link: 1,
        values: 0..=2,
    };
}

impl Knob {
    /// The file's name.
    pub(crate) fn as_str(self) -> &'static str {
        self.row().file
    }

    /// Whether the knob exists in `family`.
    pub(crate) fn exists_in(self, family: Family) -> bool {
        match family {
            Family::V4 => self.row().ipv4.is_some(),
            Family::V6 => self.row().ipv6.is_some(),
        }
    }

    /// The knob whose file is `name`.
    pub(crate) fn named(name: &str) -> Option<Knob> {
        Knob::ALL.iter().copied().find(|k| k.row().file == name)
    }

    /// The knob whose key in a crash record is `short`.
    pub(crate) fn recorded_as(short: &str) -> Option<Knob> {
        Knob::ALL.iter().copied().find(|k| k.row().record == short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_knob_has_its_own_names_and_a_family() {
        for (i, a) in Knob::ALL.iter().enumerate() {
            assert!(a.exists_in(Family::V4) || a.exists_in(Family::V6), "{a:?}");
            assert!(a.row().values.contains(&0), "{a:?}");
            for b in &Knob::ALL[i + 1..] {
                assert_ne!(a.row().file, b.row().file);
                assert_ne!(a.row().record, b.row().record);
            }
            assert_eq!(Knob::named(a.as_str()), Some(*a));
            assert_eq!(Knob::recorded_as(a.row().record), Some(*a));
            // A record key is a token of the record: no separator of its grammar inside.
            assert!(a.row().record.bytes().all(|b| b.is_ascii_lowercase()));
        }
        let mut conf = Inet6DevConf::default();
        conf.ndisc_notify = 1;
        assert_eq!(Knob::NdiscNotify.row().ipv6.map(|get| get(&conf)), Some(1));
    }
}
