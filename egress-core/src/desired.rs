//! [`Desired`]: what a router *is* — every kernel object it consists of — computed from a
//! [`RouterSpec`] without touching the kernel. Everything else is derived from it: the plan
//! (the steps that take a namespace there), `check` (how a namespace differs), `ensure` (the
//! plan, run), the verification after an apply, and the standby and active roles.

use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;

use crate::{
    drift::Drift,
    error::Result,
    ops::{
        addr::{Address, OnlyOurAddresses},
        link::{group_marker, ExternalLink, LinkRef},
        nat::{NatRules, Ruleset},
        record::{Journal, RecordSpec, Stores},
        route::{DefaultRoute, OurRoute},
        sysctl::{Forwarding, Sysctl},
        Current, KernelObject, Step,
    },
    plan::Plan,
    spec::{External, RouterSpec},
};

/// The desired state of a router: its kernel objects, in the order an apply creates them.
///
/// `Display` lists them, one `ip` / `nft` / `sysctl` line each.
///
/// ```
/// # use egress_core::{MacvlanMode, RouterSpec};
/// let spec = RouterSpec::builder("egress-1")
///     .macvlan("eth1", MacvlanMode::Private)
///     .source("203.0.113.99/24")
///     .gateway("203.0.113.1")
///     .build()?;
/// let desired = spec.desired();
/// assert!(desired.to_string().contains("ip addr add 203.0.113.99/24 dev macvlan0 proto 158"));
/// # Ok::<(), egress_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Desired {
    name: String,
    /// The external link, which tells whether anything of the router is left.
    link: LinkRef,
    objects: Vec<Box<dyn KernelObject>>,
    announce: Announce,
}

/// The announcements that follow a change claiming the egress identity.
#[derive(Debug)]
struct Announce {
    link: String,
    addresses: Vec<IpAddr>,
    count: u8,
}

impl Desired {
    /// The desired state of the router `spec` describes.
    pub(crate) fn new(spec: &RouterSpec) -> Desired {
        let (ext, macvlan) = external(spec);
        let internal = LinkRef::named(spec.internal());
        let (v4, v6) = (spec.gateway4().is_some(), spec.gateway6().is_some());
        let record = Self::record_spec(spec);
        let link_sysctls = record.link_sysctls.clone();
        let gateways: Vec<IpAddr> = spec
            .gateway4()
            .map(IpAddr::from)
            .into_iter()
            .chain(spec.gateway6().map(IpAddr::from))
            .collect();

        let mut objects: Vec<Box<dyn KernelObject>> = Vec::new();
        objects.push(Box::new(Journal {
            spec: record.clone(),
        }));
        objects.push(Box::new(Ruleset {
            rules: nat_rules(spec),
            record,
        }));
        objects.push(Box::new(ExternalLink {
            link: ext.clone(),
            macvlan,
            netns: spec.netns().to_string(),
        }));
        for key in link_sysctls {
            objects.push(Box::new(Sysctl {
                link: ext.clone(),
                key,
                value: "1".into(),
            }));
        }
        // Foreign addresses go first: deleting a primary IPv4 address takes the secondaries of
        // its subnet with it.
        if ext.created() {
            objects.push(Box::new(OnlyOurAddresses {
                link: ext.clone(),
                ours: spec.sources().to_vec(),
            }));
        }
        for s in spec.sources() {
            objects.push(Box::new(Address {
                link: ext.clone(),
                net: *s,
            }));
        }
        for g in &gateways {
            objects.push(Box::new(OurRoute {
                dst: IpNetwork::from(*g),
                via: None,
                link: ext.clone(),
            }));
        }
        for g in &gateways {
            objects.push(Box::new(DefaultRoute {
                via: *g,
                link: ext.clone(),
            }));
        }
        for k in spec.kept_routes() {
            objects.push(Box::new(OurRoute {
                dst: k.to,
                via: k.via,
                link: internal.clone(),
            }));
        }
        for (used, ipv6) in [(v4, false), (v6, true)] {
            if used {
                objects.push(Box::new(Forwarding {
                    ipv6,
                    links: match ipv6 {
                        false => vec![internal.clone(), ext.clone()],
                        true => Vec::new(),
                    },
                }));
            }
        }
        Desired {
            name: spec.name().to_string(),
            announce: Announce {
                link: ext.name.clone(),
                addresses: spec.sources().iter().map(IpNetwork::ip).collect(),
                count: spec.announce(),
            },
            link: ext,
            objects,
        }
    }

