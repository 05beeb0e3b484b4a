//! Kernels older than this one (OpenShift 4 nodes run RHEL 9's 5.14): what egress does without
//! a feature newer than 5.14, each simulated on this kernel (`egress_core::fault`), and shown to
//! leave the namespace exactly as it found it. docs/kernel.md lists them.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails.

use egress_core::{blocking, fault};
use egress_lab::{Lab, Snapshot, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, GATEWAY6, SDN_MACVLAN};

/// Without `IFA_PROTO` (Linux 6.3), no address carries egress's marker: a teardown of a router
/// on an adopted link still removes its egress addresses — the ones its identity notes list —
/// and only those.
#[test]
fn without_address_protocols_a_teardown_still_removes_the_egress_addresses() {
    let lab = Lab::with_adopted_macvlan();
    // An address of the link's own: not the router's, it stays.
    lab.router
        .ip(&["addr", "add", "203.0.113.50/24", "dev", SDN_MACVLAN]);
    let before = Snapshots::take(&lab);
    let spec = lab
        .router_spec("old-kernel")
        .adopt(SDN_MACVLAN)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .build()
        .unwrap();
    fault::without_ifa_proto();
    blocking::apply(&spec).unwrap();
    assert!(blocking::check(&spec).unwrap().is_empty());
    let state = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap();
    let mut addresses: Vec<String> = state.addresses.iter().map(ToString::to_string).collect();
    addresses.sort();
    assert_eq!(addresses, [EGRESS_SOURCE6, EGRESS_SOURCE4]);
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    fault::clear();
    before.assert_restored("teardown of an adopted link's router without IFA_PROTO");
}

/// Without `openat2` (Linux 5.6; or a seccomp filter that refuses it), sysctl files are opened
/// with `openat` and `O_NOFOLLOW` beneath the same directories: apply and teardown restore the
/// sysctls exactly.
#[test]
fn without_openat2_sysctls_are_still_written_and_restored() {
    let lab = Lab::new();
    let before = Snapshot::take(&lab.router);
    let spec = lab
        .router_spec("no-openat2")
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .build()
        .unwrap();
    fault::without_openat2();
    let router = blocking::apply(&spec).unwrap();
    assert_eq!(lab.router.sysctl_get("net.ipv4.ip_forward"), "1");
    assert_eq!(lab.router.sysctl_get("net.ipv6.conf.all.forwarding"), "1");
    blocking::teardown(router).unwrap();
    fault::clear();
    let after = Snapshot::take(&lab.router);
    assert!(before == after, "{}", before.diff(&after));
}
