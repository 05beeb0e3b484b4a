//! nftables over netlink: the router's NAT, forward filter and input filter ([`Ruleset`]),
//! installed as one atomic batch, read back and compared.
//!
//! A small blocking client for `NETLINK_NETFILTER` ([`NftSocket`](crate::kernel::nft::NftSocket); a call takes about a
//! millisecond, 20 ms for 10,000 redirects; the async core calls it directly). It writes
//! exactly the messages `nft -f` (1.0.6) writes for this ruleset (only the map elements come
//! last, see `Layout::messages`), so `nft list ruleset` prints it back as written:
//!
//! ```text
//! table inet egress_x {
//!     comment "…"                                  # the crash record (objects::record)
//!     map redirect4 { type inet_proto . inet_service : ipv4_addr . inet_service; elements = … }
//!     map redirect6 { type inet_proto . inet_service : ipv6_addr . inet_service; elements = … }
//!     chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!         iifname "eth0" fib daddr type local meta l4proto tcp th dport 9100 accept comment "egress local tcp/9100"
//!         iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @redirect4 comment "egress dnat4 map"
//!         iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to 198.51.100.9 comment "egress dnat4 fallback"
//!         (the same for ipv6) }
//!     chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!         oifname "macvlan0" meta nfproto ipv4 snat ip to 203.0.113.99 comment "egress snat4"  (and ipv6) }
//!     chain forward { type filter hook forward priority filter; policy drop;
//!         ct state established,related accept comment "egress replies"
//!         iifname "eth0" oifname "macvlan0" ct status dnat accept comment "egress dnat-ed" }
//!     chain input { type filter hook input priority filter; policy drop;
//!         iifname != "macvlan0" accept comment "egress input other links"
//!         ct state established,related accept comment "egress input replies"
//!         meta l4proto icmp icmp type 3 accept comment "egress input icmp4 3"
//!         (the same for ICMP 8-12, ICMPv6 1-4 and 128-137: `cmp gte`, `cmp lte`) }
//! }
//! ```
//!
//! Maps and chains exist only when they hold something (no `redirect6` without IPv6 redirects,
//! no `prerouting` without redirects or fallback, no `postrouting` without a SNAT source); the
//! forward and input filters always exist. The input filter is what keeps the router's own
//! ports (its probes, `/metrics`) from the external network whatever address they are bound
//! to: the external link is matched by name, as the forward filter matches it, so the filter
//! holds for a link made again by a repair.
//!
//! Every change is one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN` … `END`, one `sendmsg`): the
//! kernel applies all of it or, on the first error, none of it.
//!
//! Messages are built with netlink-packet-netfilter's types and replies decoded by its parsers
//! (`socket`); the expressions are in `expr`, the ruleset as data in `layout`. The crate is
//! pinned (`=0.4.0`): its expression types and parsers are young and change shape between
//! minor versions, and `nat_same_as_nft` (tests/nat.rs) proves byte for byte what this
//! module writes with the version it was checked against.

mod change;
mod counters;
mod expr;
mod layout;
mod table;
#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use self::layout::{type_name, Layout};
pub(crate) use self::{
    change::DeleteTable,
    counters::{Count, Counters},
};
use super::{change::boxed, Current, Inverse, KernelObject, Step};
use crate::{
    drift::Drift,
    error::Result,
    spec::{LocalPort, Protocol, Redirect},
};

/// One nftables table of family `inet`, as listed by [`NftSocket::tables`](crate::kernel::nft::NftSocket::tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// Table name.
    pub name: String,
    /// The table's comment (`nft add table … { comment "…" }`), if it carries one.
    pub comment: Option<String>,
}

/// Everything the router's table holds besides its comment: what [`NftSocket::create`](crate::kernel::nft::NftSocket::create) writes
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatRules {
    /// The table (family `inet`), created with its comment and these rules in one batch by
    /// [`NftSocket::create`](crate::kernel::nft::NftSocket::create).
    pub table: String,
    /// The internal (cluster) link: DNAT applies to what arrives here.
    pub internal: String,
    /// The external link: SNAT applies to what leaves here.
    pub external: String,
    /// IPv4 SNAT source.
    pub snat4: Option<Ipv4Addr>,
    /// IPv6 SNAT source.
    pub snat6: Option<Ipv6Addr>,
    /// Port redirects; the family of `to` picks the map.
    pub redirects: Vec<Redirect>,
    /// The router's own ports: accepted at the head of `prerouting`, before any DNAT.
    pub local_ports: Vec<LocalPort>,
    /// IPv4 DNAT destination for everything else.
    pub fallback4: Option<Ipv4Addr>,
    /// IPv6 DNAT destination for everything else.
    pub fallback6: Option<Ipv6Addr>,
}

