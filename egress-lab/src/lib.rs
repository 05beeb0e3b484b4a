//! The egress lab: the seed's topology in throwaway network namespaces, shared by the end-to-end
//! tests, the examples and the benchmarks.
//!
//! [`Lab::new`] builds four namespaces, named `egt-<pid>-<n>-<role>` and deleted again when the
//! [`Lab`] (each [`Netns`]) is dropped, also while a test panics. Nothing here touches the
//! host's own namespace, and every address is a documentation address.
//!
//! ```text
//!  client                  node                                     router
//! +-----------------+     +----------------------------+          +--------------------------+
//! | eth0            |     | cbr0 (bridge)              |          | eth0                     |
//! |  192.0.2.3/24   +-----+ vclient  192.0.2.1/24      |          |  192.0.2.2/24            |
//! |  2001:db8:1::3  |     |          2001:db8:1::1/64  |          |  2001:db8:1::2/64        |
//! | default via     |     |          vrouter ----------+----------+ default via 192.0.2.1,   |
//! |  the node       |     |                            |          |  2001:db8:1::1           |
//! +-----------------+     | ext0 (macvlan parent,      |          | ip_forward=0             |
//!                         |  no address) - - - - - - - + - - - - -+ macvlan0: created by the |
//!                         | no forwarding, no route to |          |  router, or adopted (see |
//!                         |  198.51.100.0/24           |          |  Lab::make_sdn_macvlan)  |
//!                         +------------+---------------+          +--------------------------+
//!                                      | veth
//!                         +------------+---------------+
//!                         | gw0  203.0.113.1/24        |  ext: the external L2 segment,
//!                         |      2001:db8:2::1/64      |  its gateway and the web server
//!                         | lo   198.51.100.25, .9     |  (WebServer, any port you ask for)
//!                         |      2001:db8:3::25, ::9   |
//!                         | nft: TCP to the web        |
//!                         |  addresses only from       |
//!                         |  203.0.113.99 and          |
//!                         |  2001:db8:2::99            |
//!                         +----------------------------+
//! ```
//!
//! The client can reach the router's `eth0` but not the web server: the node neither forwards
//! nor routes to the web network, and the web server's firewall drops every source except the
//! egress sources ([`EGRESS_SOURCE4`], [`EGRESS_SOURCE6`]). The gateway accepts gratuitous ARP
//! and unsolicited neighbour advertisements, so an announced egress address shows up in its
//! neighbour table ([`Netns::neighbour_mac`]).
//!
//! [`Lab::with_switch`] puts a switch in the external segment: `ext0` and `gw0` become veths to
//! the ports of a bridge in a fifth namespace ([`Lab::switch`]), where a test drops the frames
//! of one source MAC the way a hypervisor or a switch port with port security does
//! ([`Lab::switch_drop_from`]) and attaches more hosts to the segment ([`Lab::attach_host`]).
//!
//! [`Snapshot`] records what "restored exactly" means (a teardown or a rollback returns a
//! namespace to what it was), so a test can compare a
//! namespace before a router was applied and after it was torn down.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use egress_lab::{ip, ping, Lab, Snapshot, ROUTER_ETH0_4, WEB4, WEB_PORT};
//!
//! let lab = Lab::new(); // needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)
//! let web = lab.ext.serve_http(&[WEB_PORT]);
//! let before = Snapshot::take(&lab.router);
//! assert!(ping(&lab.client, ip(ROUTER_ETH0_4)));
//! assert!(lab.client.http_get(ip(WEB4), WEB_PORT, Duration::from_secs(1)).is_err());
//! // ... apply a router in lab.router, test it, tear it down ...
//! let after = Snapshot::take(&lab.router);
//! assert!(before == after, "{}", before.diff(&after));
//! assert!(web.peers().is_empty());
//! ```

// ---------------------------------------------------------------------------------------------
// Constants of the topology
// ---------------------------------------------------------------------------------------------

/// The cluster network (node bridge, router `eth0`, client `eth0`).
pub const CLUSTER_NET4: &str = "192.0.2.0/24";
/// The IPv6 cluster network.
pub const CLUSTER_NET6: &str = "2001:db8:1::/64";
/// The external L2 segment behind the node's `ext0` (gateway, egress sources).
pub const EXTERNAL_NET4: &str = "203.0.113.0/24";
/// The IPv6 external L2 segment.
pub const EXTERNAL_NET6: &str = "2001:db8:2::/64";
/// The network of the web server, reachable only through [`GATEWAY4`].
pub const WEB_NET4: &str = "198.51.100.0/24";
/// The IPv6 network of the web server, reachable only through [`GATEWAY6`].
pub const WEB_NET6: &str = "2001:db8:3::/64";

