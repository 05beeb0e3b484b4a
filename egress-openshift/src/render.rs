//! `egress-router render`: OpenShift 4's `EgressRouter` object
//! (`network.operator.openshift.io/v1`) as the Kubernetes manifests that run it with
//! egress-cni.
//!
//! OpenShift's cluster network operator renders an EgressRouter for its own plugin: it uses the
//! first address only, never passes `fallbackIP` on, and names what it makes with fixed names
//! (a second object in the same namespace overwrites the first). [`render`] reads the same
//! object (YAML or JSON) and returns, all named after the object:
//!
//! - a `NetworkAttachmentDefinition` whose `config` is the egress-cni configuration
//!   (docs/cni.md) of **every** address, rule and the fallback;
//! - a `Deployment`: one replica attached to that network (a pause container: the router is
//!   the pod's network namespace), or with [`RenderOptions::ha`] the HA pair of
//!   `deploy/kubernetes/egress-router-ha.yaml` — two replicas on different nodes, each router a
//!   standby until the keepalived sidecar (a `ConfigMap` holds its configuration) elects it and
//!   `egress-router keepalived`, following keepalived's notify FIFO, promotes it; ready only
//!   while active, so that the Service sends to the active one;
//! - a `Service`: the rules' ports; headless (any port, to the pod's address) when there are
//!   no rules, only a fallback.
//!
//! The object becomes the owner of each (`ownerReferences`: deleting the EgressRouter deletes
//! them) when its uid is known: `metadata.uid` (as `kubectl get egressrouter NAME -o yaml`
//! prints it) or [`RenderOptions::owner_uid`]; offline, without either, there is no owner
//! (Kubernetes needs the uid) and [`Rendered::notes`] says so.
//!
//! Validation reports every invalid field at once, named by its path in the object
//! (`spec.redirect.redirectRules[1].port`): first the object's shape (the CRD's types, enums
//! and required fields, unknown fields refused), then everything egress-core checks in a
//! router spec (addresses, families, ports, duplicate rules), its field names mapped back to
//! the object's.
//!
//! ```
//! use egress_openshift::render::{render, RenderOptions};
//!
//! let object = r#"
//! apiVersion: network.operator.openshift.io/v1
//! kind: EgressRouter
//! metadata: {name: egress-1, namespace: egress}
//! spec:
//!   addresses: [{ip: 203.0.113.99/24, gateway: 203.0.113.1}]
//!   mode: Redirect
//!   networkInterface: {macvlan: {mode: Bridge, master: ens4}}
//!   redirect:
//!     redirectRules: [{destinationIP: 198.51.100.25, port: 80, protocol: TCP, targetPort: 8080}]
//!     fallbackIP: 198.51.100.9
//! "#;
//! let rendered = render(object, &RenderOptions::default())?;
//! let kinds: Vec<&str> = rendered.documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
//! assert_eq!(kinds, ["NetworkAttachmentDefinition", "Deployment", "Service"]);
//! print!("{}", rendered.to_yaml());
//!
//! let bad = object.replace("port: 80", "port: 0").replace("mode: Bridge", "mode: bridge");
//! let e = render(&bad, &RenderOptions::default()).unwrap_err();
//! let paths: Vec<&str> = e.fields.iter().map(|f| f.field.as_str()).collect();
//! assert_eq!(paths, ["spec.networkInterface.macvlan.mode", "spec.redirect.redirectRules[0].port"]);
//! # Ok::<(), egress_openshift::render::RenderError>(())
//! ```

use std::{collections::BTreeSet, fmt, net::IpAddr};

use egress_core::{InvalidField, RouterSpec};
use serde_json::{json, Map, Value};

