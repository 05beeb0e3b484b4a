//! `egress.RouterSpec`: the builder, its JSON form, and the operations that take a spec.
//!
//! The Python object holds the spec in its JSON form (DESIGN.md), unvalidated, so that it can be
//! built piece by piece; every operation validates it through `egress_core::RouterSpec`, the one
//! validation every front end shares.

use egress_core::{blocking, MacvlanMode, Protocol, RouterSpec as CoreSpec, MAX_ANNOUNCE};
use pyo3::{
    exceptions::{PyDeprecationWarning, PyTypeError},
    prelude::*,
    types::{PyDict, PyString, PyTuple},
};
use serde_json::{Map, Value};

use crate::{
    convert::{int_field, json_to_py, netns_arg, netns_json, parse_spec, py_to_json, type_name},
    diagnose::{self, Diagnosis},
    errors::{invalid, CoreError},
    log,
    router::{Drift, EnsureResult, Router, Step},
};

const PORT: &str = "a port from 1 to 65535";

/// What an egress router should look like, built with keyword arguments and chained methods.
///
/// Every method returns a new RouterSpec and leaves this one unchanged. Nothing is checked
/// until the spec is used: plan(), apply(), check(), ensure(), to_dict() and validate() run
/// the library's validation and raise InvalidSpecError naming the field and the value.
///
///     spec = (egress.RouterSpec(name="egress-1", netns="/run/netns/pod")
///             .macvlan(parent="eth1", mode="private")
///             .source("203.0.113.99/24")
///             .gateway("203.0.113.1")
///             .redirect(80, "198.51.100.25", 8080)
///             .fallback("198.51.100.9"))
///     for step in spec.plan():        # the dry run
///         print(step)
///     with spec.apply():              # torn down again when the block ends
///         ...
///
/// Namespaces (netns, parent_netns) are a path (a str starting with "/", or an os.PathLike),
/// a name under /run/netns (any other str), or a process id (int); None is the namespace of
/// the thread that calls apply().
#[pyclass(module = "egress", frozen)]
#[derive(Clone)]
pub(crate) struct RouterSpec {
    raw: Map<String, Value>,
}

impl RouterSpec {
    /// A copy with `f` applied to the JSON form.
    fn with(&self, f: impl FnOnce(&mut Map<String, Value>)) -> Self {
        let mut raw = self.raw.clone();
        f(&mut raw);
        RouterSpec { raw }
    }

    fn push(&self, key: &str, value: Value) -> Self {
        self.with(|raw| {
            if let Value::Array(items) = raw.entry(key).or_insert_with(|| Value::Array(vec![])) {
                items.push(value);
            }
        })
    }

    fn len_of(&self, key: &str) -> usize {
        self.raw
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

    /// The validated core spec.
    pub(crate) fn build(&self) -> Result<CoreSpec, CoreError> {
        parse_spec(Value::Object(self.raw.clone()))
    }

    /// A Python RouterSpec holding the canonical JSON form of a validated spec.
    pub(crate) fn from_core(spec: &CoreSpec) -> Self {
        match spec.to_json_value() {
            Value::Object(raw) => RouterSpec { raw },
            other => unreachable!("a RouterSpec serializes to an object, not {other}"),
        }
    }
}

fn set_netns(raw: &mut Map<String, Value>, key: &str, ns: &egress_core::Netns) {
    match netns_json(ns) {
        Some(v) => raw.insert(key.to_owned(), v),
        None => raw.remove(key),
    };
}

#[pymethods]
impl RouterSpec {
    /// Starts a spec for router `name` ([a-z0-9-], at most 32 characters). The keyword
    /// arguments set the same fields as the methods of the same (singular) name.
    #[new]
    #[pyo3(signature = (name, *, netns=None, internal=None, sources=None, gateways=None, fallback=None, announce=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: String,
        netns: Option<&Bound<'_, PyAny>>,
        internal: Option<String>,
        sources: Option<Vec<String>>,
        gateways: Option<Vec<String>>,
        fallback: Option<Vec<String>>,
        announce: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut raw = Map::new();
        raw.insert("name".into(), Value::from(name));
        set_netns(&mut raw, "netns", &netns_arg(netns, "netns")?);
        if let Some(link) = internal {
            raw.insert("internal".into(), Value::from(link));
        }
        for (key, list) in [
            ("sources", sources),
            ("gateways", gateways),
            ("fallback", fallback),
        ] {
            if let Some(list) = list {
                raw.insert(key.into(), Value::from(list));
            }
        }
        let spec = RouterSpec { raw };
        match announce {
            Some(count) => spec.announce(count),
            None => Ok(spec),
        }
    }

