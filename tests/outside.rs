//! The promise holds when others touch the namespace: after any one outside change, `check`
//! names it, `ensure` repairs it, and teardown restores the namespace exactly — sysctls
//! included — or, for something that only looks like a router, touches nothing.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails.
//! `EGRESS_SEED=N` replays the random sequences of the property test (each run prints its
//! seed); `EGRESS_LONG=1` runs 1,000 sequences instead of 200.

use std::{cell::RefCell, collections::BTreeSet, fmt};

use egress_core::{
    blocking, Drift, EnsureAction, Error, ErrorKind, Netns as CoreNetns, Protocol, RouterSpec,
};
use egress_lab::{
    Lab, Snapshot, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, NODE4,
    NODE6, SDN_MACVLAN, SERVICE_PORT, WEB6, WEB_PORT,
};
use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

/// The journal routing table and its mirror, as `ip` names them.
const JOURNAL: &str = "1701278323";
const MIRROR: &str = "1701278317";

/// A dual-stack router on a created macvlan, with a kept route of each family.
fn spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .keep_route("2001:db8:5::/64", Some(NODE6))
        .build()
        .unwrap()
}

/// The SDN's `macvlan0` adopted (needs [`Lab::with_adopted_macvlan`]), dual stack.
fn adopted_spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name)
        .adopt(SDN_MACVLAN)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .fallback(FALLBACK4)
        .build()
        .unwrap()
}

fn forwarding(lab: &Lab) -> (String, String) {
    (
        lab.router.sysctl_get("net.ipv4.ip_forward"),
        lab.router.sysctl_get("net.ipv6.conf.all.forwarding"),
    )
}

/// Class 1: a flush of every nftables table (a firewall reload) erases one place of the crash
/// record; the other restores it, and teardown turns forwarding off again.
#[test]
fn a_flushed_ruleset_is_repaired_and_teardown_still_restores_forwarding() {
    let lab = Lab::new();
    let before = Snapshots::take(&lab);
    let spec = spec(&lab, "flush");
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Created
    );
    assert_eq!(forwarding(&lab), ("1".into(), "1".into()));
    lab.router.nft("flush ruleset");
    let drift = blocking::check(&spec).unwrap();
    assert!(
        matches!(drift.as_slice(), [Drift::NatChanged { detail, .. }] if detail.contains("missing")),
        "{drift:?}"
    );
    // Re-running the init container.
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert!(blocking::check(&spec).unwrap().is_empty());
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert_eq!(forwarding(&lab), ("0".into(), "0".into()));
    before.assert_restored("flush ruleset, ensure, teardown");

    // And without the ensure in between.
    let router = blocking::apply(&spec).unwrap();
    lab.router.nft("flush ruleset");
    blocking::teardown(router).unwrap();
    before.assert_restored("flush ruleset, teardown");
}

/// Class 2: the tables that keep the replaced default routes are flushed by hand, one at a
/// time: `check` says so, `ensure` copies them back, teardown restores the pod's routes.
#[test]
fn a_flushed_saved_route_table_is_noticed_and_repaired() {
    let lab = Lab::new();
    let before = Snapshots::take(&lab);
    let spec = spec(&lab, "saved");
    let router = blocking::apply(&spec).unwrap();
    for table in [JOURNAL, MIRROR] {
        for family in ["-4", "-6"] {
            lab.router.ip(&[family, "route", "flush", "table", table]);
        }
        let drift = blocking::check(&spec).unwrap();
        assert!(
            !drift.is_empty(),
            "table {table} flushed, check says nothing"
        );
        assert!(
            drift
                .iter()
                .all(|d| matches!(d, Drift::JournalDamaged { .. })),
            "{drift:?}"
        );
        assert!(
            drift.iter().any(|d| d.to_string().contains(table)),
            "{drift:?}"
        );
        let outcome = blocking::ensure(&spec).unwrap();
        assert_eq!(outcome.action, EnsureAction::Repaired, "{drift:?}");
        assert!(blocking::check(&spec).unwrap().is_empty());
    }
    blocking::teardown(router).unwrap();
    before.assert_restored("saved-route tables flushed and repaired, then teardown");

    // Flushed, then torn down without a repair: the mirror has the routes, the table's comment
    // the rest of the record.
    blocking::apply(&spec).unwrap();
    for family in ["-4", "-6"] {
        lab.router.ip(&[family, "route", "flush", "table", JOURNAL]);
    }
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    before.assert_restored("journal table flushed, then teardown by name");
}