/// The node's address on the cluster bridge: the default gateway of router and client.
pub const NODE4: &str = "192.0.2.1";
/// The node's IPv6 address on the cluster bridge.
pub const NODE6: &str = "2001:db8:1::1";
/// The router's `eth0` address (the "service address" the client talks to).
pub const ROUTER_ETH0_4: &str = "192.0.2.2";
/// The router's IPv6 `eth0` address.
pub const ROUTER_ETH0_6: &str = "2001:db8:1::2";
/// The client's `eth0` address.
pub const CLIENT4: &str = "192.0.2.3";
/// The client's IPv6 `eth0` address.
pub const CLIENT6: &str = "2001:db8:1::3";

/// The egress source the web server accepts (with prefix, as a router spec's `sources` takes it).
pub const EGRESS_SOURCE4: &str = "203.0.113.99/24";
/// The IPv6 egress source the web server accepts.
pub const EGRESS_SOURCE6: &str = "2001:db8:2::99/64";
/// The gateway on the external segment (`gw0` in `ext`).
pub const GATEWAY4: &str = "203.0.113.1";
/// The IPv6 gateway on the external segment.
pub const GATEWAY6: &str = "2001:db8:2::1";
/// The web server's main address (a router's redirect destination).
pub const WEB4: &str = "198.51.100.25";
/// The web server's second address (a router's fallback destination).
pub const FALLBACK4: &str = "198.51.100.9";
/// The web server's main IPv6 address.
pub const WEB6: &str = "2001:db8:3::25";
/// The web server's second IPv6 address.
pub const FALLBACK6: &str = "2001:db8:3::9";

/// The port the web server is meant to listen on (a redirect's `to_port`).
pub const WEB_PORT: u16 = 8080;
/// The port the client asks the router for (a redirect's `port`).
pub const SERVICE_PORT: u16 = 80;

/// The cluster bridge in `node`.
pub const NODE_BRIDGE: &str = "cbr0";
/// The macvlan parent in `node` (a veth whose peer is [`GATEWAY_LINK`] in `ext`).
pub const MACVLAN_PARENT: &str = "ext0";
/// The node's end of the router's veth, a port of [`NODE_BRIDGE`].
pub const NODE_ROUTER_PORT: &str = "vrouter";
/// The node's end of the client's veth, a port of [`NODE_BRIDGE`].
pub const NODE_CLIENT_PORT: &str = "vclient";
/// The router's link on the cluster network (a router spec's `internal`).
pub const ROUTER_INTERNAL: &str = "eth0";
/// The client's link on the cluster network.
pub const CLIENT_LINK: &str = "eth0";
/// The gateway's link in `ext`.
pub const GATEWAY_LINK: &str = "gw0";
/// The name OpenShift's SDN gives the macvlan it moves into the router (legacy "adopt" mode).
pub const SDN_MACVLAN: &str = "macvlan0";

/// The nftables table in `ext` holding the web server's firewall.
pub const WEB_FIREWALL_TABLE: &str = "egt_web";

/// The bridge of the external segment's switch ([`Lab::with_switch`]), in [`Lab::switch`].
pub const SWITCH_BRIDGE: &str = "br0";
/// The switch's port towards the node's [`MACVLAN_PARENT`].
pub const SWITCH_NODE_PORT: &str = "p-node";
/// The switch's port towards the gateway's [`GATEWAY_LINK`].
pub const SWITCH_GATEWAY_PORT: &str = "p-gw";
/// The nftables table (family `bridge`) in the switch that drops frames by source MAC
/// ([`Lab::switch_drop_from`]).
pub const SWITCH_FILTER_TABLE: &str = "egt_switch";

/// Parses an address constant of this crate, ignoring a `/prefix` (so it also takes
/// [`EGRESS_SOURCE4`]). Panics on anything that is not an address.
pub fn ip(addr: &str) -> IpAddr {
    let bare = addr.split_once('/').map_or(addr, |(a, _)| a);
    bare.parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not an IP address: {e}"))
}

use std::net::IpAddr;

mod binary;
pub mod ha;
mod load;
mod netns;
mod random;
mod snapshot;
pub mod takeover;
mod tools;
mod topology;
mod web;

pub use binary::{cni_binary, router_binary, workspace_binary};
pub use load::{while_held, SLOW_BYTE_EVERY};
pub use netns::{leftover_namespaces, ping, Netns};
pub use random::{seed, Rng};
pub use snapshot::{Snapshot, Snapshots};
pub use tools::root_links;
pub use topology::Lab;
pub use web::WebServer;

/// A watch of `spec`'s router ([`egress_core::watch`]), its events sent to the returned
/// channel.
pub fn watched(
    spec: &egress_core::RouterSpec,
) -> (
    egress_core::Watcher,
    std::sync::mpsc::Receiver<egress_core::WatchEvent>,
) {
    let (tx, events) = std::sync::mpsc::channel();
    let watcher = egress_core::watch(spec, move |e| {
        let _ = tx.send(e.clone());
    })
    .expect("a watch of the router");
    (watcher, events)
}
