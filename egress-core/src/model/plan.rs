//! [`Plan`]: the steps that take a namespace to a router's desired state — the dry run, and the
//! order a transaction follows.

use std::fmt;

use crate::{
    objects::{Current, Step},
    spec::RouterSpec,
};

/// The ordered steps of an apply (or an ensure, a promotion…); `Display` is the dry run, one
/// numbered line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    pub(crate) fn new(steps: Vec<Step>) -> Plan {
        Plan { steps }
    }

    /// The steps, in the order they run.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>2}. {s}", i + 1)?;
        }
        Ok(())
    }
}

impl RouterSpec {
    /// The dry run: every kernel change `apply` makes in a namespace without the router, in
    /// order. Changes nothing and needs no kernel. (What a live namespace still needs is
    /// [`crate::plan()`].)
    ///
    /// ```
    /// # use egress_core::{MacvlanMode, RouterSpec};
    /// let spec = RouterSpec::builder("egress-1")
    ///     .macvlan("eth1", MacvlanMode::Private)
    ///     .source("203.0.113.99/24")
    ///     .gateway("203.0.113.1")
    ///     .build()?;
    /// println!("{}", spec.plan());
    /// # Ok::<(), egress_core::Error>(())
    /// ```
    pub fn plan(&self) -> Plan {
        self.desired()
            .plan(&Current::assumed(self))
            .expect("a namespace without the router can always be brought to it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacvlanMode;

    #[test]
    fn the_pure_plan_is_every_change_of_an_apply_in_order() {
        let spec = RouterSpec::builder("egress-1")
            .netns_name("pod")
            .macvlan("eth1", MacvlanMode::Private)
            .source("203.0.113.99/24")
            .gateway("203.0.113.1")
            .redirect(crate::Protocol::Tcp, 80, "198.51.100.25", Some(8080))
            .keep_route("10.128.0.0/14", Some("192.0.2.1"))
            .build()
            .unwrap();
        let text = spec.plan().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            " 1. ip -6 route add blackhole 6567:… table 1701278323 proto 158 (the crash record",
            " 2. nft add table inet egress_egress_1 { comment \"<crash record>\" } with nft add rules",
            " 3. ip link add macvlan0 link eth1 netns pod type macvlan mode private up group 0x6567",
            " 4. sysctl -w net.ipv4.conf.macvlan0.arp_notify=1",
            // An IPv4-only router's link has IPv6 too: it takes no router advertisement.
            " 5. sysctl -w net.ipv6.conf.macvlan0.accept_ra=0",
            " 6. ip addr add 203.0.113.99/24 dev macvlan0 proto 158",
            " 7. ip route add 203.0.113.1/32 dev macvlan0 proto 158",
            " 8. ip route save: copy the default routes of table main to tables 1701278323 and",
            " 9. ip route replace default via 203.0.113.1 dev macvlan0 proto 158",
            "10. ip route add 10.128.0.0/14 via 192.0.2.1 dev eth0 proto 158",
            "11. sysctl -w net.ipv4.ip_forward=1",
            "12. ip link set dev macvlan0 address <its own> (the kernel announces 203.0.113.99; x1, 100 ms apart)",
        ];
        assert_eq!(lines.len(), expected.len(), "{text}");
        for (line, want) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(want),
                "{line:?} does not start with {want:?}"
            );
        }
    }

    #[test]
    fn a_link_named_like_a_placeholder_is_rendered_as_it_is() {
        let spec = RouterSpec::builder("r")
            .netns_name("ROUTER")
            .macvlan("ROUTERx", MacvlanMode::Bridge)
            .link_name("ROUTER")
            .source("203.0.113.99")
            .gateway("203.0.113.1")
            .build()
            .unwrap();
        let plan = spec.plan().to_string();
        assert!(
            plan.contains("ip link add ROUTER link ROUTERx netns ROUTER type macvlan"),
            "{plan}"
        );
    }
}
