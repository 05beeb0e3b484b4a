//! `egress.RouterSpec` ([`PyRouterSpec`] here): the core's builder behind Python's chained
//! methods, the JSON form, and the operations that take a spec.
//!
//! The Python object holds an [`egress_core::RouterSpecBuilder`], so that a spec can be built
//! piece by piece and nothing is checked until it is used: each method is the builder's setter
//! of the same name, and every operation validates through the builder's `build()`, the one
//! validation every front end shares. A redirect's port beyond 16 bits or unknown protocol,
//! which the builder's types cannot hold but the JSON form can, is kept aside and validated
//! in the JSON form, so that it is reported with every other invalid field, as before the
//! builder was used. What not even the JSON form holds (a negative port, an integer beyond
//! 64 bits, a macvlan mode that does not exist) is refused by the method itself, naming the
//! field in the words of the core's validation.

use egress_core::{
    blocking, MacvlanMode, Protocol, Role, RouterSpec, RouterSpecBuilder, MAX_ANNOUNCE,
};
use pyo3::{
    exceptions::{PyDeprecationWarning, PyTypeError},
    prelude::*,
    types::{PyDict, PyString, PyTuple},
};
use serde_json::Value;

use crate::{
    convert::{int_field, json_to_py, netns_arg, parse_spec, py_to_json, type_name},
    diagnose::{self, Diagnosis},
    errors::{add_note, invalid, CoreError},
    log,
    router::{Drift, EnsureResult, PyRouter, Step},
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
#[pyclass(name = "RouterSpec", module = "egress", frozen)]
#[derive(Clone)]
pub(crate) struct PyRouterSpec {
    builder: RouterSpecBuilder,
    /// Values of redirects that the builder's types cannot hold but the JSON form can (a port
    /// of 70000, a protocol "icmp"), kept for validation to report with every other invalid
    /// field, as it reports them in a JSON form; the builder holds a placeholder meanwhile.
    unheld: Vec<Unheld>,
}

/// A redirect's value that the builder cannot hold: `redirects[index].key` is `value`.
#[derive(Clone)]
struct Unheld {
    index: usize,
    key: &'static str,
    value: Value,
}

impl PyRouterSpec {
    /// A copy with `f` applied to the builder.
    fn with(&self, f: impl FnOnce(RouterSpecBuilder) -> RouterSpecBuilder) -> Self {
        PyRouterSpec {
            builder: f(self.builder.clone()),
            unheld: self.unheld.clone(),
        }
    }

    /// What was set so far, in the JSON form, not validated.
    fn raw(&self) -> Value {
        let mut raw = self.builder.to_json_value();
        for u in &self.unheld {
            raw["redirects"][u.index][u.key] = u.value.clone();
        }
        raw
    }

    /// The validated core spec: the builder's `build()`, or with values it cannot hold, the
    /// same validation of the JSON form holding them.
    pub(crate) fn build(&self) -> Result<RouterSpec, CoreError> {
        match self.unheld.is_empty() {
            true => Ok(self.builder.clone().build()?),
            false => parse_spec(self.raw()),
        }
    }

    /// A Python RouterSpec holding a validated spec.
    pub(crate) fn from_core(spec: &RouterSpec) -> Self {
        PyRouterSpec {
            builder: spec.to_builder(),
            unheld: Vec::new(),
        }
    }
}

#[pymethods]
impl PyRouterSpec {
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
        let mut b = RouterSpec::builder(name).netns(netns_arg(netns, "netns")?);
        if let Some(link) = internal {
            b = b.internal(link);
        }
        b = sources
            .into_iter()
            .flatten()
            .fold(b, RouterSpecBuilder::source);
        b = gateways
            .into_iter()
            .flatten()
            .fold(b, RouterSpecBuilder::gateway);
        b = fallback
            .into_iter()
            .flatten()
            .fold(b, RouterSpecBuilder::fallback);
        let spec = PyRouterSpec {
            builder: b,
            unheld: Vec::new(),
        };
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
        Ok(PyRouterSpec::from_core(&spec))
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
        Ok(PyRouterSpec::from_core(&config.spec))
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
        self.raw()["name"].as_str().unwrap_or_default().to_owned()
    }

    /// The router's namespace (see the class docs for the forms it takes).
    ///
    /// Like `ip netns exec NS`: every change is made inside it.
    fn netns(&self, netns: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let ns = netns_arg(netns, "netns")?;
        Ok(self.with(|b| b.netns(ns)))
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
        let mode = serde_json::from_value::<MacvlanMode>(Value::from(mode))
            .map_err(|e| invalid("external.macvlan.mode", mode, &e.to_string()))?;
        let parent_netns = netns_arg(parent_netns, "external.macvlan.parent_netns")?;
        let mtu = match mtu {
            Some(mtu) => Some(int_field::<u32>(
                mtu,
                "mtu",
                "external.macvlan.mtu",
                "an MTU from 68 to 65535",
            )?),
            None => None,
        };
        Ok(self.with(|b| {
            let mut b = b.macvlan(parent, mode).parent_netns(parent_netns);
            if let Some(mtu) = mtu {
                b = b.mtu(mtu);
            }
            if let Some(mac) = mac {
                b = b.mac(mac);
            }
            if let Some(name) = name {
                b = b.link_name(name);
            }
            b
        }))
    }

    /// Adopts `link`, an existing link of the router's namespace, as the external link
    /// (OpenShift's legacy mode, where the SDN made "macvlan0"). Teardown leaves the link.
    fn adopt(&self, link: String) -> Self {
        self.with(|b| b.adopt(link))
    }

    /// The internal (cluster) link, default "eth0": DNAT applies to connections arriving on it.
    fn internal(&self, link: String) -> Self {
        self.with(|b| b.internal(link))
    }

    /// Adds an egress source, "ADDR" or "ADDR/PREFIX" — like `ip addr add CIDR dev macvlan0`.
    /// The first source of each family is the SNAT source.
    fn source(&self, cidr: String) -> Self {
        self.with(|b| b.source(cidr))
    }

    /// Sets the gateway of one address family — like `ip route replace default via IP`.
    fn gateway(&self, ip: String) -> Self {
        self.with(|b| b.gateway(ip))
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
        let index = self.raw()["redirects"].as_array().map_or(0, Vec::len);
        let mut unheld = Vec::new();
        let protocol = match protocol {
            Some(p) => {
                let text = str_arg(&p, "protocol")?;
                text.parse::<Protocol>().unwrap_or_else(|_| {
                    unheld.push(Unheld {
                        index,
                        key: "protocol",
                        value: Value::from(text),
                    });
                    Protocol::Tcp
                })
            }
            None => Protocol::Tcp,
        };
        let field = |key: &str| format!("redirects[{index}].{key}");
        // A port the JSON form holds (64 bits, unsigned) but 16 bits do not is left to the
        // validation; another one is refused here.
        let mut port16 = |value: u64, key: &'static str| {
            u16::try_from(value).unwrap_or_else(|_| {
                unheld.push(Unheld {
                    index,
                    key,
                    value: Value::from(value),
                });
                0
            })
        };
        let port = port16(int_field(port, "port", &field("port"), PORT)?, "port");
        let to = str_arg(&to, "to")?;
        let to_port = match to_port.filter(|p| !p.is_none()) {
            Some(p) => Some(port16(
                int_field(&p, "to_port", &field("to_port"), PORT)?,
                "to_port",
            )),
            None => None,
        };
        let mut spec = self.with(|b| b.redirect(protocol, port, to, to_port));
        spec.unheld.extend(unheld);
        Ok(spec)
    }

    /// Sets the fallback destination of one family: whatever is not redirected goes there.
    fn fallback(&self, ip: String) -> Self {
        self.with(|b| b.fallback(ip))
    }

    /// Keeps network `to` reachable through the internal link (the cluster and node networks)
    /// — like `ip route add TO [via VIA] dev eth0`.
    #[pyo3(signature = (to, via=None))]
    fn keep_route(&self, to: String, via: Option<String>) -> Self {
        self.with(|b| b.keep_route(to, via.as_deref()))
    }

    /// How many gratuitous ARPs / unsolicited NAs to send per address (default 1, 0 = none).
    fn announce(&self, count: &Bound<'_, PyAny>) -> PyResult<Self> {
        let expected = format!("a count from 0 to {MAX_ANNOUNCE}");
        let count: u8 = int_field(count, "count", "announce", &expected)?;
        Ok(self.with(|b| b.announce(count)))
    }

    /// The dry run: every kernel change apply() would make, in order, computed from the spec
    /// alone (the kernel is not read; no privilege needed). Changes nothing.
    fn plan(&self) -> PyResult<Vec<Step>> {
        Ok(Step::all(&self.build()?.plan()))
    }

    /// The dry run of ensure(): the steps the router's namespace still needs now, read from
    /// the kernel — only what is missing or wrong, the whole plan when the router is not
    /// there, [] when it matches. Changes nothing (Ansible's check mode). With standby=True,
    /// a router that is not there is planned as ensure(standby=True) would apply it; one that
    /// is there keeps the role it has either way. Needs CAP_NET_ADMIN, like check(); the GIL
    /// is released while the kernel is read.
    #[pyo3(signature = (*, standby=false))]
    fn plan_live(&self, py: Python<'_>, standby: bool) -> PyResult<Vec<Step>> {
        let plan = log::detached(py, || {
            Ok::<_, CoreError>(blocking::plan_as(&self.build()?, role(standby))?)
        })?;
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
    ///
    /// A signal that arrives meanwhile (Ctrl-C: KeyboardInterrupt) is handled as soon as
    /// the call is back, before it returns: when its handler raises, the router just applied
    /// is torn down again and the exception propagates, so that no router is left without a
    /// handle (should that teardown fail, its error is a note on the exception and its
    /// __context__, and egress.teardown(name, netns=...) is the way to remove the router).
    #[pyo3(signature = (*, standby=false))]
    fn apply(&self, py: Python<'_>, standby: bool) -> PyResult<PyRouter> {
        let router = log::detached(py, || {
            Ok::<_, CoreError>(blocking::apply_as(&self.build()?, role(standby))?)
        })?;
        if let Err(signal) = py.check_signals() {
            let name = router.spec().name().to_owned();
            if let Err(e) = log::detached(py, || blocking::teardown(router)) {
                let e = PyErr::from(CoreError(e));
                let text = format!(
                    "egress: router {name:?} was applied when the exception was raised and \
                     tearing it down failed: {}: {}",
                    e.get_type(py).name()?,
                    e.value(py)
                );
                add_note(signal.value(py), &text);
                signal.set_context(py, Some(e));
            }
            return Err(signal);
        }
        Ok(PyRouter::new(router))
    }

    /// How the kernel differs from this spec, as a list of Drift; empty when the router is
    /// configured exactly. Changes nothing. The GIL is released while the kernel is read.
    fn check(&self, py: Python<'_>) -> PyResult<Vec<Drift>> {
        let drift = log::detached(py, || Ok::<_, CoreError>(blocking::check(&self.build()?)?))?;
        drift.iter().map(Drift::new).collect()
    }

    /// Converges the kernel to this spec, idempotently: applies it when it is missing,
    /// does nothing when it matches, repairs it when it drifted. Returns an EnsureResult
    /// (changed, action, drift). The router is left in place. A router that is there keeps
    /// the role it has (a standby is never promoted by ensure()); one that is not is applied
    /// active, or as a standby with standby=True. The GIL is released meanwhile.
    #[pyo3(signature = (*, standby=false))]
    fn ensure(&self, py: Python<'_>, standby: bool) -> PyResult<EnsureResult> {
        let outcome = log::detached(py, || {
            Ok::<_, CoreError>(blocking::ensure_as(&self.build()?, role(standby))?)
        })?;
        EnsureResult::new(py, &outcome)
    }

    /// Diagnoses the router this spec describes: as egress.diagnose(), and its state check
    /// is check() against this spec; a created macvlan's parent is the spec's. Returns a
    /// Diagnosis; changes nothing in the router (probe frames and probe connections only,
    /// each bounded by timeout_ms, default 300, 1 to 10000). An invalid spec or option raises
    /// InvalidSpecError naming the field. The GIL is released meanwhile.
    #[pyo3(signature = (*, timeout_ms=None, fallback_ports=None))]
    fn diagnose(
        &self,
        py: Python<'_>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        fallback_ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Diagnosis> {
        let options = diagnose::options(timeout_ms, fallback_ports)?;
        let spec = self.build()?;
        diagnose::of_spec(py, &spec, &options)
    }

    /// Pickles through the JSON form: RouterSpec.from_dict(spec.to_dict()). Only a valid spec
    /// pickles (an invalid one raises InvalidSpecError, as to_dict() does).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyAny>,))> {
        let from_dict = slf.get_type().getattr("from_dict")?;
        Ok((from_dict, (slf.get().to_dict(slf.py())?,)))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let raw = json_to_py(py, &self.raw())?;
        Ok(format!("RouterSpec.from_dict({})", raw.repr()?))
    }
}

/// The role `standby=` asks for.
fn role(standby: bool) -> Role {
    match standby {
        true => Role::Standby,
        false => Role::Active,
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