    /// Parses the JSON form every egress front end shares, as a dict, and validates it at
    /// once. Keys: name, netns ({"path"|"name"|"pid": ...}), external ({"macvlan": {"parent",
    /// "parent_netns", "mode", "mtu", "mac", "name"}} or {"adopt": link}), internal, sources,
    /// gateways, redirects ([{"protocol", "port", "to", "to_port"}]), local_ports
    /// ([{"protocol", "port"}]: the router's own, never redirected), fallback, kept_routes
    /// ([{"to", "via"}]), announce.
    ///
    /// Every mistake raises InvalidSpecError naming the field as a JSON path
    /// (`"redirects[0].port"`): unknown keys, values of the wrong JSON type, integers beyond
    /// 64 bits, a dict or list that contains itself or nests deeper than 32 levels. Values
    /// that are not JSON types at all (bytes, sets, objects) raise TypeError naming the field.
    #[staticmethod]
    fn from_dict(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        if !spec.is_instance_of::<PyDict>() {
            return Err(PyTypeError::new_err(format!(
                "from_dict() takes a dict, not {}",
                type_name(spec)
            )));
        }
        let spec = parse_spec(py_to_json(spec)?)?;
        Ok(RouterSpec::from_core(&spec))
    }

    /// The spec OpenShift's egress router image describes in its environment: EGRESS_SOURCE,
    /// EGRESS_GATEWAY, EGRESS_DESTINATION, EGRESS_ROUTER_MODE (and egress's optional
    /// EGRESS_ROUTER_NAME, EGRESS_MACVLAN_PARENT, EGRESS_MACVLAN_MODE,
    /// EGRESS_MACVLAN_PARENT_NETNS). `env` is a mapping of str to str, such as os.environ.
    ///
    /// As in the pod: the router is the calling thread's namespace, the external link is the
    /// SDN's "macvlan0" (adopted), the internal link is "eth0". The proxy modes give a spec
    /// without redirects. Bad input raises InvalidSpecError naming the variable.
    #[staticmethod]
    fn from_env(env: &Bound<'_, PyAny>) -> PyResult<Self> {
        let items = env.call_method0("items").map_err(|_| {
            PyTypeError::new_err(format!(
                "from_env() takes a mapping of str to str (such as os.environ), not {}",
                type_name(env)
            ))
        })?;
        let mut vars = Vec::new();
        for item in items.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let as_str = |v: &Bound<'_, PyAny>| {
                v.cast::<PyString>()
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "from_env(): keys and values must be str, not {} ({})",
                            type_name(v),
                            v.repr().map(|r| r.to_string()).unwrap_or_default()
                        ))
                    })
                    .and_then(|s| Ok(s.to_cow()?.into_owned()))
            };
            vars.push((as_str(&key)?, as_str(&value)?));
        }
        let config = egress_openshift::from_env(vars).map_err(|e| CoreError(e.into()))?;
        Ok(RouterSpec::from_core(&config.spec))
    }

    /// The validated spec in its JSON form, as a dict that from_dict() reads back.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.build()?.to_json_value())
    }

    /// Runs every check that needs no kernel; returns the spec, or raises InvalidSpecError.
    fn validate(slf: Py<Self>) -> PyResult<Py<Self>> {
        slf.get().build()?;
        Ok(slf)
    }

    /// The router's name.
    #[getter]
    fn name(&self) -> String {
        self.raw
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    /// The router's namespace (see the class docs for the forms it takes).
    ///
    /// Like `ip netns exec NS`: every change is made inside it.
    fn netns(&self, netns: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let ns = netns_arg(netns, "netns")?;
        Ok(self.with(|raw| set_netns(raw, "netns", &ns)))
    }

    /// Creates a macvlan on `parent` as the external link, directly inside the router's
    /// namespace — like `ip link add NAME link PARENT netns NS type macvlan mode MODE`.
    ///
    /// mode is bridge, private, vepa or passthru. parent_netns is where `parent` lives
    /// (default: the namespace of the thread calling apply()). mtu (default: the parent's),
    /// mac ("02:00:00:00:00:99"; default: random) and name (default "macvlan0") are optional.
    #[pyo3(signature = (parent, mode="bridge", *, parent_netns=None, mtu=None, mac=None, name=None))]
    fn macvlan(
        &self,
        parent: String,
        mode: &str,
        parent_netns: Option<&Bound<'_, PyAny>>,
        mtu: Option<&Bound<'_, PyAny>>,
        mac: Option<String>,
        name: Option<String>,
    ) -> PyResult<Self> {
        serde_json::from_value::<MacvlanMode>(Value::from(mode))
            .map_err(|e| invalid("external.macvlan.mode", mode, &e.to_string()))?;
        let mut m = Map::new();
        m.insert("parent".into(), Value::from(parent));
        set_netns(
            &mut m,
            "parent_netns",
            &netns_arg(parent_netns, "external.macvlan.parent_netns")?,
        );
        m.insert("mode".into(), Value::from(mode));
        if let Some(mtu) = mtu {
            let mtu: u32 = int_field(
                mtu,
                "mtu",
                "external.macvlan.mtu",
                "an MTU from 68 to 65535",
            )?;
            m.insert("mtu".into(), Value::from(mtu));
        }
        if let Some(mac) = mac {
            m.insert("mac".into(), Value::from(mac));
        }
        if let Some(name) = name {
            m.insert("name".into(), Value::from(name));
        }
        let external = Value::Object(Map::from_iter([("macvlan".to_owned(), Value::Object(m))]));
        Ok(self.with(|raw| {
            raw.insert("external".into(), external);
        }))
    }

    /// Adopts `link`, an existing link of the router's namespace, as the external link
    /// (OpenShift's legacy mode, where the SDN made "macvlan0"). Teardown leaves the link.
    fn adopt(&self, link: String) -> Self {
        let external = Value::Object(Map::from_iter([("adopt".to_owned(), Value::from(link))]));
        self.with(|raw| {
            raw.insert("external".into(), external);
        })
    }

    /// The internal (cluster) link, default "eth0": DNAT applies to connections arriving on it.
    fn internal(&self, link: String) -> Self {
        self.with(|raw| {
            raw.insert("internal".into(), Value::from(link));
        })
    }

    /// Adds an egress source, "ADDR" or "ADDR/PREFIX" — like `ip addr add CIDR dev macvlan0`.
    /// The first source of each family is the SNAT source.
    fn source(&self, cidr: String) -> Self {
        self.push("sources", Value::from(cidr))
    }

    /// Sets the gateway of one address family — like `ip route replace default via IP`.
    fn gateway(&self, ip: String) -> Self {
        self.push("gateways", Value::from(ip))
    }

    /// Adds a redirect: connections to `port`/`protocol` (tcp, udp or sctp) on the router go
    /// to `to`:`to_port` (default: `port`) — one element of the nftables DNAT map.
    ///
    ///     spec.redirect(80, "198.51.100.25", 8080)
    ///     spec.redirect(53, "198.51.100.53", protocol="udp")
    ///
    /// The former order, redirect(port, protocol, to, to_port), still works and warns
    /// DeprecationWarning: its second argument is a protocol name, which no address is.
    #[pyo3(
        signature = (port, *args, to=None, to_port=None, protocol=None),
        text_signature = "($self, /, port, to, to_port=None, protocol='tcp')"
    )]
    fn redirect(
        &self,
        py: Python<'_>,
        port: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        to: Option<Bound<'_, PyAny>>,
        to_port: Option<Bound<'_, PyAny>>,
        protocol: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let old_order = match args.len() {
            0 => false,
            1..=3 => is_protocol_name(&args.get_item(0)?),
            n => {
                return Err(PyTypeError::new_err(format!(
                    "redirect() takes at most 4 positional arguments ({} given)",
                    n + 1
                )))
            }
        };
        let mut given = [("to", to), ("to_port", to_port), ("protocol", protocol)];
        let order: [usize; 3] = if old_order { [2, 0, 1] } else { [0, 1, 2] };
        for (slot, arg) in order.into_iter().zip(args.iter()) {
            let (name, value) = &mut given[slot];
            if value.is_some() {
                return Err(PyTypeError::new_err(format!(
                    "redirect() got multiple values for argument '{name}'"
                )));
            }
            *value = Some(arg);
        }
        if old_order {
            PyErr::warn(
                py,
                &py.get_type::<PyDeprecationWarning>(),
                c"RouterSpec.redirect(port, protocol, to, to_port) is deprecated: \
                  use redirect(port, to, to_port=None, protocol=\"tcp\")",
                1,
            )?;
        }
        let [(_, to), (_, to_port), (_, protocol)] = given;
        let to =
            to.ok_or_else(|| PyTypeError::new_err("redirect() missing required argument 'to'"))?;
        let i = self.len_of("redirects");
        let mut r = Map::new();
        let protocol = match protocol {
            Some(p) => str_arg(&p, "protocol")?,
            None => Protocol::Tcp.as_str().to_owned(),
        };
        r.insert("protocol".into(), Value::from(protocol));
        let port: u64 = int_field(port, "port", &format!("redirects[{i}].port"), PORT)?;
        r.insert("port".into(), Value::from(port));
        r.insert("to".into(), Value::from(str_arg(&to, "to")?));
        if let Some(to_port) = to_port.filter(|p| !p.is_none()) {
            let field = format!("redirects[{i}].to_port");
            let to_port: u64 = int_field(&to_port, "to_port", &field, PORT)?;
            r.insert("to_port".into(), Value::from(to_port));
        }
        Ok(self.push("redirects", Value::Object(r)))
    }

    /// Sets the fallback destination of one family: whatever is not redirected goes there.
    fn fallback(&self, ip: String) -> Self {
        self.push("fallback", Value::from(ip))
    }

    /// Keeps network `to` reachable through the internal link (the cluster and node networks)
    /// — like `ip route add TO [via VIA] dev eth0`.
    #[pyo3(signature = (to, via=None))]
    fn keep_route(&self, to: String, via: Option<String>) -> Self {
        let mut k = Map::new();
        k.insert("to".into(), Value::from(to));
        if let Some(via) = via {
            k.insert("via".into(), Value::from(via));
        }
        self.push("kept_routes", Value::Object(k))
    }

    /// How many gratuitous ARPs / unsolicited NAs to send per address (default 1, 0 = none).
    fn announce(&self, count: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = format!("a count from 0 to {MAX_ANNOUNCE}");
        let count: u8 = int_field(count, "count", "announce", &expected)?;
        Ok(self.with(|raw| {
            raw.insert("announce".into(), Value::from(count));
        }))
    }

    /// The dry run: every kernel change apply() would make, in order, computed from the spec
    /// alone (the kernel is not read; no privilege needed). Changes nothing.
    fn plan(&self) -> PyResult<Vec<Step>> {
        Ok(Step::all(&self.build()?.plan()))
    }

    /// The dry run of ensure(): the steps the router's namespace still needs now, read from
    /// the kernel — only what is missing or wrong, the whole plan when the router is not
    /// there, [] when it matches. Changes nothing (Ansible's check mode). Needs
    /// CAP_NET_ADMIN, like check(); the GIL is released while the kernel is read.
    fn plan_live(&self, py: Python<'_>) -> PyResult<Vec<Step>> {
        log::refresh(py);
        let plan = py.detach(|| Ok::<_, CoreError>(blocking::plan(&self.build()?)?))?;
        Ok(Step::all(&plan))
    }

    /// Configures the router as one transaction and returns its handle.
    ///
    /// On failure everything done so far is undone and ApplyError says which step failed
    /// and whether rollback was complete. The returned Router is a context manager that
    /// tears the router down when the block ends; a Router that is simply dropped leaves
    /// the router configured (egress.teardown(name, netns=...) removes it later).
    /// With standby=True everything is staged but what claims the egress identity (the
    /// egress addresses, the default route via the gateway, the stable MAC, the
    /// announcements): Router.promote() or egress.promote(name, netns=...) claims it.
    /// The GIL is released for the whole call (validation included).
    #[pyo3(signature = (*, standby=false))]
    fn apply(&self, py: Python<'_>, standby: bool) -> PyResult<Router> {
        log::refresh(py);
        let role = match standby {
            true => egress_core::Role::Standby,
            false => egress_core::Role::Active,
        };
        let (router, spec) = py.detach(|| {
            let spec = self.build()?;
            let router = blocking::apply_as(&spec, role)?;
            Ok::<_, CoreError>((router, RouterSpec::from_core(&spec)))
        })?;
        Ok(Router::new(router, spec))
    }

    /// How the kernel differs from this spec, as a list of Drift; empty when the router is
    /// configured exactly. Changes nothing. The GIL is released while the kernel is read.
    fn check(&self, py: Python<'_>) -> PyResult<Vec<Drift>> {
        log::refresh(py);
        let drift = py.detach(|| Ok::<_, CoreError>(blocking::check(&self.build()?)?))?;
        drift.iter().map(Drift::new).collect()
    }

    /// Converges the kernel to this spec, idempotently: applies it when it is missing,
    /// does nothing when it matches, repairs it when it drifted. Returns an EnsureResult
    /// (changed, action, drift). The router is left in place. The GIL is released meanwhile.
    fn ensure(&self, py: Python<'_>) -> PyResult<EnsureResult> {
        log::refresh(py);
        let outcome = py.detach(|| Ok::<_, CoreError>(blocking::ensure(&self.build()?)?))?;
        EnsureResult::new(py, &outcome)
    }

    /// Diagnoses the router this spec describes: as egress.diagnose(), and its state check
    /// is check() against this spec; a created macvlan's parent is the spec's. Returns a
    /// Diagnosis; changes nothing in the router (probe frames and probe connections only,
    /// each bounded by timeout_ms, default 300, 1 to 10000). An invalid spec or option raises
    /// InvalidSpecError naming the field. The GIL is released meanwhile.
    #[pyo3(signature = (*, timeout_ms=None, fallback_ports=None))]
    pub(crate) fn diagnose(
        &self,
        py: Python<'_>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        fallback_ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Diagnosis> {
        let options = diagnose::options(timeout_ms, fallback_ports)?;
        log::refresh(py);
        let d =
            py.detach(|| Ok::<_, CoreError>(blocking::diagnose_spec(&self.build()?, &options)?))?;
        Diagnosis::new(py, d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let raw = json_to_py(py, &Value::Object(self.raw.clone()))?;
        Ok(format!("RouterSpec.from_dict({})", raw.repr()?))
    }
}

/// Whether `arg` is a protocol name (as the core reads one): the second argument of the old
/// order of `redirect`, which no address can be.
fn is_protocol_name(arg: &Bound<'_, PyAny>) -> bool {
    arg.cast::<PyString>()
        .ok()
        .and_then(|s| s.to_cow().ok().map(|s| s.parse::<Protocol>().is_ok()))
        .unwrap_or(false)
}

/// A `str` argument taken by hand (`redirect` sorts its arguments itself).
fn str_arg(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<String> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{arg} must be a str, not {}",
            type_name(obj)
        ))),
    }
}
