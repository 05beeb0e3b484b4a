//! What a namespace holds, as comparable lines ([`Snapshot`]), and the before/after pair the
//! end-to-end tests compare ([`Snapshots`]).

use std::{collections::HashMap, io::ErrorKind, net::IpAddr};

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    RouteNetlinkMessage,
};
use serde_json::{Map, Value};

use crate::{netns::read_sysctl, tools::parse_json};

use crate::{Lab, Netns};

/// What "restored exactly" means for one namespace (a teardown or a rollback returns it to what
/// it was), as sorted, normalized lines:
///
/// - `link NAME {…}`: up flag, kind (with a macvlan's/ipvlan's mode), MTU, master, parent link
///   (`"(other netns)"` when the parent/peer lives elsewhere), group, alias. Not: ifindex, MAC,
///   counters, operstate.
/// - `addr DEV ADDR/LEN {…}`: global-scope addresses with their flags and protocol, without
///   lifetimes.
/// - `route -4|-6 {…}`: routes of every table except table `local`, types local, broadcast,
///   multicast and anycast, and IPv6 `fe80::/64` and `ff00::/8`; dst, gateway/via, dev, table,
///   protocol, scope, metric, type, prefsrc, nexthops, the `onlink` flag.
/// - `rule -4|-6 {…}`: policy rules.
/// - `nft …`: the nftables ruleset without handles and metainfo; rules keep their position in
///   their chain.
/// - `sysctl KEY = VALUE`: `net.ipv4.ip_forward`; `forwarding` (IPv4 and IPv6), `arp_notify`,
///   `ndisc_notify` and `accept_ra` of `all`, `default` and every link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    lines: Vec<String>,
}

impl Snapshot {
    /// Reads the state of `ns` (through `ip -j -d`, `nft -j` and `/proc/sys` inside it).
    pub fn take(ns: &Netns) -> Snapshot {
        let links = ns.ip_json(&["-d", "link", "show"]);
        let links = links.as_array().map(Vec::as_slice).unwrap_or_default();
        let mut lines: Vec<String> = links.iter().map(link_line).collect();
        let protocols = address_protocols(ns);
        let addresses = ns.ip_json(&["addr", "show"]);
        lines.extend(
            addresses
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|link| address_lines(link, &protocols)),
        );
        for family in ["-4", "-6"] {
            let routes = ns.ip_json(&[family, "route", "show", "table", "all"]);
            lines.extend(
                routes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(normalized_route)
                    .map(|route| format!("route {family} {route}")),
            );
            let rules = ns.ip_json(&[family, "rule", "show"]);
            lines.extend(
                rules
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|rule| format!("rule {family} {rule}")),
            );
        }
        lines.extend(nft_lines(&parse_json(
            &ns.exec(&["nft", "-j", "list", "ruleset"]),
            "nft -j list ruleset",
        )));
        let names: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
        lines.extend(sysctl_lines(ns, &names));
        lines.sort();
        Snapshot { lines }
    }

    /// The normalized lines, sorted.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// What differs from `other`: `- line` for what only `self` has, `+ line` for what only
    /// `other` has, one per line; empty when the snapshots are equal.
    pub fn diff(&self, other: &Snapshot) -> String {
        let (mut a, mut b) = (self.lines.iter().peekable(), other.lines.iter().peekable());
        let mut out = String::new();
        loop {
            let (sign, line) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), Some(y)) if x == y => {
                    a.next();
                    b.next();
                    continue;
                }
                (Some(x), Some(y)) if x < y => ('-', a.next()),
                (Some(_), None) => ('-', a.next()),
                _ => ('+', b.next()),
            };
            out.push_str(&format!("{sign} {}\n", line.expect("peeked")));
        }
        out
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lines.iter().try_for_each(|line| writeln!(f, "{line}"))
    }
}

/// Copies the listed keys of `from` that are present into a new object.
fn pick(from: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|&k| from.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect()
}

fn link_line(link: &Value) -> String {
    let mut out = pick(link, &["mtu", "master", "group", "ifalias"]);
    let up = link["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "UP"));
    out.insert("up".into(), up.into());
    if let Some(kind) = link["linkinfo"].get("info_kind") {
        out.insert("kind".into(), kind.clone());
    }
    if let Some(mode) = link["linkinfo"]["info_data"].get("mode") {
        out.insert("mode".into(), mode.clone());
    }
    // `link` names the parent (macvlan) or peer (veth) when it is in the same namespace; a
    // parent elsewhere is only known by ifindex and netnsid, which a snapshot must not hold.
    if let Some(parent) = link.get("link") {
        out.insert("parent".into(), parent.clone());
    } else if link.get("link_netnsid").is_some() {
        out.insert("parent".into(), "(other netns)".into());
    }
    format!(
        "link {} {}",
        link["ifname"].as_str().unwrap_or("?"),
        Value::Object(out)
    )
}

/// `IFA_PROTO` of each address, keyed by (ifindex, address, prefix length). iproute2 6.1 does not
/// show it, so it comes from an `RTM_GETADDR` dump on a socket opened inside the namespace.
type AddressProtocols = HashMap<(u64, IpAddr, u8), u8>;

fn address_lines(link: &Value, protocols: &AddressProtocols) -> Vec<String> {
    let dev = link["ifname"].as_str().unwrap_or("?");
    let index = link["ifindex"].as_u64().unwrap_or_default();
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|addr| addr["scope"] == "global")
        .map(|addr| {
            let local = addr["local"].as_str().unwrap_or("?");
            let prefix = addr["prefixlen"].as_u64().unwrap_or_default();
            let mut fields = addr.as_object().cloned().unwrap_or_default();
            fields.remove("valid_life_time");
            fields.remove("preferred_life_time");
            let key = local.parse().ok().map(|a| (index, a, prefix as u8));
            if let Some(protocol) = key.and_then(|k| protocols.get(&k)) {
                fields.insert("protocol".into(), (*protocol).into());
            }
            format!("addr {dev} {local}/{prefix} {}", Value::Object(fields))
        })
        .collect()
}