/// Class 3: an operator "fixes" the default route by hand through the egress link, without
/// the router's marker. It neither blocks ensure nor teardown, and it is not restored later.
#[test]
fn a_default_route_replaced_by_hand_through_the_egress_link() {
    let lab = Lab::new();
    let before = Snapshots::take(&lab);
    let spec = spec(&lab, "by-hand");
    for repair_first in [true, false] {
        let router = blocking::apply(&spec).unwrap();
        lab.router.ip(&[
            "route", "replace", "default", "via", GATEWAY4, "dev", "macvlan0",
        ]);
        let drift = blocking::check(&spec).unwrap();
        assert_eq!(
            drift,
            [
                Drift::RouteMissing {
                    route: format!("default via {GATEWAY4} dev macvlan0 proto 158")
                },
                Drift::ForeignDefaultRoute {
                    route: format!("default via {GATEWAY4} dev macvlan0")
                },
            ]
        );
        if repair_first {
            assert_eq!(
                blocking::ensure(&spec).unwrap().action,
                EnsureAction::Repaired
            );
            assert!(blocking::check(&spec).unwrap().is_empty());
        }
        blocking::teardown(router).unwrap();
        before.assert_restored(&format!(
            "hand-made default route, repair first: {repair_first}"
        ));
    }
}

/// Class 4: the adopted link is deleted from under the router: teardown still finishes (the
/// link's sysctls went with it) and removes everything else of the router.
#[test]
fn teardown_finishes_when_the_adopted_link_is_gone() {
    let lab = Lab::with_adopted_macvlan();
    lab.router
        .sysctl_set(&format!("net.ipv4.conf.{SDN_MACVLAN}.arp_notify"), "0");
    let spec = adopted_spec(&lab, "gone");
    blocking::apply(&spec).unwrap();
    lab.router.ip(&["link", "del", SDN_MACVLAN]);
    // What the namespace would hold had the link been deleted without the router.
    let without_link = {
        let lab2 = Lab::with_adopted_macvlan();
        lab2.router
            .sysctl_set(&format!("net.ipv4.conf.{SDN_MACVLAN}.arp_notify"), "0");
        lab2.router.ip(&["link", "del", SDN_MACVLAN]);
        normalized(&Snapshot::take(&lab2.router), &lab2)
    };
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert!(blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .is_none());
    assert_eq!(normalized(&Snapshot::take(&lab.router), &lab), without_link);
}

/// A snapshot's lines with the lab's own namespace names replaced, to compare two labs.
fn normalized(s: &Snapshot, lab: &Lab) -> Vec<String> {
    let names = lab.ns_names();
    s.lines()
        .iter()
        .map(|l| {
            let mut l = l.clone();
            for n in &names {
                l = l.replace(n, "NS");
            }
            l
        })
        .collect()
}

/// Class 5: a foreign table whose name and comment look like a router's is not a router: no
/// marked object vouches for it, and teardown by that name touches nothing — not the table,
/// not the link its comment names, not forwarding.
#[test]
fn a_look_alike_table_is_left_alone() {
    let lab = Lab::new();
    for comment in [
        // The current record format, naming the internal link as an adopted one.
        "egress/2 r=fake id=00000001 link=eth0 c=0 up=0 4all.f=1 6all.f=1",
        // The format of earlier versions.
        "egress/1 link=eth0 created=0 up=0 4all.f=1",
    ] {
        lab.router.nft(&format!(
            "table inet egress_fake {{\n comment \"{comment}\"\n chain forward {{ type filter hook forward priority 0; policy accept; }}\n}}"
        ));
        let before = Snapshots::take(&lab);
        assert!(blocking::plan_teardown(&core(&lab), "fake")
            .unwrap()
            .is_empty());
        let undone = blocking::teardown_by_name(&core(&lab), "fake").unwrap();
        assert!(undone.is_empty(), "{undone:?}");
        assert!(blocking::inspect(&core(&lab), "fake").unwrap().is_none());
        before.assert_restored(&format!("teardown of a look-alike ({comment})"));
        lab.router.nft("delete table inet egress_fake");
    }
}

fn core(lab: &Lab) -> CoreNetns {
    CoreNetns::Path(lab.router.path().into())
}