    /// What the crash record of `spec`'s router is made of.
    pub(crate) fn record_spec(spec: &RouterSpec) -> RecordSpec {
        let (link, _) = external(spec);
        let (v4, v6) = (spec.gateway4().is_some(), spec.gateway6().is_some());
        let link_sysctls = [
            (v4, format!("net/ipv4/conf/{}/arp_notify", link.name)),
            (v6, format!("net/ipv6/conf/{}/ndisc_notify", link.name)),
        ]
        .into_iter()
        .filter_map(|(used, key)| used.then_some(key))
        .collect();
        RecordSpec {
            router: spec.name().to_string(),
            link,
            families: (v4, v6),
            link_sysctls,
        }
    }

    /// Whether anything of the router is in `now`: its table, its crash record, or the link it
    /// created (with its marker).
    pub(crate) fn exists_in(&self, now: &Current) -> bool {
        let stores = Stores::of(now, &self.name);
        now.has_table(&crate::spec::table_name(&self.name))
            || stores.notes.is_some()
            || (self.link.created() && self.link.find(now).is_some())
    }

    /// How `now` differs from this state; empty when it holds it exactly.
    pub(crate) fn compare(&self, now: &Current) -> Vec<Drift> {
        if !self.exists_in(now) {
            return vec![Drift::RouterMissing {
                table: crate::spec::table_name(&self.name),
            }];
        }
        let mut drift = Vec::new();
        for o in &self.objects {
            o.compare(now, &mut drift);
        }
        drift
    }

    /// The steps that take `now` to this state, in order; empty when it is there.
    pub(crate) fn plan(&self, now: &Current) -> Result<Plan> {
        let mut steps = Vec::new();
        for o in &self.objects {
            o.repair(now, &mut steps)?;
        }
        let a = &self.announce;
        if a.count > 0 && steps.iter().any(Step::claims_identity) {
            steps.push(Step::Announce {
                link: a.link.clone(),
                addresses: a.addresses.clone(),
                count: a.count,
            });
        }
        Ok(Plan::new(steps))
    }
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.objects {
            writeln!(f, "{}", o.render())?;
        }
        Ok(())
    }
}

/// The external link of `spec`: how to find it, and the macvlan to create, if any.
fn external(spec: &RouterSpec) -> (LinkRef, Option<crate::spec::Macvlan>) {
    match spec.external() {
        External::Macvlan(m) => (
            LinkRef {
                name: m.name().to_string(),
                marker: Some(group_marker(spec.name())),
            },
            Some(m.clone()),
        ),
        External::Adopt(name) => (LinkRef::named(name), None),
    }
}

/// The NAT ruleset of a spec.
pub(crate) fn nat_rules(spec: &RouterSpec) -> NatRules {
    NatRules {
        table: spec.table_name(),
        internal: spec.internal().to_string(),
        external: spec.external().link_name().to_string(),
        snat4: spec.snat4(),
        snat6: spec.snat6(),
        redirects: spec.redirects().to_vec(),
        local_ports: spec.local_ports().to_vec(),
        fallback4: spec.fallback4(),
        fallback6: spec.fallback6(),
    }
}

impl RouterSpec {
    /// The router's desired state: every kernel object it consists of, computed without the
    /// kernel.
    pub fn desired(&self) -> Desired {
        Desired::new(self)
    }
}