/// One element of a redirect map: `protocol . port : to . to_port`.
pub(crate) type MapElement = (Protocol, u16, IpAddr, u16);

/// What a table holds (chains with their rules, maps with their elements), in a form that
/// compares equal to [`NatRules::expected`] exactly when the kernel holds what was installed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NatState {
    /// Chains, sorted by name.
    pub chains: Vec<ChainState>,
    /// Maps and sets, sorted by name.
    pub maps: Vec<MapState>,
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    /// Chain name.
    pub name: String,
    /// `nat`, `filter`, … (base chains only).
    pub kind: Option<String>,
    /// `prerouting`, `forward`, … (base chains only).
    pub hook: Option<String>,
    /// Hook priority (base chains only).
    pub priority: Option<i32>,
    /// `accept` / `drop` (base chains only).
    pub policy: Option<String>,
    /// The rules, in evaluation order.
    pub rules: Vec<RuleState>,
}

/// A rule: its comment and its expressions, in `nft --debug=netlink` notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleState {
    /// The rule's comment.
    pub comment: Option<String>,
    /// The expressions, e.g. `meta load iifname => reg 1`.
    pub exprs: Vec<String>,
}

/// A map (or set) and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapState {
    /// Map name.
    pub name: String,
    /// nft key type id (`inet_proto . inet_service`).
    pub key_type: u32,
    /// nft data type id (`ipv4_addr . inet_service`, …).
    pub data_type: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Elements decoded as redirects, sorted.
    pub elements: Vec<MapElement>,
    /// Elements of a traffic set (local ports), sorted.
    pub ports: Vec<u16>,
    /// Elements that do not decode as redirects, as `key-hex : data-hex`, sorted.
    pub other_elements: Vec<String>,
}

impl NatRules {
    /// What [`NftSocket::read`](crate::kernel::nft::NftSocket::read) returns right after [`NftSocket::create`](crate::kernel::nft::NftSocket::create): drift is
    /// `expected() != read()`.
    pub(crate) fn expected(&self) -> NatState {
        Layout::of(self).state()
    }

    /// One line for the dry-run plan, close to nft syntax.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        let fallbacks: Vec<String> = self
            .fallback4
            .map(|a| a.to_string())
            .into_iter()
            .chain(self.fallback6.map(|a| a.to_string()))
            .collect();
        let n = self.redirects.len();
        if n > 0 {
            let mut dnat = format!("dnat {n} redirect{} via map", if n == 1 { "" } else { "s" });
            if !fallbacks.is_empty() {
                let _ = write!(dnat, " + fallback {}", fallbacks.join(" and "));
            }
            parts.push(dnat);
        } else if !fallbacks.is_empty() {
            parts.push(format!("dnat to fallback {}", fallbacks.join(" and ")));
        }
        if !parts.is_empty() && !self.local_ports.is_empty() {
            let ports: Vec<String> = self.local_ports.iter().map(ToString::to_string).collect();
            parts.push(format!("local ports {} accepted", ports.join(", ")));
        }
        let sources: Vec<String> = self
            .snat4
            .map(|a| a.to_string())
            .into_iter()
            .chain(self.snat6.map(|a| a.to_string()))
            .collect();
        if !sources.is_empty() {
            parts.push(format!(
                "snat to {} on {}",
                sources.join(" and "),
                self.external
            ));
        }
        parts.push("forward filter (policy drop)".to_string());
        parts.push(format!(
            "input filter on {} (replies, ICMP errors, ping, neighbour discovery)",
            self.external
        ));
        format!("nft add rules to inet {}: {}", self.table, parts.join(", "))
    }
}

/// What differs between the expected state and what the kernel holds (`None`: no table), for
/// a drift report.
pub(crate) fn describe_difference(want: &NatState, have: Option<&NatState>) -> String {
    match have {
        None => "the table is missing".to_string(),
        Some(have) => {
            let lines = want.diff(have);
            if lines.is_empty() {
                "no difference".to_string()
            } else {
                lines.join("; ")
            }
        }
    }
}

