//! Every operation derives from one model of the router (its desired state): for hand-made
//! partial states, `check` reports exactly the difference, `plan` lists exactly the steps that
//! fix it, `ensure` repairs it in place (the macvlan keeps its index: nothing is rebuilt), and
//! teardown restores the namespace exactly. A failed verification rolls back.
//!
//! As root, in throwaway namespaces; a test that cannot build them fails.

use std::net::IpAddr;

use egress_core::{
    blocking, fault, Drift, EnsureAction, Error, Protocol, Rollback, RouterSpec, Step,
};
use egress_lab::{
    Lab, Snapshots, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, NODE4, SERVICE_PORT, WEB6,
    WEB_PORT,
};

fn spec(lab: &Lab) -> RouterSpec {
    lab.router_spec("model")
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .local_port(Protocol::Tcp, 9100)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A partial state: how to make it, what `check` must say, what `plan` must list.
struct Case {
    name: &'static str,
    make: &'static [&'static str],
    drift: Vec<Drift>,
    steps: Vec<Step>,
}

#[test]
fn check_plan_and_ensure_follow_from_the_model() {
    let lab = Lab::new();
    let original = Snapshots::take(&lab);
    let spec = spec(&lab);
    let table = spec.table_name();
    let link = "macvlan0".to_string();
    let router = blocking::apply(&spec).unwrap();
    let applied = Snapshots::take(&lab);
    let index = lab.router.link_index("macvlan0");
    assert!(blocking::plan(&spec).unwrap().is_empty());

    let announce = Step::Announce {
        link: link.clone(),
        addresses: vec![ip("203.0.113.99"), ip("2001:db8:2::99")],
        count: 1,
        interval: egress_core::DEFAULT_ANNOUNCE_INTERVAL,
    };
    let cases = [
        Case {
            name: "a route missing",
            make: &["ip route del 192.0.2.128/25"],
            drift: vec![Drift::RouteMissing {
                route: "192.0.2.128/25 via 192.0.2.1 dev eth0 proto 158".into(),
            }],
            steps: vec![Step::AddRoute {
                dst: "192.0.2.128/25".parse().unwrap(),
                via: Some(ip(NODE4)),
                link: "eth0".into(),
            }],
        },
        Case {
            name: "a sysctl changed",
            make: &["sysctl -qw net.ipv4.conf.macvlan0.arp_notify=0"],
            drift: vec![Drift::SysctlChanged {
                key: "net.ipv4.conf.macvlan0.arp_notify".into(),
                expected: "1".into(),
                actual: "0".into(),
            }],
            steps: vec![Step::SetSysctl {
                key: "net/ipv4/conf/macvlan0/arp_notify".parse().unwrap(),
                value: 1,
            }],
        },
        Case {
            name: "the link down",
            make: &["ip link set macvlan0 down"],
            // Down, the kernel drops the link's routes and its IPv6 addresses.
            drift: vec![
                Drift::LinkDown { link: link.clone() },
                Drift::AddressMissing {
                    link: link.clone(),
                    address: EGRESS_SOURCE6.parse().unwrap(),
                },
                Drift::RouteMissing {
                    route: "203.0.113.1/32 dev macvlan0 proto 158".into(),
                },
                Drift::RouteMissing {
                    route: "2001:db8:2::1/128 dev macvlan0 proto 158".into(),
                },
                Drift::RouteMissing {
                    route: "default via 203.0.113.1 dev macvlan0 proto 158".into(),
                },
                Drift::RouteMissing {
                    route: "default via 2001:db8:2::1 dev macvlan0 proto 158".into(),
                },
            ],
            steps: vec![
                Step::SetLinkUp { link: link.clone() },
                Step::AddAddress {
                    link: link.clone(),
                    address: EGRESS_SOURCE6.parse().unwrap(),
                },
                Step::AddRoute {
                    dst: "203.0.113.1/32".parse().unwrap(),
                    via: None,
                    link: link.clone(),
                },
                Step::AddRoute {
                    dst: "2001:db8:2::1/128".parse().unwrap(),
                    via: None,
                    link: link.clone(),
                },
                Step::ReplaceDefaultRoute {
                    via: ip(GATEWAY4),
                    link: link.clone(),
                },
                Step::ReplaceDefaultRoute {
                    via: ip(GATEWAY6),
                    link: link.clone(),
                },
                announce.clone(),
            ],
        },
        Case {
            name: "the NAT table missing",
            make: &["nft delete table inet egress_model"],
            drift: vec![Drift::NatChanged {
                table: table.clone(),
                detail: "the table is missing (and with it the crash record in its comment)".into(),
            }],
            steps: vec![Step::CreateTable {
                table: table.clone(),
                summary: egress_nat_summary(&spec),
            }],
        },
        Case {
            name: "an extra address",
            make: &["ip addr add 203.0.113.77/32 dev macvlan0"],
            drift: vec![Drift::ForeignAddress {
                link: link.clone(),
                address: "203.0.113.77/32".parse().unwrap(),
            }],
            steps: vec![Step::DeleteAddress {
                link: link.clone(),
                address: "203.0.113.77/32".parse().unwrap(),
            }],
        },
        // Last: it grows the crash record for good (the route is restored at teardown).
        Case {
            name: "a foreign default route",
            make: &["ip route add default via 192.0.2.1 dev eth0 metric 50"],
            drift: vec![Drift::ForeignDefaultRoute {
                route: "default via 192.0.2.1 dev eth0".into(),
            }],
            // The crash record grows by it in both places, then it is saved and replaced.
            steps: vec![
                Step::WriteJournal {
                    table: egress_core::JOURNAL_TABLE,
                },
                Step::RewriteJournal {
                    table: table.clone(),
                },
                Step::SaveDefaultRoutes { ipv6: false },
                Step::ReplaceDefaultRoute {
                    via: ip(GATEWAY4),
                    link: link.clone(),
                },
            ],
        },
    ];
    for case in cases {
        for cmd in case.make {
            let words: Vec<&str> = cmd.split(' ').collect();
            lab.router.exec(&words);
        }
        assert_eq!(
            blocking::check(&spec).unwrap(),
            case.drift,
            "{}: check",
            case.name
        );
        assert_eq!(
            blocking::plan(&spec).unwrap().steps(),
            case.steps,
            "{}: plan",
            case.name
        );
        let outcome = blocking::ensure(&spec).unwrap();
        assert_eq!(outcome.action, EnsureAction::Repaired, "{}", case.name);
        assert_eq!(outcome.drift, case.drift, "{}", case.name);
        assert!(blocking::check(&spec).unwrap().is_empty(), "{}", case.name);
        assert!(blocking::plan(&spec).unwrap().is_empty(), "{}", case.name);
        assert_eq!(
            lab.router.link_index("macvlan0"),
            index,
            "{}: repaired in place, not rebuilt",
            case.name
        );
        if case.name != "a foreign default route" {
            applied.assert_restored(&format!("{}, then ensure", case.name));
        }
    }
    // The rule that keeps the router's own port from the fallback, deleted: a NAT change that
    // names it, repaired by replacing the ruleset.
    let listing = lab.router.exec(&[
        "nft",
        "-a",
        "list",
        "chain",
        "inet",
        "egress_model",
        "prerouting",
    ]);
    let handle = listing
        .lines()
        .find(|l| l.contains("\"egress local tcp/9100\""))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap_or_else(|| panic!("no local-port rule in {listing}"))
        .trim();
    lab.router.exec(&[
        "nft",
        "delete",
        "rule",
        "inet",
        "egress_model",
        "prerouting",
        "handle",
        handle,
    ]);
    let drift = blocking::check(&spec).unwrap();
    let [Drift::NatChanged { table: t, detail }] = &drift[..] else {
        panic!("the local-port rule deleted: {drift:?}");
    };
    assert_eq!(t, &table);
    assert!(
        detail.starts_with(
            "chain prerouting: rules \"egress dnat4 map\", \"egress dnat4 fallback\", \
             \"egress dnat6 map\" instead of \"egress local tcp/9100\", \"egress dnat4 map\", \
             \"egress dnat4 fallback\", \"egress dnat6 map\"; rule 1 is ["
        ),
        "{detail}"
    );
    assert_eq!(
        blocking::plan(&spec).unwrap().steps(),
        [Step::ReplaceRuleset {
            table: table.clone(),
            summary: egress_nat_summary(&spec),
        }]
    );
    assert!(egress_nat_summary(&spec).contains(", local ports tcp/9100 accepted, "));
    let outcome = blocking::ensure(&spec).unwrap();
    assert_eq!(outcome.action, EnsureAction::Repaired);
    assert!(blocking::check(&spec).unwrap().is_empty());

    // The foreign default route was replaced like the pod's own: teardown restores both.
    blocking::teardown(router).unwrap();
    lab.router.ip(&[
        "route", "del", "default", "via", NODE4, "dev", "eth0", "metric", "50",
    ]);
    original.assert_restored("after the partial states, ensure and teardown");
}

