//! The sysctl objects of a router: [`Sysctl`] (one of a link's own, such as `arp_notify`) and
//! [`Forwarding`] (one family forwards, on the router's links too); what writing `forwarding`
//! changes besides, and how it is put back.

use std::collections::BTreeMap;

use super::{
    change::{boxed, At, Change, Done, Kernel, Phase, Sent},
    link::LinkRef,
    Current, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::Result,
    kernel::{
        netns::NsHandle,
        procfs::{self, read_many, ConfEntry, ConfName, Family, Knob, SysctlKey},
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

impl Sysctl {
    /// Whether the namespace has the key's family at all, as a whole read shows it (its
    /// `all/forwarding`): a kernel booted with `ipv6.disable=1` has no `net/ipv6`, so no
    /// `accept_ra` to set, and no IPv6 for it to guard.
    fn family_exists(&self, now: &Current) -> bool {
        let Some((family, ..)) = self.key.conf_parts() else {
            return true;
        };
        now.sysctl(&SysctlKey::knob(family, ConfEntry::All, Knob::Forwarding))
            .is_some()
    }
}

impl KernelObject for Sysctl {
    fn render(&self) -> String {
        format!("sysctl -w {}={}", self.key, self.value)
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // A missing link is the link's drift.
        if self.link.find(now).is_none() || !self.family_exists(now) {
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
        if !right && self.family_exists(now) {
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

/// `sysctl -w KEY=VALUE`; undone by writing back the value it had — none for a key of a link
/// the router created (it goes with the link).
#[derive(Debug)]
pub(crate) struct WriteSysctl {
    pub key: SysctlKey,
    pub value: i64,
    /// The value it had, when the key existed.
    pub old: Option<i64>,
}

impl Change for WriteSysctl {
    fn describe(&self) -> String {
        format!("sysctl -w {}={}", self.key, self.value)
    }

    fn remains(&self) -> String {
        format!("sysctl {} not set to {}", self.key, self.value)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let writes = [(self.key.clone(), self.value)];
            match procfs::write_gated(&k.c.ns, &writes).await? {
                (_, Some(e)) => Err(e),
                _ => Ok(Done::Nothing),
            }
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        let old = self.old?;
        Some(boxed(RestoreSysctls {
            writes: vec![(self.key.clone(), old)],
        }))
    }
}

/// `sysctl -w net.ipv4.ip_forward=1` (or IPv6's `conf/all/forwarding`); undone by the writes
/// that restore every value writing it changed.
#[derive(Debug)]
pub(crate) struct EnableForwarding {
    pub ipv6: bool,
    /// What restores the values before ([`forwarding_restore`]).
    pub restore: Vec<(SysctlKey, i64)>,
}

impl Change for EnableForwarding {
    fn describe(&self) -> String {
        forwarding_command(self.ipv6)
    }

    fn remains(&self) -> String {
        format!("{} not on", forwarding_key(self.ipv6))
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let writes = [(forwarding_key(self.ipv6), 1)];
            match procfs::write_gated(&k.c.ns, &writes).await? {
                (_, Some(e)) => Err(e),
                _ => Ok(Done::Nothing),
            }
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(RestoreSysctls {
            writes: self.restore.clone(),
        }))
    }
}

/// `sysctl -w KEY=VALUE …`: values the router replaced, written back in order. A link that is
/// gone took its own keys with it. Restoring forwarding runs first in an unwind: the router
/// stops forwarding before anything else goes.
#[derive(Debug)]
pub(crate) struct RestoreSysctls {
    pub writes: Vec<(SysctlKey, i64)>,
}

impl Change for RestoreSysctls {
    fn describe(&self) -> String {
        format!("sysctl -w {}", self.listed(" "))
    }

    fn remains(&self) -> String {
        format!("sysctls not restored: {}", self.listed(", "))
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let mut pending = self.writes.as_slice();
            loop {
                let (done, failed) = procfs::write_gated(&k.c.ns, pending).await?;
                match failed {
                    None => return Ok(Done::Nothing),
                    // A link that is gone took its sysctls with it.
                    Some(e) if e.errno() == Some(libc::ENOENT) && pending[done].0.is_link_key() => {
                        pending = &pending[done + 1..];
                    }
                    Some(e) => return Err(e),
                }
            }
        })
    }

    fn phase(&self) -> Phase {
        match self.writes.iter().any(|(k, _)| k.takes_rtnl()) {
            true => Phase::First,
            false => Phase::Rest,
        }
    }
}

impl RestoreSysctls {
    fn listed(&self, sep: &str) -> String {
        self.writes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(sep)
    }
}

impl Step {
    /// `sysctl -w KEY=VALUE`, when the key does not hold the value already.
    pub(crate) fn set_sysctl_changes(
        at: &At<'_>,
        key: &SysctlKey,
        value: i64,
    ) -> Vec<Box<dyn Change>> {
        let old = at.now.sysctl(key);
        match old == Some(value) {
            true => Vec::new(),
            false => vec![boxed(WriteSysctl {
                key: key.clone(),
                value,
                old,
            })],
        }
    }

    /// Forwarding turned on, when it is off.
    pub(crate) fn enable_forwarding_changes(at: &At<'_>, ipv6: bool) -> Vec<Box<dyn Change>> {
        match forwarding_restore(&at.now.sysctls, Family::of(ipv6)) {
            Some(restore) => vec![boxed(EnableForwarding { ipv6, restore })],
            None => Vec::new(),
        }
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

    /// Without IPv6 in the kernel (`ipv6.disable=1`: no `net/ipv6` at all), an IPv6 key of the
    /// link is neither drift nor a step; with it, a wrong value is both.
    #[test]
    fn a_key_of_a_family_the_kernel_lacks_is_nothing_to_set() {
        let accept_ra = Sysctl {
            link: LinkRef::named("eth1"),
            key: "net/ipv6/conf/eth1/accept_ra".parse().unwrap(),
            value: 0,
        };
        let now = |ipv6: bool| Current {
            links: vec![crate::objects::link::Link {
                index: 2,
                name: "eth1".into(),
                mtu: 1500,
                up: true,
                kind: None,
                macvlan_mode: None,
                mac: vec![2, 0, 0, 0, 0, 2],
                group: 0,
                conf: Default::default(),
            }],
            sysctls: match ipv6 {
                true => values(&[
                    ("net/ipv6/conf/all/forwarding", 0),
                    ("net/ipv6/conf/eth1/accept_ra", 1),
                ]),
                false => values(&[("net/ipv4/conf/all/forwarding", 0)]),
            },
            ..Current::default()
        };
        let (mut drift, mut steps) = (Vec::new(), Vec::new());
        accept_ra.compare(&now(false), &mut drift);
        accept_ra.repair(&now(false), &mut steps).unwrap();
        assert!(drift.is_empty() && steps.is_empty(), "{drift:?} {steps:?}");
        accept_ra.compare(&now(true), &mut drift);
        accept_ra.repair(&now(true), &mut steps).unwrap();
        assert_eq!(drift.len(), 1);
        assert!(matches!(&steps[..], [Step::SetSysctl { value: 0, .. }]));
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