impl NatState {
    /// The state as text, one object per line (maps with their elements, chains with their
    /// rules), for inspection.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.maps {
            out.push(format!(
                "map {} {{ type {} : {}; flags {:#x}; {} elements }}",
                m.name,
                type_name(m.key_type),
                type_name(m.data_type),
                m.flags,
                m.elements.len() + m.ports.len() + m.other_elements.len()
            ));
            for e in &m.elements {
                out.push(format!("  {} . {} : {} . {}", e.0, e.1, e.2, e.3));
            }
            for p in &m.ports {
                out.push(format!("  {p}"));
            }
            for e in &m.other_elements {
                out.push(format!("  {e}"));
            }
        }
        for c in &self.chains {
            match (&c.kind, &c.hook, c.priority, &c.policy) {
                (Some(kind), Some(hook), Some(priority), Some(policy)) => out.push(format!(
                    "chain {} {{ type {kind} hook {hook} priority {priority}; policy {policy}; }}",
                    c.name
                )),
                _ => out.push(format!("chain {} {{ }}", c.name)),
            }
            for r in &c.rules {
                let mut line = format!("  {}", r.exprs.join(" "));
                if let Some(comment) = &r.comment {
                    let _ = write!(line, " comment {comment:?}");
                }
                out.push(line);
            }
        }
        out
    }

    /// Human-readable differences from `self` (expected) to `actual`, one line each; empty
    /// when they are equal.
    pub(crate) fn diff(&self, actual: &NatState) -> Vec<String> {
        let mut out = Vec::new();
        for want in &self.chains {
            match actual.chains.iter().find(|c| c.name == want.name) {
                None => out.push(format!("chain {} is missing", want.name)),
                Some(have) => diff_chain(want, have, &mut out),
            }
        }
        for have in &actual.chains {
            if !self.chains.iter().any(|c| c.name == have.name) {
                out.push(format!("chain {} is not ours", have.name));
            }
        }
        for want in &self.maps {
            match actual.maps.iter().find(|m| m.name == want.name) {
                None => out.push(format!("map {} is missing", want.name)),
                Some(have) => diff_map(want, have, &mut out),
            }
        }
        for have in &actual.maps {
            if !self.maps.iter().any(|m| m.name == have.name) {
                out.push(format!("map {} is not ours", have.name));
            }
        }
        out
    }
}