/// The summary `plan` shows for the router's ruleset, from the pure plan.
fn egress_nat_summary(spec: &RouterSpec) -> String {
    spec.plan()
        .steps()
        .iter()
        .find_map(|s| match s {
            Step::CreateTable { summary, .. } => Some(summary.clone()),
            _ => None,
        })
        .expect("the pure plan creates the table")
}

/// A fault injected into the verification rolls an apply back to the exact namespace it began
/// with, and an ensure back to the (drifted) state it found.
#[test]
fn a_failed_verification_rolls_back() {
    let lab = Lab::new();
    let original = Snapshots::take(&lab);
    let spec = spec(&lab);
    fault::fail_verify();
    let e = blocking::apply(&spec).unwrap_err();
    fault::clear();
    match &e {
        Error::Apply {
            step,
            step_index,
            source,
            rollback: Rollback::Complete,
        } => {
            assert!(step.starts_with("verify:"), "{step}");
            assert_eq!(*step_index, spec.plan().steps().len() + 1);
            assert!(matches!(**source, Error::Verify { .. }), "{source}");
        }
        other => panic!("{other:?}"),
    }
    original.assert_restored("after a failed verification of an apply");

    let router = blocking::apply(&spec).unwrap();
    lab.router.ip(&["route", "del", "192.0.2.128/25"]);
    let drifted = Snapshots::take(&lab);
    fault::fail_verify();
    let e = blocking::ensure(&spec).unwrap_err();
    fault::clear();
    assert!(
        matches!(
            &e,
            Error::Apply {
                rollback: Rollback::Complete,
                ..
            }
        ),
        "{e}"
    );
    drifted.assert_restored("after a failed verification of an ensure");
    assert_eq!(blocking::check(&spec).unwrap().len(), 1);
    blocking::teardown(router).unwrap();
    original.assert_restored("after teardown");
    assert_eq!(lab.router.sysctl_get("net.ipv4.ip_forward"), "0");
}