/// The API version of the object [`render`] reads.
pub const API_VERSION: &str = "network.operator.openshift.io/v1";
/// Its kind.
pub const KIND: &str = "EgressRouter";
/// The router's name inside an HA pod (egress-cni's `routerName`): what keepalived's FIFO
/// follower (`egress-router keepalived`) and the readiness probe name.
pub const HA_ROUTER_NAME: &str = "egress-router";
/// The image of the single replica's only container (the router is the pod's namespace).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// The HA sidecar's image (scripts/package.sh builds it): keepalived, conntrackd and
/// egress-router.
pub const KEEPALIVED_IMAGE: &str = concat!(
    "registry.example/egress-router-keepalived:",
    env!("CARGO_PKG_VERSION")
);
/// The virtual IP keepalived requires of a VRRP instance, on the HA pod's loopback: a
/// documentation address nothing routes to (clients use the Service).
pub const KEEPALIVED_VIP: &str = "192.0.2.254/32";
/// Where keepalived makes its notify FIFO in an HA pod: an `emptyDir` volume (keepalived
/// creates the FIFO in an existing directory, and none exists there in the image).
pub const HA_FIFO_DIR: &str = "/run/keepalived";
/// VRRP's advertisement interval in the HA pair (seconds): over a pod network 100 ms, five
/// times docs/ha.md's bare-metal 20 ms, so that a busy node's scheduling does not cost the
/// master its role.
pub const HA_ADVERT_INT: &str = "0.1";

/// What to render besides the object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// The HA pair (two replicas, keepalived) instead of one replica.
    pub ha: bool,
    /// The EgressRouter's uid, for `ownerReferences`, when the object does not carry one in
    /// `metadata.uid` (`kubectl get egressrouter NAME -o jsonpath='{.metadata.uid}'`).
    pub owner_uid: Option<String>,
    /// HA only: the routers share a stable MAC, the VRRP virtual MAC `00:00:5e:00:01:VRID`
    /// (docs/ha.md): the gateway's ARP entry survives a failover.
    pub stable_mac: bool,
}

/// The manifests of one EgressRouter.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The Kubernetes objects, in the order to apply them.
    pub documents: Vec<Value>,
    /// What the user should know about the result (no owner, …): for stderr, not part of
    /// the manifests.
    pub notes: Vec<String>,
}

impl Rendered {
    /// The documents as one YAML stream (`---` between them), ready for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> String {
        self.documents
            .iter()
            .map(|d| serde_norway::to_string(d).expect("JSON values always serialize"))
            .collect::<Vec<_>>()
            .join("---\n")
    }
}

