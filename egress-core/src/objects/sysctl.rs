//! The sysctl objects of a router: [`Sysctl`] (a link's `arp_notify` / `ndisc_notify`) and
//! [`Forwarding`] (one family forwards, on the router's links too); what writing `forwarding`
//! changes besides, and how it is put back.

use std::collections::BTreeMap;

use super::{link::LinkRef, Current, KernelObject, Step};
use crate::{
    drift::Drift,
    error::Result,
    kernel::{
        netns::NsHandle,
        procfs::{read_many, ConfEntry, ConfName, Family, Knob, SysctlKey},
    },
};

/// Reads, in one trip into the namespace, `net/<family>/conf/{all,default}/forwarding` of each
/// family and, for IPv4, `net/ipv4/conf/all/accept_redirects` (writing `forwarding` changes
/// it). Each link's own values come with the link dump instead ([`LinkConf`]), which spares
/// a file per link and family. Missing keys are left out.
///
/// [`LinkConf`]: crate::objects::link::LinkConf
pub(crate) fn read_forwarding(
    ns: &NsHandle,
    families: &[Family],
) -> Result<BTreeMap<SysctlKey, i64>> {
    let mut keys = Vec::new();
    for family in families {
        keys.push(SysctlKey::knob(*family, ConfEntry::All, Knob::Forwarding));
        keys.push(SysctlKey::knob(
            *family,
            ConfEntry::Default,
            Knob::Forwarding,
        ));
        if *family == Family::V4 {
            keys.push(SysctlKey::knob(
                *family,
                ConfEntry::All,
                Knob::AcceptRedirects,
            ));
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
    values: &BTreeMap<SysctlKey, i64>,
    family: Family,
) -> Option<Vec<(SysctlKey, i64)>> {
    let all = SysctlKey::knob(family, ConfEntry::All, Knob::Forwarding);
    let old_all = values.get(&all).copied().unwrap_or(0);
    if old_all == 1 {
        return None;
    }
    let mut writes = vec![(all.clone(), old_all)];
    for (k, v) in values {
        let forwarding = matches!(
            k.conf_parts(),
            Some((f, entry, ConfName::Knob(Knob::Forwarding))) if f == family && *entry != ConfEntry::All
        );
        if forwarding && *v != old_all {
            writes.push((k.clone(), *v));
        }
    }
    if family == Family::V4 {
        let redirects = SysctlKey::knob(family, ConfEntry::All, Knob::AcceptRedirects);
        let after = if old_all == 0 { 1 } else { 0 };
        if let Some(v) = values.get(&redirects).filter(|v| **v != after) {
            writes.push((redirects, *v));
        }
    }
    Some(writes)
}

/// The key that turns a family's forwarding on: `ip_forward` for IPv4 (the same value as
/// `conf/all/forwarding`), `conf/all/forwarding` for IPv6.
pub(crate) fn forwarding_key(ipv6: bool) -> SysctlKey {
    match ipv6 {
        true => SysctlKey::knob(Family::V6, ConfEntry::All, Knob::Forwarding),
        false => SysctlKey::IP_FORWARD,
    }
}

/// `sysctl -w net.ipv4.ip_forward=1` (or IPv6's).
pub(crate) fn forwarding_command(ipv6: bool) -> String {
    format!("sysctl -w {}=1", forwarding_key(ipv6))
}

/// The external link's own sysctls a router turns on: `arp_notify` when it uses IPv4,
/// `ndisc_notify` when it uses IPv6 (`families`), so that the kernel announces its addresses.
/// None for a name that is not a link name (a spec's names are).
pub(crate) fn announcing(link: &str, families: (bool, bool)) -> Vec<SysctlKey> {
    let Some(entry) = ConfEntry::link(link) else {
        return Vec::new();
    };
    [
        (families.0, Family::V4, Knob::ArpNotify),
        (families.1, Family::V6, Knob::NdiscNotify),
    ]
    .into_iter()
    .filter(|(used, ..)| *used)
    .map(|(_, family, knob)| SysctlKey::knob(family, entry.clone(), knob))
    .collect()
}

/// A sysctl of one of the router's links, with the value it must hold.
#[derive(Debug, Clone)]
pub(crate) struct Sysctl {
    /// The link.
    pub link: LinkRef,
    /// The key.
    pub key: SysctlKey,
    /// The value.
    pub value: i64,
}

impl KernelObject for Sysctl {
    fn render(&self) -> String {
        format!("sysctl -w {}={}", self.key, self.value)
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // A missing link is the link's drift.
        if self.link.find(now).is_none() {
            return;
        }
        let actual = now.sysctl(&self.key);
        if actual != Some(self.value) {
            drift.push(Drift::SysctlChanged {
                key: self.key.to_string(),
                expected: self.value.to_string(),
                actual: shown(actual),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let right = self.link.find(now).is_some() && now.sysctl(&self.key) == Some(self.value);
        if !right {
            steps.push(Step::SetSysctl {
                key: self.key.clone(),
                value: self.value,
            });
        }
        Ok(())
    }
}

/// A value as drift shows it: `(missing)` when the key was not there.
fn shown(value: Option<i64>) -> String {
    value.map_or_else(|| "(missing)".to_string(), |v| v.to_string())
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
    fn family(&self) -> Family {
        Family::of(self.ipv6)
    }

    /// The value of `all`, as read.
    fn all(&self, now: &Current) -> Option<i64> {
        now.sysctl(&SysctlKey::knob(
            self.family(),
            ConfEntry::All,
            Knob::Forwarding,
        ))
    }

    /// The keys of present links whose forwarding is off, with their values.
    fn links_off(&self, now: &Current) -> Vec<(SysctlKey, i64)> {
        self.links
            .iter()
            .filter_map(|l| l.find(now))
            .filter_map(|l| ConfEntry::link(&l.name))
            .map(|entry| SysctlKey::knob(self.family(), entry, Knob::Forwarding))
            .filter_map(|k| now.sysctl(&k).filter(|v| *v != 1).map(|v| (k, v)))
            .collect()
    }
}

impl KernelObject for Forwarding {
    fn render(&self) -> String {
        forwarding_command(self.ipv6)
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let all = self.all(now);
        if all != Some(1) {
            drift.push(Drift::SysctlChanged {
                key: forwarding_key(self.ipv6).to_string(),
                expected: "1".into(),
                actual: shown(all),
            });
            return;
        }
        for (k, v) in self.links_off(now) {
            drift.push(Drift::SysctlChanged {
                key: k.to_string(),
                expected: "1".into(),
                actual: v.to_string(),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        // Turning `all` on turns every link's on as well.
        if self.all(now) != Some(1) {
            steps.push(Step::EnableForwarding { ipv6: self.ipv6 });
            return Ok(());
        }
        for (key, _) in self.links_off(now) {
            steps.push(Step::SetSysctl { key, value: 1 });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, i64)]) -> BTreeMap<SysctlKey, i64> {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), *v))
            .collect()
    }

    fn writes(pairs: &[(&str, i64)]) -> Vec<(SysctlKey, i64)> {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), *v))
            .collect()
    }

    #[test]
    fn forwarding_already_on_needs_no_restore() {
        let v = values(&[("net/ipv4/conf/all/forwarding", 1)]);
        assert_eq!(forwarding_restore(&v, Family::V4), None);
    }

    #[test]
    fn forwarding_restore_writes_all_first_then_what_differed() {
        let v = values(&[
            ("net/ipv4/conf/all/forwarding", 0),
            ("net/ipv4/conf/all/accept_redirects", 0),
            ("net/ipv4/conf/default/forwarding", 0),
            ("net/ipv4/conf/eth0/forwarding", 1),
            ("net/ipv4/conf/lo/forwarding", 0),
            ("net/ipv6/conf/all/forwarding", 0),
        ]);
        assert_eq!(
            forwarding_restore(&v, Family::V4).unwrap(),
            writes(&[
                ("net/ipv4/conf/all/forwarding", 0),
                ("net/ipv4/conf/eth0/forwarding", 1),
                // Writing forwarding=0 sets accept_redirects=1; it was 0.
                ("net/ipv4/conf/all/accept_redirects", 0),
            ])
        );
        assert_eq!(
            forwarding_restore(&v, Family::V6).unwrap(),
            writes(&[("net/ipv6/conf/all/forwarding", 0)])
        );
    }

    #[test]
    fn forwarding_keys_are_the_ones_sysctl_names() {
        assert_eq!(forwarding_command(false), "sysctl -w net.ipv4.ip_forward=1");
        assert_eq!(
            forwarding_command(true),
            "sysctl -w net.ipv6.conf.all.forwarding=1"
        );
    }
}
