//! [`Desired`]: what a router *is* — every kernel object it consists of — computed from a
//! [`RouterSpec`] without touching the kernel, or read back from what the kernel proves to be
//! the router, in the same shape. Everything else is derived from it: the plan (the steps that
//! take a namespace there), `check` (how a namespace differs), `ensure` (the plan, run), the
//! verification after an apply, the standby and active roles; and, read back, teardown (its
//! inverse), inspect, promotion and diagnosis by name.

use std::fmt;

use ipnetwork::IpNetwork;

use super::{parts::Parts, plan::Plan};
use crate::{
    drift::Drift,
    error::Result,
    objects::{
        addr::{Address, OnlyOurAddresses},
        link::{ExternalLink, LinkRef},
        nat::Ruleset,
        record::{Journal, Record, Stores},
        role::{role_in, RoleMark, StableMac},
        route::{DefaultRoute, OurRoute},
        sysctl::{Forwarding, Sysctl},
        Current, Inverse, KernelObject, Step,
    },
    role::Role,
    spec::{table_name, Macvlan, RouterSpec},
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
///
/// The router's [`Role`] is a property of the model: the objects that claim the
/// egress identity (the egress addresses, the default routes via the gateways, the stable
/// MAC, the role marker) are built held for an active router and withdrawn for a standby;
/// a promotion or demotion is the plan of those objects alone.
#[derive(Debug)]
pub struct Desired {
    /// What its objects are built from.
    parts: Parts,
    role: Role,
    /// Each object, and whether it claims the egress identity.
    objects: Vec<(bool, Box<dyn KernelObject>)>,
}

impl Desired {
    /// The desired state of the router `spec` describes, active.
    pub(crate) fn new(spec: &RouterSpec) -> Desired {
        Desired::with_role(spec, Role::Active)
    }

    /// The desired state of the router `spec` describes, in role `role`.
    pub(crate) fn with_role(spec: &RouterSpec, role: Role) -> Desired {
        Desired::of(Parts::of(spec), role)
    }

    /// Router `name` as the kernel proves it, in the role its record holds: the read-back,
    /// in the same shape a spec gives (see [`Parts::read`]), with the proven crash record.
    /// `None` when no record proves anything the router's.
    pub(crate) fn read(now: &Current, name: &str) -> Option<(Desired, Record)> {
        let (parts, record) = Parts::read(now, name)?;
        Some((Desired::of(parts, role_in(now, name)), record))
    }

    /// The same router in role `role`.
    pub(crate) fn as_role(&self, role: Role) -> Desired {
        Desired::of(self.parts.clone(), role)
    }

    /// The router's objects, in the order an apply creates them: the one place that lists
    /// what a router is made of.
    pub(crate) fn of(parts: Parts, role: Role) -> Desired {
        let p = &parts;
        let ext = p.external.clone();
        let held = role == Role::Active;
        // While the stable MAC is held, it is the stable MAC object's, not the link's.
        let macvlan = match (held, p.stable_mac) {
            (true, Some(_)) => p.macvlan.clone().map(|m| Macvlan { mac: None, ..m }),
            _ => p.macvlan.clone(),
        };
        let mut objects = vec![
            staged(Journal {
                spec: p.record.clone(),
            }),
            staged(Ruleset {
                table: table_name(&p.name),
                rules: p.rules.clone(),
                record: p.record.clone(),
            }),
            staged(ExternalLink {
                link: ext.clone(),
                macvlan,
                netns: p.netns.clone(),
            }),
        ];
        objects.extend(p.record.link_sysctls.iter().map(|(key, value)| {
            staged(Sysctl {
                link: ext.clone(),
                key: key.clone(),
                value: *value,
            })
        }));
        // Foreign addresses go first: deleting a primary IPv4 address takes the secondaries of
        // its subnet with it.
        if ext.created() {
            objects.push(staged(OnlyOurAddresses {
                link: ext.clone(),
                ours: p.sources.clone(),
            }));
        }
        objects.extend(Desired::identity(p, role));
        objects.extend(p.routes.iter().map(|(dst, via, link)| {
            staged(OurRoute {
                dst: *dst,
                via: *via,
                link: LinkRef::named(link),
            })
        }));
        let internal = p.internal.as_deref().map(LinkRef::named);
        let (v4, v6) = p.families();
        for (used, ipv6) in [(v4, false), (v6, true)] {
            if used {
                objects.push(staged(Forwarding {
                    ipv6,
                    links: match ipv6 {
                        false => internal.iter().cloned().chain([ext.clone()]).collect(),
                        true => Vec::new(),
                    },
                }));
            }
        }
        Desired {
            parts,
            role,
            objects,
        }
    }

    /// The objects of the egress identity (what a standby stages or leaves out and a role
    /// change claims or gives back), with the gateways' host routes among them, in apply
    /// order; the role marker last: the commit point of a role change.
    fn identity(p: &Parts, role: Role) -> Vec<(bool, Box<dyn KernelObject>)> {
        let (ext, held) = (&p.external, role == Role::Active);
        let mut objects: Vec<_> = p
            .sources
            .iter()
            .map(|net| {
                claims(Address {
                    link: ext.clone(),
                    net: *net,
                    held,
                })
            })
            .collect();
        objects.extend(p.gateways.iter().map(|g| {
            staged(OurRoute {
                dst: IpNetwork::from(*g),
                via: None,
                link: ext.clone(),
            })
        }));
        objects.extend(p.gateways.iter().map(|g| {
            claims(DefaultRoute {
                via: *g,
                link: ext.clone(),
                held,
            })
        }));
        if let Some(stable) = p.stable_mac {
            objects.push(claims(StableMac {
                router: p.name.clone(),
                link: ext.clone(),
                stable,
                own: p.own_mac,
                held,
            }));
        }
        objects.push(claims(RoleMark {
            router: p.name.clone(),
            role,
        }));
        objects
    }

    /// What the router is made of.
    pub(crate) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Whether anything of the router is in `now`: its table, its crash record, or the link it
    /// created (with its marker), where no other router is.
    pub(crate) fn exists_in(&self, now: &Current) -> bool {
        let name = &self.parts.name;
        let stores = Stores::of(now, name);
        // The link's group is a hash of the name: a hint, which counts only where no other
        // router is (one with that hash would otherwise be taken for this one).
        let another = stores.other_router.is_some()
            || now
                .tables
                .iter()
                .filter_map(|t| crate::spec::router_of_table(&t.name))
                .any(|r| r != *name);
        let link = &self.parts.external;
        now.has_table(&table_name(name))
            || stores.notes.is_some()
            || (link.created() && link.find(now).is_some() && !another)
    }

    /// How `now` differs from this state; empty when it holds it exactly.
    pub(crate) fn compare(&self, now: &Current) -> Vec<Drift> {
        if !self.exists_in(now) {
            return vec![Drift::RouterMissing {
                table: table_name(&self.parts.name),
            }];
        }
        self.compare_of(now, false)
    }

    /// How `now` differs in what claims the egress identity only (a role change's verify).
    pub(crate) fn compare_identity(&self, now: &Current) -> Vec<Drift> {
        self.compare_of(now, true)
    }

    fn compare_of(&self, now: &Current, identity_only: bool) -> Vec<Drift> {
        let mut drift = Vec::new();
        for (_, o) in self.objects.iter().filter(|(i, _)| *i || !identity_only) {
            o.compare(now, &mut drift);
        }
        drift
    }

    /// The steps that take `now` to this state, in order; empty when it is there.
    pub(crate) fn plan(&self, now: &Current) -> Result<Plan> {
        self.plan_of(now, false)
    }

    /// The steps that take what claims the egress identity in `now` to this state's role:
    /// a promotion or a demotion, the announcements after a promotion included.
    pub(crate) fn plan_identity(&self, now: &Current) -> Result<Plan> {
        self.plan_of(now, true)
    }

    fn plan_of(&self, now: &Current, identity_only: bool) -> Result<Plan> {
        let mut steps = Vec::new();
        for (_, o) in self.objects.iter().filter(|(i, _)| *i || !identity_only) {
            o.repair(now, &mut steps)?;
        }
        steps.extend(self.routes_lost_with_ipv4(now, &steps)?);
        let p = &self.parts;
        let a = p.announce;
        if self.role == Role::Active && a.count > 0 && steps.iter().any(Step::claims_identity) {
            steps.push(Step::Announce {
                link: p.external.name.clone(),
                addresses: p.sources.iter().map(IpNetwork::ip).collect(),
                count: a.count,
                interval: a.interval,
            });
        }
        Ok(Plan::new(steps))
    }

    /// The kernel deletes every IPv4 route through a link whose last IPv4 address goes
    /// (`fib_disable_ip`): when `steps` withdraw the external link's last ones, the staged
    /// routes through it (the gateway host routes) are added again after.
    fn routes_lost_with_ipv4(&self, now: &Current, steps: &[Step]) -> Result<Vec<Step>> {
        let withdrawn: Vec<IpNetwork> = steps
            .iter()
            .filter_map(|s| match s {
                Step::WithdrawAddress { address, .. } if address.is_ipv4() => Some(*address),
                _ => None,
            })
            .collect();
        let ext = &self.parts.external;
        let Some(l) = ext.find(now) else {
            return Ok(Vec::new());
        };
        let left = now
            .addrs
            .iter()
            .any(|a| a.index == l.index && a.net.is_ipv4() && !withdrawn.contains(&a.net));
        if withdrawn.is_empty() || left {
            return Ok(Vec::new());
        }
        let mut after = now.clone();
        after
            .routes
            .retain(|r| !(r.oif == Some(l.index) && r.dst.is_ipv4()));
        // Only the route steps are kept: the other objects' steps may come from what a role
        // change's narrow read leaves out (the ruleset, the sysctl files).
        let mut again = Vec::new();
        for (_, o) in self.objects.iter().filter(|(i, _)| !*i) {
            o.repair(&after, &mut again)?;
        }
        again.retain(|s| matches!(s, Step::AddRoute { link, .. } if *link == ext.name));
        Ok(again)
    }

    /// The changes that take this router, as `now` holds it, out of the kernel (`record`: its
    /// crash record, proven): each object's inverse, in the order an apply makes them.
    pub(crate) fn inverse<'a>(&self, now: &Current, record: &'a Record) -> Inverse<'a> {
        let mut inverse = Inverse::new(record.router.as_str(), record);
        for (_, o) in &self.objects {
            o.remove(now, &mut inverse);
        }
        inverse
    }

    /// The role this state is of.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// An object staged by a standby as by an active router.
fn staged(o: impl KernelObject + 'static) -> (bool, Box<dyn KernelObject>) {
    (false, Box::new(o))
}

/// An object of the egress identity.
fn claims(o: impl KernelObject + 'static) -> (bool, Box<dyn KernelObject>) {
    (true, Box::new(o))
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (_, o) in &self.objects {
            writeln!(f, "{}", o.render())?;
        }
        Ok(())
    }
}

impl RouterSpec {
    /// The router's desired state: every kernel object it consists of, computed without the
    /// kernel.
    pub fn desired(&self) -> Desired {
        Desired::new(self)
    }

    /// The router's desired state as a standby or active instance (see [`Role`]).
    pub fn desired_as(&self, role: Role) -> Desired {
        Desired::with_role(self, role)
    }
}