/// An object [`render`] cannot run: every invalid field, with its path in the object
/// (`spec.addresses[0].ip`), the value given and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// Every invalid field, in the order the object lists them (its shape first, then what
    /// the router spec's validation found).
    pub fields: Vec<InvalidField>,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.fields.len();
        writeln!(
            f,
            "the EgressRouter has {n} invalid field{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for field in &self.fields {
            writeln!(
                f,
                "  {}: `{}`: {}",
                field.field, field.value, field.expected
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for RenderError {}

/// Reads one EgressRouter object (YAML or JSON: JSON is YAML) and renders its manifests.
pub fn render(input: &str, options: &RenderOptions) -> Result<Rendered, RenderError> {
    let value: Value = serde_norway::from_str(input).map_err(|e| RenderError {
        fields: vec![invalid(
            "(input)",
            clip(input),
            format!("one EgressRouter object in YAML or JSON ({e})"),
        )],
    })?;
    let mut problems = Problems::default();
    let object = EgressRouter::read(&value, &mut problems);
    if let Some(o) = &object {
        // Egress-core's validation of the router the well-formed part describes: its
        // problems join the shape's, so that every invalid field is named at once.
        o.check_spec(&mut problems);
    }
    match object {
        Some(o) if problems.0.is_empty() => Ok(o.manifests(options)),
        _ => Err(RenderError { fields: problems.0 }),
    }
}

// ---------------------------------------------------------------------------------------------
// The object, read and checked
// ---------------------------------------------------------------------------------------------

/// Invalid fields found so far.
#[derive(Default)]
struct Problems(Vec<InvalidField>);

impl Problems {
    fn add(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) {
        self.0.push(invalid(field, value, expected));
    }
}

fn invalid(
    field: impl Into<String>,
    value: impl fmt::Display,
    expected: impl Into<String>,
) -> InvalidField {
    InvalidField {
        field: field.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A value for a message: a string as it is, anything else as JSON, at most 80 characters.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => clip(s),
        other => clip(&other.to_string()),
    }
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `v` as a mapping with only `known` keys (each other key is reported), or `None` (reported)
/// when it is not one.
fn mapping<'a>(
    v: &'a Value,
    path: &str,
    known: &[&str],
    what: &str,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    let Value::Object(map) = v else {
        let at = if path.is_empty() { "(root)" } else { path };
        problems.add(at, shown(v), format!("an object: {what}"));
        return None;
    };
    for (key, value) in map {
        if !known.contains(&key.as_str()) {
            problems.add(
                join(path, key),
                shown(value),
                format!("no such field (the fields here are {})", known.join(", ")),
            );
        }
    }
    Some(map)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A string field: `None` when absent; reported when not a string (or empty and `required`).
fn string(
    map: &Map<String, Value>,
    path: &str,
    key: &str,
    required: Option<&str>,
    problems: &mut Problems,
) -> Option<String> {
    let field = join(path, key);
    match map.get(key) {
        None | Some(Value::Null) => {
            if let Some(what) = required {
                problems.add(field, "(missing)", format!("required: {what}"));
            }
            None
        }
        Some(Value::String(s)) if s.is_empty() && required.is_some() => {
            problems.add(
                field,
                "",
                format!("required: {}", required.unwrap_or_default()),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            problems.add(field, shown(v), "a string");
            None
        }
    }
}

/// A port field as the CRD types it (an integer): `None` when absent or reported. Its range
/// is egress-core's to check.
fn port(map: &Map<String, Value>, path: &str, key: &str, problems: &mut Problems) -> Option<u64> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(v) => {
            problems.add(join(path, key), shown(v), "an integer from 1 to 65535");
            None
        }
    }
}

/// `metadata.name` and `namespace`: the Service is named after the object, so its name must
/// be a DNS-1035 label (what a Service name is); a namespace is a DNS-1123 label.
fn dns_label(s: &str, first_letter: bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && (b[0].is_ascii_lowercase() || (!first_letter && b[0].is_ascii_digit()))
        && b[b.len() - 1] != b'-'
}

/// `spec.networkInterface.macvlan.mode`, the CRD's enum, and egress-cni's spelling of it.
const MACVLAN_MODES: [(&str, &str); 4] = [
    ("Bridge", "bridge"),
    ("Private", "private"),
    ("VEPA", "vepa"),
    ("Passthru", "passthru"),
];
/// `redirectRules[].protocol`, the CRD's enum.
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    ip: String,
    gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    destination_ip: String,
    port: u64,
    protocol: &'static str,
    target_port: Option<u64>,
}

/// Rules with their index in the object.
type Rules = Vec<(usize, Rule)>;

/// An EgressRouter as far as its shape is valid: each address and rule with its index in the
/// object (those of a broken shape left out), placeholders where a field is broken (the
/// problems say so, and nothing is rendered then).
#[derive(Debug, Clone, PartialEq, Eq)]
struct EgressRouter {
    name: String,
    namespace: Option<String>,
    uid: Option<String>,
    addresses: Vec<(usize, Address)>,
    /// egress-cni's spelling (`bridge`).
    mode: &'static str,
    master: Option<String>,
    rules: Rules,
    /// Rules whose protocol is invalid, with a placeholder: their other fields are checked one
    /// by one.
    unsure_rules: Rules,
    fallback: Option<String>,
}

impl EgressRouter {
    /// The object's shape, against the CRD: `None` when it is too broken to go on (every
    /// problem is in `problems`).
    fn read(v: &Value, problems: &mut Problems) -> Option<EgressRouter> {
        let top = mapping(
            v,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            "an EgressRouter object",
            problems,
        )?;
        let api = string(top, "", "apiVersion", Some(API_VERSION), problems);
        if api.as_deref().is_some_and(|a| a != API_VERSION) {
            problems.add("apiVersion", api.unwrap_or_default(), API_VERSION);
        }
        let kind = string(top, "", "kind", Some(KIND), problems);
        if kind.as_deref().is_some_and(|k| k != KIND) {
            problems.add("kind", kind.unwrap_or_default(), KIND);
        }

        // metadata: whatever `kubectl get -o yaml` prints is fine; name, namespace and uid are
        // read.
        let (mut name, mut namespace, mut uid) = (None, None, None);
        match top.get("metadata") {
            Some(Value::Object(meta)) => {
                name = string(
                    meta,
                    "metadata",
                    "name",
                    Some("the object's name"),
                    problems,
                );
                if let Some(n) = name.as_deref().filter(|n| !dns_label(n, true)) {
                    problems.add(
                        "metadata.name",
                        n,
                        "a DNS-1035 label, as the Service named after it must be: at most 63 \
                         lowercase letters, digits and '-', starting with a letter, not ending \
                         with '-'",
                    );
                }
                namespace = string(meta, "metadata", "namespace", None, problems);
                if let Some(n) = namespace.as_deref().filter(|n| !dns_label(n, false)) {
                    problems.add(
                        "metadata.namespace",
                        n,
                        "a DNS-1123 label: at most 63 lowercase letters, digits and '-'",
                    );
                }
                uid = string(meta, "metadata", "uid", None, problems);
            }
            Some(other) => problems.add("metadata", shown(other), "an object with the name"),
            None => problems.add("metadata", "(missing)", "required: an object with the name"),
        }

        let Some(spec) = top.get("spec") else {
            problems.add(
                "spec",
                "(missing)",
                "required: the egress router's specification",
            );
            return None;
        };
        let spec = mapping(
            spec,
            "spec",
            &["addresses", "mode", "networkInterface", "redirect"],
            "the egress router's specification",
            problems,
        )?;
        let addresses = Self::addresses(spec.get("addresses"), problems);
        match spec.get("mode") {
            // The CRD's default.
            None => {}
            Some(Value::String(m)) if m == "Redirect" => {}
            Some(v) => problems.add("spec.mode", shown(v), "Redirect (the only mode)"),
        }
        let (mode, master) = Self::interface(spec.get("networkInterface"), problems);
        let (rules, unsure_rules, fallback) = Self::redirect(spec.get("redirect"), problems);
        Some(EgressRouter {
            name: name.unwrap_or_default(),
            namespace,
            uid,
            addresses,
            mode: mode.unwrap_or("bridge"),
            master,
            rules,
            unsure_rules,
            fallback,
        })
    }

    fn addresses(v: Option<&Value>, problems: &mut Problems) -> Vec<(usize, Address)> {
        const WHAT: &str = "a list of {ip, gateway}: the egress addresses (ADDR/PREFIX)";
        let items = match v {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(v @ Value::Array(_)) => {
                problems.add("spec.addresses", shown(v), format!("at least one: {WHAT}"));
                return Vec::new();
            }
            Some(v) => {
                problems.add("spec.addresses", shown(v), WHAT);
                return Vec::new();
            }
            None => {
                problems.add("spec.addresses", "(missing)", format!("required: {WHAT}"));
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let path = format!("spec.addresses[{i}]");
                let map = mapping(item, &path, &["ip", "gateway"], "{ip, gateway}", problems)?;
                let ip = string(map, &path, "ip", Some("the address, ADDR/PREFIX"), problems);
                let gateway = string(map, &path, "gateway", None, problems);
                Some((i, Address { ip: ip?, gateway }))
            })
            .collect()
    }

    fn interface(
        v: Option<&Value>,
        problems: &mut Problems,
    ) -> (Option<&'static str>, Option<String>) {
        // The CRD's default: {macvlan: {mode: Bridge}}.
        let Some(v) = v else {
            return (Some("bridge"), None);
        };
        let Some(ni) = mapping(
            v,
            "spec.networkInterface",
            &["macvlan"],
            "{macvlan: {mode, master}}",
            problems,
        ) else {
            return (None, None);
        };
        let Some(macvlan) = ni.get("macvlan") else {
            problems.add(
                "spec.networkInterface.macvlan",
                "(missing)",
                "required: {mode, master} (macvlan is the only interface type)",
            );
            return (None, None);
        };
        let path = "spec.networkInterface.macvlan";
        let Some(m) = mapping(
            macvlan,
            path,
            &["mode", "master"],
            "{mode, master}",
            problems,
        ) else {
            return (None, None);
        };
        let enumerated = MACVLAN_MODES.map(|(crd, _)| crd).join(", ");
        let mode = match m.get("mode") {
            None => Some("bridge"),
            Some(Value::String(s)) => {
                let found = MACVLAN_MODES
                    .iter()
                    .find(|(crd, _)| crd == s)
                    .map(|(_, cni)| *cni);
                if found.is_none() {
                    problems.add(join(path, "mode"), s, format!("one of {enumerated}"));
                }
                found
            }
            Some(v) => {
                problems.add(join(path, "mode"), shown(v), format!("one of {enumerated}"));
                None
            }
        };
        (mode, string(m, path, "master", None, problems))
    }

    /// The rules (those with an invalid protocol apart: the second list) and the fallback.
    fn redirect(v: Option<&Value>, problems: &mut Problems) -> (Rules, Rules, Option<String>) {
        let Some(v) = v else {
            problems.add(
                "spec.redirect",
                "(missing)",
                "required in mode Redirect: {redirectRules, fallbackIP}",
            );
            return (Vec::new(), Vec::new(), None);
        };
        let Some(r) = mapping(
            v,
            "spec.redirect",
            &["redirectRules", "fallbackIP"],
            "{redirectRules, fallbackIP}",
            problems,
        ) else {
            return (Vec::new(), Vec::new(), None);
        };
        let fallback = string(r, "spec.redirect", "fallbackIP", None, problems);
        let rules = match r.get("redirectRules") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| Some((i, Self::rule(i, item, problems)?)))
                .collect::<Vec<_>>(),
            Some(v) => {
                problems.add(
                    "spec.redirect.redirectRules",
                    shown(v),
                    "a list of {destinationIP, port, protocol, targetPort}",
                );
                Vec::new()
            }
        };
        let no_rules = matches!(r.get("redirectRules"), None | Some(Value::Null))
            || r.get("redirectRules")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
        if no_rules && fallback.is_none() && !r.contains_key("fallbackIP") {
            problems.add(
                "spec.redirect",
                shown(v),
                "redirectRules, a fallbackIP or both: without either the router forwards nothing",
            );
        }
        let (rules, unsure): (Vec<_>, Vec<_>) = rules.into_iter().partition(|(_, (_, ok))| *ok);
        let strip = |rules: Vec<(usize, (Rule, bool))>| {
            rules.into_iter().map(|(i, (r, _))| (i, r)).collect()
        };
        (strip(rules), strip(unsure), fallback)
    }

    /// One rule, and whether its protocol is valid; `None` without a destination or port.
    fn rule(i: usize, item: &Value, problems: &mut Problems) -> Option<(Rule, bool)> {
        let path = format!("spec.redirect.redirectRules[{i}]");
        let map = mapping(
            item,
            &path,
            &["destinationIP", "port", "protocol", "targetPort"],
            "{destinationIP, port, protocol, targetPort}",
            problems,
        )?;
        let destination_ip = string(
            map,
            &path,
            "destinationIP",
            Some("the destination's address"),
            problems,
        );
        let port_value = port(map, &path, "port", problems);
        if !map.contains_key("port") {
            problems.add(
                join(&path, "port"),
                "(missing)",
                "required: the router's port, 1 to 65535",
            );
        }
        let protocol = match map.get("protocol") {
            Some(Value::String(p)) => {
                let found = PROTOCOLS.iter().find(|k| *k == p).copied();
                if found.is_none() {
                    problems.add(join(&path, "protocol"), p, "one of TCP, UDP, SCTP");
                }
                found
            }
            None => {
                problems.add(
                    join(&path, "protocol"),
                    "(missing)",
                    "required: one of TCP, UDP, SCTP",
                );
                None
            }
            Some(v) => {
                problems.add(join(&path, "protocol"), shown(v), "one of TCP, UDP, SCTP");
                None
            }
        };
        let target_port = port(map, &path, "targetPort", problems);
        let rule = Rule {
            destination_ip: destination_ip?,
            port: port_value?,
            // A placeholder where the protocol is invalid (reported): the rule's other fields
            // are still checked, alone ([`EgressRouter::check_spec`]).
            protocol: protocol.unwrap_or("TCP"),
            target_port,
        };
        Some((rule, protocol.is_some()))
    }

    /// The gateways to give the router (each once), with the index of the address each came
    /// from first.
    fn gateways(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for (i, a) in &self.addresses {
            if let Some(g) = &a.gateway {
                if !out.iter().any(|(o, _)| o == g) {
                    out.push((g.clone(), *i));
                }
            }
        }
        out
    }

    /// The router spec this object describes, in egress-core's JSON form: its validation is
    /// the router's (a name and master that are only placeholders when the object has none).
    fn spec_json(&self, rules: &[(usize, Rule)]) -> Value {
        json!({
            "name": "render",
            "external": {"macvlan": {
                "parent": self.master.as_deref().unwrap_or("eth1"),
                "mode": self.mode,
                "name": "net1",
            }},
            "internal": crate::INTERNAL_LINK,
            "sources": self.addresses.iter().map(|(_, a)| a.ip.clone()).collect::<Vec<_>>(),
            "gateways": self.gateways().into_iter().map(|(g, _)| g).collect::<Vec<_>>(),
            "redirects": rules.iter().map(|(_, r)| json!({
                "protocol": r.protocol.to_ascii_lowercase(),
                "port": r.port,
                "to": r.destination_ip,
                "to_port": r.target_port,
            })).collect::<Vec<_>>(),
            "fallback": self.fallback.iter().collect::<Vec<_>>(),
        })
    }

    /// Egress-core's validation of the router this object describes, every field it names
    /// mapped back to the object's path; then each rule whose protocol is invalid, alone
    /// with the rest of the router (its port, destination and target port: the spec's other
    /// problems are already named).
    fn check_spec(&self, problems: &mut Problems) {
        for f in self.spec_problems(&self.rules) {
            let path = self.path_of(&self.rules, &f.field);
            // The router's whole gateway list is named by an address that lacks one.
            let value = if f.field == "gateways" {
                "(missing)".into()
            } else {
                f.value
            };
            problems.add(path, value, f.expected);
        }
        for rule in &self.unsure_rules {
            let alone = std::slice::from_ref(rule);
            for f in self.spec_problems(alone) {
                if f.field.starts_with("redirects[0].") {
                    problems.add(self.path_of(alone, &f.field), f.value, f.expected);
                }
            }
        }
    }

    /// What egress-core's validation finds in the router with `rules`.
    fn spec_problems(&self, rules: &[(usize, Rule)]) -> Vec<InvalidField> {
        match RouterSpec::from_json_value(self.spec_json(rules)) {
            Ok(_) => Vec::new(),
            Err(e) => {
                let fields = e.invalid_fields();
                assert!(
                    !fields.is_empty(),
                    "a spec of a checked object failed with {e}"
                );
                fields
            }
        }
    }

    /// The object's path for a field of the router spec (`redirects[1].to` →
    /// `spec.redirect.redirectRules[1].destinationIP`).
    fn path_of(&self, rules: &[(usize, Rule)], field: &str) -> String {
        let indexed = |prefix: &str| -> Option<(usize, String)> {
            let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            Some((i.parse().ok()?, rest.trim_start_matches('.').to_string()))
        };
        if let Some((k, _)) = indexed("sources") {
            return format!(
                "spec.addresses[{}].ip",
                self.addresses.get(k).map_or(k, |(i, _)| *i)
            );
        }
        if let Some((k, _)) = indexed("gateways") {
            let i = self.gateways().get(k).map_or(0, |(_, i)| *i);
            return format!("spec.addresses[{i}].gateway");
        }
        if field == "gateways" {
            return format!("spec.addresses[{}].gateway", self.address_without_gateway());
        }
        if let Some((k, sub)) = indexed("redirects") {
            let i = rules.get(k).map_or(k, |(i, _)| *i);
            let key = match sub.as_str() {
                "to" => "destinationIP",
                "to_port" => "targetPort",
                other => other,
            };
            return format!("spec.redirect.redirectRules[{i}].{key}");
        }
        if indexed("fallback").is_some() {
            return "spec.redirect.fallbackIP".into();
        }
        match field {
            "sources" => "spec.addresses".into(),
            "external.macvlan.parent" => "spec.networkInterface.macvlan.master".into(),
            other => format!("spec ({other})"),
        }
    }

    /// The first address of a family no address gives a gateway for (the router needs one
    /// per family).
    fn address_without_gateway(&self) -> usize {
        let family = |s: &str| {
            s.split('/')
                .next()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .map(|a| a.is_ipv4())
        };
        let with_gateway: BTreeSet<bool> = self
            .addresses
            .iter()
            .filter_map(|(_, a)| a.gateway.as_deref().and_then(family))
            .collect();
        self.addresses
            .iter()
            .find(|(_, a)| family(&a.ip).is_some_and(|f| !with_gateway.contains(&f)))
            .map_or(0, |(i, _)| *i)
    }
}

mod manifests;

#[cfg(test)]
use manifests::keepalived_conf;

#[cfg(test)]
mod tests;
