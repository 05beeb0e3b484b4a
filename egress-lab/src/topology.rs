//! The lab's topology ([`Lab`]): node, router, client, gateway and web namespaces.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use egress_core::{MacvlanMode, Protocol, RouterSpecBuilder};

use crate::{
    ip, Netns, WebServer, CLIENT4, CLIENT6, CLIENT_LINK, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4,
    FALLBACK6, GATEWAY4, GATEWAY6, GATEWAY_LINK, MACVLAN_PARENT, NODE4, NODE6, NODE_BRIDGE,
    NODE_CLIENT_PORT, NODE_ROUTER_PORT, ROUTER_ETH0_4, ROUTER_ETH0_6, ROUTER_INTERNAL, SDN_MACVLAN,
    SERVICE_PORT, SWITCH_BRIDGE, SWITCH_FILTER_TABLE, SWITCH_GATEWAY_PORT, SWITCH_NODE_PORT, WEB4,
    WEB6, WEB_FIREWALL_TABLE, WEB_PORT,
};

/// The seed's topology (see the crate docs): four namespaces (five with a switch), deleted when
/// the `Lab` is dropped.
#[derive(Debug)]
pub struct Lab {
    /// The node: cluster bridge [`NODE_BRIDGE`] and the macvlan parent [`MACVLAN_PARENT`].
    pub node: Netns,
    /// The egress router's pod: [`ROUTER_INTERNAL`] on the cluster network, default routes via
    /// the node, forwarding off.
    pub router: Netns,
    /// A pod on the cluster network, default routes via the node.
    pub client: Netns,
    /// The external segment: the gateway and the web server's addresses and firewall.
    pub ext: Netns,
    /// The external segment's switch, when the lab has one ([`Lab::with_switch`]): a bridge
    /// between the node's [`MACVLAN_PARENT`] and the gateway, where a test drops frames the way
    /// a hypervisor or a switch port does, and attaches more hosts.
    pub switch: Option<Netns>,
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Lab {
    /// Builds the topology. Panics (after deleting whatever it created) if any step fails.
    pub fn new() -> Lab {
        Lab::build(false)
    }

    /// [`Lab::new`] with a switch in the external segment: the node's [`MACVLAN_PARENT`] and
    /// the gateway's [`GATEWAY_LINK`] are veths to ports of bridge [`SWITCH_BRIDGE`] in a fifth
    /// namespace, [`Lab::switch`], instead of one veth between them. Frames cross it as they
    /// would cross a vSwitch or a switch port: [`Lab::switch_drop_from`] drops those of one
    /// source MAC, and [`Lab::attach_host`] adds a host to the segment.
    ///
    /// ```text
    ///  node: ext0 ---- p-node [br0] p-gw ---- gw0: ext
    ///                          |  p-1, p-2 ... ---- eth0: attached hosts
    ///                        switch
    /// ```
    pub fn with_switch() -> Lab {
        Lab::build(true)
    }

    fn build(switch: bool) -> Lab {
        let lab = Lab {
            node: Netns::new("node"),
            router: Netns::new("router"),
            client: Netns::new("client"),
            ext: Netns::new("ext"),
            switch: switch.then(|| Netns::new("switch")),
        };
        for ns in lab.namespaces() {
            // Links created from now on take these, so IPv6 addresses work at once.
            for key in [
                "net.ipv6.conf.default.accept_dad",
                "net.ipv6.conf.all.accept_dad",
            ] {
                ns.sysctl_set(key, "0");
            }
        }
        lab.build_node();
        lab.build_pod(&lab.router, ROUTER_INTERNAL, ROUTER_ETH0_4, ROUTER_ETH0_6);
        lab.router.sysctl_set("net.ipv4.ip_forward", "0");
        lab.router.sysctl_set("net.ipv6.conf.all.forwarding", "0");
        lab.build_pod(&lab.client, CLIENT_LINK, CLIENT4, CLIENT6);
        lab.build_ext();
        lab
    }

    /// [`Lab::new`] plus [`SDN_MACVLAN`] made by [`Lab::make_sdn_macvlan`], for the adopt mode.
    pub fn with_adopted_macvlan() -> Lab {
        let lab = Lab::new();
        lab.make_sdn_macvlan(SDN_MACVLAN);
        lab
    }

    /// Makes a macvlan on [`MACVLAN_PARENT`] and moves it into the router, the way OpenShift's
    /// SDN prepares an egress router pod: down, no address.
    ///
    /// Equivalent to `ip link add NAME link ext0 type macvlan mode private` in `node`, then
    /// `ip link set NAME netns ROUTER`.
    pub fn make_sdn_macvlan(&self, name: &str) {
        self.node.ip(&[
            "link",
            "add",
            name,
            "link",
            MACVLAN_PARENT,
            "type",
            "macvlan",
            "mode",
            "private",
        ]);
        self.node
            .ip(&["link", "set", name, "netns", self.router.name()]);
    }

    /// A router spec for this lab, IPv4 only, for a test to extend: the router in
    /// [`Lab::router`] with [`ROUTER_INTERNAL`] inside, a private macvlan on [`MACVLAN_PARENT`]
    /// of [`Lab::node`], source [`EGRESS_SOURCE4`], gateway [`GATEWAY4`], and two redirects:
    /// TCP [`SERVICE_PORT`] to [`WEB4`]:[`WEB_PORT`], and TCP [`WEB_PORT`] to [`WEB4`] (same
    /// port). No fallback, so a test can add one (`.fallback(FALLBACK4)`).
    pub fn router_spec(&self, name: &str) -> RouterSpecBuilder {
        egress_core::RouterSpec::builder(name)
            .netns(egress_core::Netns::Path(self.router.path().into()))
            .macvlan(MACVLAN_PARENT, MacvlanMode::Private)
            .parent_netns(egress_core::Netns::Path(self.node.path().into()))
            .internal(ROUTER_INTERNAL)
            .source(EGRESS_SOURCE4)
            .gateway(GATEWAY4)
            .redirect(Protocol::Tcp, SERVICE_PORT, WEB4, Some(WEB_PORT))
            .redirect(Protocol::Tcp, WEB_PORT, WEB4, None)
    }

    /// Proves with real TCP, from the client to the router's eth0, that the redirects of
    /// [`Lab::router_spec`] ([`SERVICE_PORT`] and [`WEB_PORT`]) reach the web server's
    /// [`WEB_PORT`] and that `fallback_port`, which nothing redirects, reaches [`FALLBACK4`];
    /// that the router DNAT-ed each one (its conntrack table) and the server saw only
    /// [`EGRESS_SOURCE4`], on exactly these three connections. `web` serves [`WEB_PORT`] and
    /// `fallback_port` and has served nothing yet; panics otherwise.
    pub fn assert_redirects_and_fallback4(&self, web: &WebServer, fallback_port: u16) {
        let timeout = Duration::from_secs(2);
        let source = ip(EGRESS_SOURCE4);
        for port in [SERVICE_PORT, WEB_PORT] {
            let body = self
                .client
                .http_get(ip(ROUTER_ETH0_4), port, timeout)
                .unwrap();
            assert_eq!(body.trim(), format!("peer={source} port={WEB_PORT}"));
            assert!(self.router.dnat_seen(port, WEB4), "port {port}");
        }
        let body = self
            .client
            .http_get(ip(ROUTER_ETH0_4), fallback_port, timeout)
            .unwrap();
        assert_eq!(body.trim(), format!("peer={source} port={fallback_port}"));
        assert!(self.router.dnat_seen(fallback_port, FALLBACK4));
        assert!(!self.router.dnat_seen(fallback_port, WEB4));
        assert_eq!(web.peers().len(), 3);
        assert!(web.peers().iter().all(|p| *p == source));
    }

    /// The names of the namespaces (node, router, client, ext, and the switch if there is
    /// one).
    pub fn ns_names(&self) -> Vec<String> {
        self.namespaces()
            .iter()
            .map(|ns| ns.name().to_owned())
            .collect()
    }

    fn namespaces(&self) -> Vec<&Netns> {
        let mut all = vec![&self.node, &self.router, &self.client, &self.ext];
        all.extend(&self.switch);
        all
    }

    /// The switch of a lab made by [`Lab::with_switch`]; panics for a lab without one.
    pub fn switch(&self) -> &Netns {
        self.switch
            .as_ref()
            .expect("a lab with a switch: build it with Lab::with_switch()")
    }

    /// Makes the switch drop every frame whose source is `mac` (on every port), as a
    /// hypervisor does that allows only the MAC it gave a VM's NIC, or a switch port with
    /// port security. Equivalent to `nft add rule bridge egt_switch forward ether saddr MAC
    /// drop` in the switch.
    pub fn switch_drop_from(&self, mac: &str) {
        self.switch().nft(&format!(
            "table bridge {SWITCH_FILTER_TABLE} {{
                chain forward {{
                    type filter hook forward priority 0; policy accept;
                    ether saddr {mac} drop
                }}
            }}"
        ));
    }

    /// A new namespace for `role` with `eth0` on the switch (a veth to a new port of
    /// [`SWITCH_BRIDGE`]), up, without addresses; the test gives it what it needs. Deleted
    /// when the returned [`Netns`] is dropped (its port goes with it).
    pub fn attach_host(&self, role: &str) -> Netns {
        static NEXT_PORT: AtomicUsize = AtomicUsize::new(1);
        let switch = self.switch();
        let host = Netns::new(role);
        let port = format!("p-{}", NEXT_PORT.fetch_add(1, Ordering::Relaxed));
        switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ]);
        switch.ip(&["link", "set", &port, "master", SWITCH_BRIDGE, "up"]);
        host.sysctl_set("net.ipv6.conf.default.accept_dad", "0");
        host.sysctl_set("net.ipv6.conf.eth0.accept_dad", "0");
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    fn build_node(&self) {
        let node = &self.node;
        node.ip(&[
            "link",
            "add",
            NODE_BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        add_addresses(
            node,
            NODE_BRIDGE,
            &[&format!("{NODE4}/24"), &format!("{NODE6}/64")],
        );
        node.ip(&["link", "set", NODE_BRIDGE, "up"]);
        for (port, pod, pod_link) in [
            (NODE_ROUTER_PORT, &self.router, ROUTER_INTERNAL),
            (NODE_CLIENT_PORT, &self.client, CLIENT_LINK),
        ] {
            self.veth(port, pod, pod_link);
            node.ip(&["link", "set", port, "master", NODE_BRIDGE, "up"]);
        }
        match &self.switch {
            None => self.veth(MACVLAN_PARENT, &self.ext, GATEWAY_LINK),
            Some(switch) => {
                switch.ip(&[
                    "link",
                    "add",
                    SWITCH_BRIDGE,
                    "type",
                    "bridge",
                    "mcast_snooping",
                    "0",
                ]);
                switch.ip(&["link", "set", SWITCH_BRIDGE, "up"]);
                self.veth(MACVLAN_PARENT, switch, SWITCH_NODE_PORT);
                switch.ip(&[
                    "link",
                    "add",
                    SWITCH_GATEWAY_PORT,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    GATEWAY_LINK,
                    "netns",
                    self.ext.name(),
                ]);
                for port in [SWITCH_NODE_PORT, SWITCH_GATEWAY_PORT] {
                    switch.ip(&["link", "set", port, "master", SWITCH_BRIDGE, "up"]);
                }
            }
        }
        node.ip(&["link", "set", MACVLAN_PARENT, "up"]);
    }

    /// A pod on the cluster network: `link` with its addresses, default routes via the node.
    fn build_pod(&self, pod: &Netns, link: &str, addr4: &str, addr6: &str) {
        add_addresses(pod, link, &[&format!("{addr4}/24"), &format!("{addr6}/64")]);
        pod.ip(&["link", "set", link, "up"]);
        pod.ip(&["-4", "route", "add", "default", "via", NODE4, "dev", link]);
        pod.ip(&["-6", "route", "add", "default", "via", NODE6, "dev", link]);
    }

    fn build_ext(&self) {
        let ext = &self.ext;
        add_addresses(
            ext,
            GATEWAY_LINK,
            &[&format!("{GATEWAY4}/24"), &format!("{GATEWAY6}/64")],
        );
        ext.ip(&["link", "set", GATEWAY_LINK, "up"]);
        add_addresses(
            ext,
            "lo",
            &[
                &format!("{WEB4}/32"),
                &format!("{FALLBACK4}/32"),
                &format!("{WEB6}/128"),
                &format!("{FALLBACK6}/128"),
            ],
        );
        // Let a gratuitous ARP / unsolicited NA create a neighbour entry on the gateway, so tests
        // can see which MAC announced the egress source.
        ext.sysctl_set("net.ipv4.conf.all.arp_accept", "1");
        ext.sysctl_set(&format!("net.ipv4.conf.{GATEWAY_LINK}.arp_accept"), "1");
        let untracked_na = format!("net.ipv6.conf.{GATEWAY_LINK}.accept_untracked_na");
        if ext.has_sysctl(&untracked_na) {
            ext.sysctl_set(&untracked_na, "1");
            // The kernel honours accept_untracked_na only on a forwarding interface (RFC 9131
            // is about routers), which the gateway is.
            ext.sysctl_set(&format!("net.ipv6.conf.{GATEWAY_LINK}.forwarding"), "1");
        }
        let (source4, source6) = (ip(EGRESS_SOURCE4), ip(EGRESS_SOURCE6));
        ext.nft(&format!(
            "table inet {WEB_FIREWALL_TABLE} {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    ip daddr {{ {WEB4}, {FALLBACK4} }} meta l4proto tcp ip saddr != {source4} drop
                    ip6 daddr {{ {WEB6}, {FALLBACK6} }} meta l4proto tcp ip6 saddr != {source6} drop
                }}
            }}"
        ));
    }

    /// A veth from `node` (`node_end`) to `peer` (`peer_end`), created in one message.
    fn veth(&self, node_end: &str, peer: &Netns, peer_end: &str) {
        self.node.ip(&[
            "link",
            "add",
            node_end,
            "type",
            "veth",
            "peer",
            "name",
            peer_end,
            "netns",
            peer.name(),
        ]);
    }
}

/// Adds addresses to `link` (IPv6 ones with `nodad`).
fn add_addresses(ns: &Netns, link: &str, addrs: &[&str]) {
    for addr in addrs {
        let mut args = vec!["addr", "add", addr, "dev", link];
        if ip(addr).is_ipv6() {
            args.push("nodad");
        }
        ns.ip(&args);
    }
}