/// Class 6: a handle whose router was torn down and applied again elsewhere does nothing, and
/// says so; one whose router is simply gone succeeds with nothing undone.
#[test]
fn a_stale_handle_touches_nothing() {
    let lab = Lab::new();
    let before = Snapshots::take(&lab);
    let spec = spec(&lab, "stale");
    let old = blocking::apply(&spec).unwrap();
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    let new = blocking::apply(&spec).unwrap();
    let applied = Snapshot::take(&lab.router);
    let e = blocking::teardown(old).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleHandle, "{e}");
    assert!(e.to_string().contains("nothing was changed"), "{e}");
    assert!(
        Snapshot::take(&lab.router) == applied,
        "a stale handle changed the namespace"
    );
    assert!(blocking::check(&spec).unwrap().is_empty());
    blocking::teardown(new).unwrap();
    before.assert_restored("after the live handle's teardown");

    let gone = blocking::apply(&spec).unwrap();
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert_eq!(blocking::teardown(gone).unwrap(), Vec::<String>::new());
    before.assert_restored("a handle of a router already gone");
}

/// Class 7: names that can never be a router's are invalid input, not "nothing to do".
#[test]
fn names_that_cannot_exist_are_invalid() {
    let lab = Lab::new();
    for name in ["Egress_1", "A_B", "", "a/b"] {
        let e = blocking::teardown_by_name(&core(&lab), name).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{name:?}: {e}");
        let e = blocking::inspect(&core(&lab), name).unwrap_err();
        assert!(
            matches!(e, Error::InvalidSpec { ref field, .. } if field == "name"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Random sequences of outside changes
// ---------------------------------------------------------------------------------------------

/// One change someone else makes to a namespace with a router in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    FlushRuleset,
    FlushJournalTable,
    FlushMirrorTable,
    DeleteDefaultRoute4,
    DeleteDefaultRoute6,
    /// The pod's own default route put back (a DHCP client, a CNI plugin).
    ReaddPodDefaultRoute,
    DefaultRouteByHand,
    DeleteLink,
    LinkDown,
    DeleteEgressAddress,
    ForeignAddressOnLink,
    ForwardingOff,
    InternalForwardingOff,
    ArpNotifyOff,
    ForeignRouteInJournal,
    DeleteGatewayRoute,
    DeleteKeptRoute,
    LinkMtu,
}

const CHANGES: [Change; 18] = [
    Change::FlushRuleset,
    Change::FlushJournalTable,
    Change::FlushMirrorTable,
    Change::DeleteDefaultRoute4,
    Change::DeleteDefaultRoute6,
    Change::ReaddPodDefaultRoute,
    Change::DefaultRouteByHand,
    Change::DeleteLink,
    Change::LinkDown,
    Change::DeleteEgressAddress,
    Change::ForeignAddressOnLink,
    Change::ForwardingOff,
    Change::InternalForwardingOff,
    Change::ArpNotifyOff,
    Change::ForeignRouteInJournal,
    Change::DeleteGatewayRoute,
    Change::DeleteKeptRoute,
    Change::LinkMtu,
];

/// The foreign route put into the journal table, which the router must never restore or
/// delete; the test removes it at the end.
const FOREIGN_IN_JOURNAL: [&str; 6] = ["198.18.7.0/24", "via", NODE4, "table", JOURNAL, "proto"];

impl Change {
    fn make(self, lab: &Lab) {
        let r = &lab.router;
        match self {
            Change::FlushRuleset => r.nft("flush ruleset"),
            Change::FlushJournalTable | Change::FlushMirrorTable => {
                let table = if self == Change::FlushJournalTable {
                    JOURNAL
                } else {
                    MIRROR
                };
                for family in ["-4", "-6"] {
                    r.ip(&[family, "route", "flush", "table", table]);
                }
            }
            Change::DeleteDefaultRoute4 => drop(r.try_exec(&["ip", "route", "del", "default"])),
            Change::DeleteDefaultRoute6 => {
                drop(r.try_exec(&["ip", "-6", "route", "del", "default"]))
            }
            Change::ReaddPodDefaultRoute => {
                r.ip(&["route", "replace", "default", "via", NODE4, "dev", "eth0"]);
            }
            Change::DefaultRouteByHand => drop(r.try_exec(&[
                "ip", "route", "replace", "default", "via", GATEWAY4, "dev", "macvlan0",
            ])),
            Change::DeleteLink => drop(r.try_exec(&["ip", "link", "del", "macvlan0"])),
            Change::LinkDown => drop(r.try_exec(&["ip", "link", "set", "macvlan0", "down"])),
            Change::DeleteEgressAddress => {
                drop(r.try_exec(&["ip", "addr", "del", EGRESS_SOURCE4, "dev", "macvlan0"]))
            }
            Change::ForeignAddressOnLink => {
                drop(r.try_exec(&["ip", "addr", "add", "203.0.113.77/32", "dev", "macvlan0"]))
            }
            Change::ForwardingOff => r.sysctl_set("net.ipv4.ip_forward", "0"),
            Change::InternalForwardingOff => r.sysctl_set("net.ipv4.conf.eth0.forwarding", "0"),
            Change::ArpNotifyOff => {
                if r.has_sysctl("net.ipv4.conf.macvlan0.arp_notify") {
                    r.sysctl_set("net.ipv4.conf.macvlan0.arp_notify", "0")
                }
            }
            Change::ForeignRouteInJournal => {
                let mut args = vec!["route", "replace"];
                args.extend(FOREIGN_IN_JOURNAL);
                args.push("static");
                r.ip(&args);
            }
            Change::DeleteGatewayRoute => {
                drop(r.try_exec(&["ip", "route", "del", GATEWAY4, "dev", "macvlan0"]))
            }
            Change::DeleteKeptRoute => drop(r.try_exec(&["ip", "route", "del", "192.0.2.128/25"])),
            Change::LinkMtu => drop(r.try_exec(&["ip", "link", "set", "macvlan0", "mtu", "1400"])),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a sequence does after each change: repair with `ensure`, or go on.
#[derive(Debug, Clone, Copy)]
struct Step {
    change: Change,
    ensure: bool,
}

fn seed() -> u64 {
    match std::env::var("EGRESS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("EGRESS_SEED={s:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Random sequences of outside changes, each followed by `ensure` — one change at a time, as
/// the promise is stated; the last change may be left unrepaired — ending with teardown: the
/// namespace equals the one before the router, sysctls included, every time, and forwarding is
/// never left on.
#[test]
fn random_outside_changes_end_exactly_where_they_began() {
    let cases = match std::env::var("EGRESS_LONG").as_deref() {
        Ok("1") => 1000,
        _ => 200,
    };
    let seed = seed();
    eprintln!("outside changes: {cases} sequences, EGRESS_SEED={seed}");
    let lab = Lab::new();
    let spec = spec(&lab, "prop");
    let initial = Snapshots::take(&lab);
    let step = (proptest::sample::select(CHANGES.to_vec()), any::<bool>());
    let sequence =
        (proptest::collection::vec(step, 1..6), any::<bool>()).prop_map(|(steps, repair_last)| {
            let n = steps.len();
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (change, _))| Step {
                    change,
                    ensure: i + 1 < n || repair_last,
                })
                .collect::<Vec<Step>>()
        });
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            // A failed sequence leaves the namespace as it found it; shrinking would replay
            // it on a broken one.
            max_shrink_iters: 0,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let seen = RefCell::new(BTreeSet::new());
    let result = runner.run(&sequence, |steps| {
        blocking::ensure(&spec).map_err(|e| TestCaseError::fail(format!("ensure: {e}")))?;
        for s in &steps {
            seen.borrow_mut().insert(s.change);
            s.change.make(&lab);
            if s.ensure {
                blocking::ensure(&spec)
                    .map_err(|e| TestCaseError::fail(format!("ensure after {}: {e}", s.change)))?;
                let drift = blocking::check(&spec).unwrap();
                prop_assert!(drift.is_empty(), "after {}: {drift:?}", s.change);
            }
        }
        let torn = blocking::teardown_by_name(spec.netns(), spec.name());
        prop_assert!(torn.is_ok(), "teardown after {steps:?}: {torn:?}");
        prop_assert_eq!(
            lab.router.sysctl_get("net.ipv4.ip_forward"),
            "0",
            "forwarding left on after {:?}",
            steps
        );
        // The foreign route in the journal table is there unless the sequence itself flushed
        // the table after adding it: the router never touches it.
        let last = |c: Change| steps.iter().rposition(|s| s.change == c);
        if let Some(added) = last(Change::ForeignRouteInJournal) {
            let flushed = last(Change::FlushJournalTable).is_some_and(|f| f > added);
            let mut args = vec!["ip", "route", "del"];
            args.extend(FOREIGN_IN_JOURNAL);
            args.push("static");
            let deleted = lab.router.try_exec(&args);
            prop_assert_eq!(
                deleted.is_ok(),
                !flushed,
                "the foreign route in the journal table, after {:?}",
                steps
            );
        }
        let result =
            std::panic::catch_unwind(|| initial.assert_restored(&format!("after {steps:?}")));
        prop_assert!(result.is_ok(), "not restored after {steps:?}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("EGRESS_SEED={seed}: {e}");
    }
    assert_eq!(
        seen.borrow().len(),
        CHANGES.len(),
        "every kind of change was tried"
    );
}
