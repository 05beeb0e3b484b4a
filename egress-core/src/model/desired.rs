//! [`Desired`]: what a router *is* — every kernel object it consists of — computed from a
//! [`RouterSpec`] without touching the kernel. Everything else is derived from it: the plan
//! (the steps that take a namespace there), `check` (how a namespace differs), `ensure` (the
//! plan, run), the verification after an apply, and the standby and active roles.

use std::{fmt, net::IpAddr, time::Duration};

use ipnetwork::IpNetwork;

use crate::{
    drift::Drift,
    error::Result,
    model::plan::Plan,
    objects::{
        addr::{Address, OnlyOurAddresses},
        link::{group_marker, ExternalLink, LinkRef},
        nat::{NatRules, Ruleset},
        record::{Journal, RecordSpec, Stores},
        role::{Claim, RoleMark, StableMac},
        route::{DefaultRoute, OurRoute},
        sysctl::{self, Forwarding, Sysctl},
        Current, KernelObject, Step,
    },
    role::Role,
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
///
/// The router's [`Role`] is a property of the model: the objects that claim the
/// egress identity (the egress addresses, the default routes via the gateways, the stable
/// MAC, the role marker) are built held for an active router and withdrawn for a standby;
/// a promotion or demotion is the plan of those objects alone.
#[derive(Debug)]
pub struct Desired {
    name: String,
    role: Role,
    /// The external link, which tells whether anything of the router is left.
    link: LinkRef,
    /// Each object, and whether it claims the egress identity.
    objects: Vec<(bool, Box<dyn KernelObject>)>,
    announce: Announce,
}

/// The announcements that follow a change claiming the egress identity.
#[derive(Debug)]
struct Announce {
    link: String,
    addresses: Vec<IpAddr>,
    count: u8,
    interval: Duration,
}

impl Desired {
    /// The desired state of the router `spec` describes, active.
    pub(crate) fn new(spec: &RouterSpec) -> Desired {
        Desired::with_role(spec, Role::Active)
    }

    /// The desired state of the router `spec` describes, in role `role`.
    pub(crate) fn with_role(spec: &RouterSpec, role: Role) -> Desired {
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

        let held = role == Role::Active;
        let mut objects: Vec<(bool, Box<dyn KernelObject>)> = Vec::new();
        let mut staged = |o: Box<dyn KernelObject>| objects.push((false, o));
        staged(Box::new(Journal {
            spec: record.clone(),
        }));
        staged(Box::new(Ruleset {
            rules: nat_rules(spec),
            record,
        }));
        // While the stable MAC is held, it is the stable MAC object's, not the link's.
        let own_mac = macvlan.as_ref().and_then(|m| m.mac);
        let macvlan = match (held, spec.stable_mac()) {
            (true, Some(_)) => macvlan.map(|m| crate::spec::Macvlan { mac: None, ..m }),
            _ => macvlan,
        };
        staged(Box::new(ExternalLink {
            link: ext.clone(),
            macvlan,
            netns: spec.netns().to_string(),
        }));
        for key in link_sysctls {
            staged(Box::new(Sysctl {
                link: ext.clone(),
                key,
                value: 1,
            }));
        }
        // Foreign addresses go first: deleting a primary IPv4 address takes the secondaries of
        // its subnet with it.
        if ext.created() {
            staged(Box::new(OnlyOurAddresses {
                link: ext.clone(),
                ours: spec.sources().to_vec(),
            }));
        }
        let mut identity = Vec::<Box<dyn KernelObject>>::new();
        for s in spec.sources() {
            identity.push(Box::new(Address {
                link: ext.clone(),
                net: *s,
                held,
            }));
        }
        objects.extend(identity.drain(..).map(|o| (true, o)));
        let mut staged = |o: Box<dyn KernelObject>| objects.push((false, o));
        for g in &gateways {
            staged(Box::new(OurRoute {
                dst: IpNetwork::from(*g),
                via: None,
                link: ext.clone(),
            }));
        }
        for g in &gateways {
            identity.push(Box::new(DefaultRoute {
                via: *g,
                link: ext.clone(),
                held,
            }));
        }
        if let Some(stable) = spec.stable_mac() {
            identity.push(Box::new(StableMac {
                router: spec.name().to_string(),
                link: ext.clone(),
                stable,
                own: own_mac,
                held,
            }));
        }
        // Last: the commit point of a role change.
        identity.push(Box::new(RoleMark {
            router: spec.name().to_string(),
            role,
        }));
        objects.extend(identity.drain(..).map(|o| (true, o)));
        let mut staged = |o: Box<dyn KernelObject>| objects.push((false, o));
        for k in spec.kept_routes() {
            staged(Box::new(OurRoute {
                dst: k.to,
                via: k.via,
                link: internal.clone(),
            }));
        }
        for (used, ipv6) in [(v4, false), (v6, true)] {
            if used {
                staged(Box::new(Forwarding {
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
            role,
            announce: Announce {
                link: ext.name.clone(),
                addresses: spec.sources().iter().map(IpNetwork::ip).collect(),
                count: spec.announce(),
                interval: spec.announcements().interval,
            },
            link: ext,
            objects,
        }
    }

    /// What the crash record of `spec`'s router is made of.
    pub(crate) fn record_spec(spec: &RouterSpec) -> RecordSpec {
        let (link, _) = external(spec);
        let (v4, v6) = (spec.gateway4().is_some(), spec.gateway6().is_some());
        let link_sysctls = sysctl::announcing(&link.name, (v4, v6));
        RecordSpec {
            router: spec.name().to_string(),
            link,
            families: (v4, v6),
            link_sysctls,
            claim: Some(Claim::of(spec)),
        }
    }

    /// Whether anything of the router is in `now`: its table, its crash record, or the link it
    /// created (with its marker), where no other router is.
    pub(crate) fn exists_in(&self, now: &Current) -> bool {
        let stores = Stores::of(now, &self.name);
        // The link's group is a hash of the name: a hint, which counts only where no other
        // router is (one with that hash would otherwise be taken for this one).
        let another = stores.other_router.is_some()
            || now
                .tables
                .iter()
                .filter_map(|t| crate::spec::router_of_table(&t.name))
                .any(|r| r != self.name);
        now.has_table(&crate::spec::table_name(&self.name))
            || stores.notes.is_some()
            || (self.link.created() && self.link.find(now).is_some() && !another)
    }

    /// How `now` differs from this state; empty when it holds it exactly.
    pub(crate) fn compare(&self, now: &Current) -> Vec<Drift> {
        if !self.exists_in(now) {
            return vec![Drift::RouterMissing {
                table: crate::spec::table_name(&self.name),
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
        let a = &self.announce;
        if self.role == Role::Active && a.count > 0 && steps.iter().any(Step::claims_identity) {
            steps.push(Step::Announce {
                link: a.link.clone(),
                addresses: a.addresses.clone(),
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
        let Some(l) = self.link.find(now) else {
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
        again.retain(|s| matches!(s, Step::AddRoute { link, .. } if *link == self.link.name));
        Ok(again)
    }

    /// The role this state is of.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (_, o) in &self.objects {
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

    /// The router's desired state as a standby or active instance (see [`Role`]).
    pub fn desired_as(&self, role: Role) -> Desired {
        Desired::with_role(self, role)
    }
}