fn diff_chain(want: &ChainState, have: &ChainState, out: &mut Vec<String>) {
    let header = |c: &ChainState| {
        format!(
            "type {} hook {} priority {} policy {}",
            c.kind.as_deref().unwrap_or("-"),
            c.hook.as_deref().unwrap_or("-"),
            c.priority.map_or("-".to_string(), |p| p.to_string()),
            c.policy.as_deref().unwrap_or("-"),
        )
    };
    if header(want) != header(have) {
        out.push(format!(
            "chain {}: {} instead of {}",
            want.name,
            header(have),
            header(want)
        ));
    }
    if want.rules != have.rules {
        let show = |rules: &[RuleState]| {
            rules
                .iter()
                .map(|r| format!("{:?}", r.comment.as_deref().unwrap_or("(no comment)")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let changed: Vec<String> = want
            .rules
            .iter()
            .zip(&have.rules)
            .enumerate()
            .filter(|(_, (w, h))| w != h)
            .map(|(i, (w, h))| {
                format!(
                    "rule {} is [{}] instead of [{}]",
                    i + 1,
                    h.exprs.join(" "),
                    w.exprs.join(" ")
                )
            })
            .collect();
        out.push(format!(
            "chain {}: rules {} instead of {}{}",
            want.name,
            show(&have.rules),
            show(&want.rules),
            if changed.is_empty() {
                String::new()
            } else {
                format!("; {}", changed.join("; "))
            }
        ));
    }
}

fn diff_map(want: &MapState, have: &MapState, out: &mut Vec<String>) {
    if (want.key_type, want.data_type, want.flags) != (have.key_type, have.data_type, have.flags) {
        out.push(format!(
            "map {}: key type {:#x}, data type {:#x}, flags {:#x} instead of {:#x}, {:#x}, {:#x}",
            want.name,
            have.key_type,
            have.data_type,
            have.flags,
            want.key_type,
            want.data_type,
            want.flags
        ));
    }
    let show = |e: &MapElement| format!("{} . {} : {} . {}", e.0, e.1, e.2, e.3);
    let missing: Vec<String> = want
        .elements
        .iter()
        .filter(|e| have.elements.binary_search(e).is_err())
        .map(show)
        .collect();
    let extra: Vec<String> = have
        .elements
        .iter()
        .filter(|e| want.elements.binary_search(e).is_err())
        .map(show)
        .chain(have.other_elements.iter().cloned())
        .collect();
    let sample = |v: &[String]| {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            let _ = write!(s, ", … ({} in all)", v.len());
        }
        s
    };
    if want.ports != have.ports {
        out.push(format!(
            "set {}: ports {:?} instead of {:?}",
            want.name, have.ports, want.ports
        ));
    }
    if !missing.is_empty() {
        out.push(format!("map {}: missing {}", want.name, sample(&missing)));
    }
    if !extra.is_empty() {
        out.push(format!("map {}: unexpected {}", want.name, sample(&extra)));
    }
}

// ---------------------------------------------------------------------------------------------
// The ruleset, as data
// ---------------------------------------------------------------------------------------------

/// The traffic set of `protocol` in one family: its elements (local ports) count the packets
/// and bytes of the connections redirected from them, both directions.
pub(crate) fn traffic_set(protocol: Protocol, v6: bool) -> String {
    format!("traffic_{protocol}{}", if v6 { 6 } else { 4 })
}

/// The rule that counts every DNAT-ed packet of a family.
pub(crate) fn dnat_traffic_rule(v6: bool) -> String {
    format!("egress dnat{} traffic", if v6 { 6 } else { 4 })
}

/// The rule that counts what leaves through the external link in a family (SNAT-ed).
pub(crate) fn snat_traffic_rule(v6: bool) -> String {
    format!("egress snat{} traffic", if v6 { 6 } else { 4 })
}

/// The fallback's DNAT rule of a family (it counts the connections it sends).
pub(crate) fn fallback_rule(v6: bool) -> String {
    format!("egress dnat{} fallback", if v6 { 6 } else { 4 })
}

/// The rule that keeps one of the router's own ports from every DNAT.
pub(crate) fn local_port_rule(local: &LocalPort) -> String {
    format!("egress local {local}")
}

/// The SNAT rule of a family (its address is the source).
pub(crate) fn snat_rule(v6: bool) -> String {
    format!("egress snat{}", if v6 { 6 } else { 4 })
}

/// The redirect map of a family.
pub(crate) fn redirect_map(v6: bool) -> &'static str {
    if v6 {
        "redirect6"
    } else {
        "redirect4"
    }
}

/// The router's table: its NAT, forward and input filters, and its comment, which holds the
/// crash record ([`super::record`]). Read back by name, its ruleset is what the kernel holds
/// (`rules` is `None`): only that the table is there, with the record in its comment, is
/// compared.
#[derive(Debug, Clone)]
pub(crate) struct Ruleset {
    /// The table (family `inet`).
    pub table: String,
    /// The rules (`None`: as the kernel holds them).
    pub rules: Option<NatRules>,
    /// What the crash record in the comment is made of.
    pub record: super::record::RecordSpec,
}

impl KernelObject for Ruleset {
    fn render(&self) -> String {
        match &self.rules {
            Some(rules) => rules.summary(),
            None => format!(
                "nft list table inet {} (as the kernel holds it)",
                self.table
            ),
        }
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let table = &self.table;
        let Some(have) = &now.table else {
            drift.push(Drift::NatChanged {
                table: table.clone(),
                detail: match self.rules {
                    Some(_) => "the table is missing (and with it the crash record in its comment)",
                    None => "the table is missing (and with it the redirects and the fallback)",
                }
                .into(),
            });
            return;
        };
        let existing = self.record.existing(now);
        if existing.is_some() && !self.comment_holds(now, existing.as_ref()) {
            drift.push(Drift::JournalDamaged {
                store: "table comment".into(),
                detail: format!(
                    "the comment of table inet {table} does not hold the router's record"
                ),
            });
        }
        let Some(rules) = &self.rules else { return };
        let want = rules.expected();
        if *have != want {
            drift.push(Drift::NatChanged {
                table: table.clone(),
                detail: describe_difference(&want, Some(have)),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let table = self.table.clone();
        let Some(rules) = &self.rules else {
            return Ok(());
        };
        let summary = rules.summary();
        match &now.table {
            None => steps.push(Step::CreateTable { table, summary }),
            Some(_) if !self.comment_holds(now, Some(&self.record.wanted(now, 0)?)) => {
                steps.push(Step::RewriteJournal { table })
            }
            Some(have) if *have != rules.expected() => {
                steps.push(Step::ReplaceRuleset { table, summary })
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        if now.has_table(&self.table) {
            inverse.undo(boxed(DeleteTable {
                table: self.table.clone(),
            }));
        }
    }
}

impl Ruleset {
    /// Whether the table's comment holds `record`.
    fn comment_holds(&self, now: &Current, record: Option<&super::record::Record>) -> bool {
        let comment = now
            .comment_of(&self.table)
            .and_then(super::record::Record::decode);
        comment.as_ref() == record
    }
}