fn address_protocols(ns: &Netns) -> AddressProtocols {
    // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is simply taken again.
    let mut attempts = 0;
    loop {
        match dump_address_protocols(ns) {
            Err(e) if e.kind() == ErrorKind::Interrupted && attempts < 5 => attempts += 1,
            result => break result,
        }
    }
    .unwrap_or_else(|e| panic!("RTM_GETADDR dump in {}: {e}", ns.name))
}

fn dump_address_protocols(ns: &Netns) -> std::io::Result<AddressProtocols> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let mut protocols = AddressProtocols::new();
    for reply in ns.rtnetlink(request, NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewAddress(m) = reply else {
            continue;
        };
        let (mut local, mut address, mut protocol) = (None, None, None);
        for attribute in m.attributes {
            match attribute {
                AddressAttribute::Local(a) => local = Some(a),
                AddressAttribute::Address(a) => address = Some(a),
                AddressAttribute::Protocol(p) => protocol = Some(u8::from(p)),
                _ => {}
            }
        }
        // `ip` shows IFA_LOCAL as "local", or IFA_ADDRESS when there is none (IPv6).
        if let (Some(addr), Some(protocol)) = (local.or(address), protocol) {
            let key = (u64::from(m.header.index), addr, m.header.prefix_len);
            protocols.insert(key, protocol);
        }
    }
    Ok(protocols)
}

/// The route's kept fields, or `None` for a route the kernel derives.
fn normalized_route(route: &Value) -> Option<Value> {
    let kind = route["type"].as_str().unwrap_or("unicast");
    let table = route["table"].as_str().unwrap_or("main");
    let dst = route["dst"].as_str().unwrap_or("");
    if matches!(kind, "local" | "broadcast" | "multicast" | "anycast")
        || table == "local"
        || dst == "fe80::/64"
        || dst.starts_with("ff")
    {
        return None;
    }
    let mut out = pick(
        route,
        &[
            "dst", "gateway", "via", "dev", "protocol", "scope", "metric", "prefsrc", "nexthops",
            "pref",
        ],
    );
    out.insert("type".into(), kind.into());
    out.insert("table".into(), table.into());
    // Other flags (linkdown, …) follow the carrier, not the configuration.
    if route["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "onlink"))
    {
        out.insert("onlink".into(), true.into());
    }
    Some(Value::Object(out))
}

fn nft_lines(ruleset: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    // A rule's position in its chain matters; every other object is compared as a set.
    let mut position: HashMap<String, usize> = HashMap::new();
    for object in ruleset["nftables"].as_array().into_iter().flatten() {
        let Some((kind, body)) = object.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let mut body = body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("handle");
        }
        if kind == "rule" {
            let chain = ["family", "table", "chain"]
                .map(|k| body[k].as_str().unwrap_or("?"))
                .join(" ");
            let n = position.entry(chain.clone()).or_default();
            lines.push(format!("nft rule {chain} #{n:04} {body}"));
            *n += 1;
        } else {
            lines.push(format!("nft {kind} {body}"));
        }
    }
    lines
}

fn sysctl_lines(ns: &Netns, links: &[&str]) -> Vec<String> {
    // Slash form, so that a link name with a dot stays one path component.
    let mut keys = vec!["net/ipv4/ip_forward".to_owned()];
    for conf in ["all", "default"].iter().chain(links) {
        for (family, leaf) in [
            ("ipv4", "forwarding"),
            ("ipv4", "arp_notify"),
            ("ipv6", "forwarding"),
            ("ipv6", "ndisc_notify"),
            ("ipv6", "accept_ra"),
        ] {
            keys.push(format!("net/{family}/conf/{conf}/{leaf}"));
        }
    }
    let values = ns.run(|| {
        keys.iter()
            .map(|key| read_sysctl(key).unwrap_or_else(|e| format!("<{e}>")))
            .collect::<Vec<_>>()
    });
    keys.iter()
        .zip(values)
        .map(|(key, value)| format!("sysctl {} = {value}", key.replace('/', ".")))
        .collect()
}

/// The two namespaces a router touches (its own and its parent's), before and after.
pub struct Snapshots<'a> {
    lab: &'a Lab,
    router: Snapshot,
    node: Snapshot,
}

impl<'a> Snapshots<'a> {
    /// Snapshots `lab.router` and `lab.node` now.
    pub fn take(lab: &'a Lab) -> Self {
        Snapshots {
            lab,
            router: Snapshot::take(&lab.router),
            node: Snapshot::take(&lab.node),
        }
    }

    /// Panics, showing the difference, unless both namespaces are exactly as when taken.
    #[track_caller]
    pub fn assert_restored(&self, when: &str) {
        let router = Snapshot::take(&self.lab.router);
        assert!(
            self.router == router,
            "{when}: router namespace differs:\n{}",
            self.router.diff(&router)
        );
        let node = Snapshot::take(&self.lab.node);
        assert!(
            self.node == node,
            "{when}: node namespace differs:\n{}",
            self.node.diff(&node)
        );
    }
}
