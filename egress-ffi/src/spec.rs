//! Router specs: built call by call, or parsed from the JSON form; rendered as a plan or JSON.

use std::ffi::c_char;

use egress_core::{MacvlanMode, Netns, Protocol, RouterSpec, RouterSpecBuilder};

use crate::error::{
    arg_int, arg_mut, arg_out, arg_ref, arg_str, call, egress_result, put_string, Failure,
};

/// Macvlan modes, for `egress_spec_builder_macvlan`; the values are the kernel's
/// (`MACVLAN_MODE_*` in `linux/if_link.h`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum egress_macvlan_mode {
    /// No traffic between macvlans on the same parent (`mode private`).
    Private = 1,
    /// Traffic between macvlans goes out to the adjacent switch (`mode vepa`).
    Vepa = 2,
    /// Macvlans on the same parent talk to each other directly (`mode bridge`).
    Bridge = 4,
    /// The macvlan takes over the parent (`mode passthru`).
    Passthru = 8,
}

/// Transport protocols of a redirect, for `egress_spec_builder_add_redirect`; the values are
/// the IP protocol numbers (`IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_SCTP`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum egress_protocol {
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
    /// SCTP.
    Sctp = 132,
}

fn macvlan_mode(mode: u32) -> Result<MacvlanMode, Failure> {
    Ok(match mode {
        m if m == egress_macvlan_mode::Private as u32 => MacvlanMode::Private,
        m if m == egress_macvlan_mode::Vepa as u32 => MacvlanMode::Vepa,
        m if m == egress_macvlan_mode::Bridge as u32 => MacvlanMode::Bridge,
        m if m == egress_macvlan_mode::Passthru as u32 => MacvlanMode::Passthru,
        _ => {
            return Err(Failure::out_of_range(
                "mode",
                mode,
                "an egress_macvlan_mode: PRIVATE (1), VEPA (2), BRIDGE (4) or PASSTHRU (8)",
            ))
        }
    })
}

fn protocol(protocol: u32) -> Result<Protocol, Failure> {
    Ok(match protocol {
        p if p == egress_protocol::Tcp as u32 => Protocol::Tcp,
        p if p == egress_protocol::Udp as u32 => Protocol::Udp,
        p if p == egress_protocol::Sctp as u32 => Protocol::Sctp,
        _ => {
            return Err(Failure::out_of_range(
                "protocol",
                protocol,
                "an egress_protocol: TCP (6), UDP (17) or SCTP (132)",
            ))
        }
    })
}

/// A router spec being built call by call (opaque). Made by `egress_spec_builder_new`,
/// consumed by `egress_spec_builder_build` or released by `egress_spec_builder_free`.
///
/// Setters check only their arguments (NULL, UTF-8, enum values, integers that the field
/// cannot hold: `EGRESS_RESULT_OUT_OF_RANGE`); every check of the values themselves runs in
/// `egress_spec_builder_build`, which names the field that is wrong.
///
/// Integer arguments are `int64_t`, which holds any C integer a caller has without conversion:
/// a port of 65616 is refused as such, never taken as 80, a negative count as such.
pub struct egress_spec_builder {
    inner: RouterSpecBuilder,
    /// Whether `egress_spec_builder_macvlan` was called last of the two external-link setters,
    /// so that the macvlan options have something to apply to.
    macvlan: bool,
}

impl egress_spec_builder {
    fn set(&mut self, f: impl FnOnce(RouterSpecBuilder) -> RouterSpecBuilder) {
        let inner = std::mem::replace(&mut self.inner, RouterSpec::builder(String::new()));
        self.inner = f(inner);
    }

    fn set_macvlan_option(
        &mut self,
        f: impl FnOnce(RouterSpecBuilder) -> RouterSpecBuilder,
    ) -> Result<(), Failure> {
        if !self.macvlan {
            return Err(Failure::new(
                egress_result::MacvlanNotSet,
                "this macvlan option needs egress_spec_builder_macvlan to be called first",
            ));
        }
        self.set(f);
        Ok(())
    }
}

/// A validated, immutable router spec (opaque). Made by `egress_spec_builder_build` or
/// `egress_spec_from_json`, released by `egress_spec_free`. It may be used by several
/// threads at once.
pub struct egress_spec(pub(crate) RouterSpec);

/// Starts a spec for a router called `name` (`[a-z0-9-]`, at most 32 characters; checked by
/// `egress_spec_builder_build`). Defaults: the calling thread's namespace, internal link
/// `eth0`, one announcement per address.
///
/// # Safety
/// `name` must be NULL or a NUL-terminated string; `builder_out` must be NULL or point to
/// writable storage for a pointer. On success `*builder_out` owns a builder, to be passed to
/// `egress_spec_builder_build` or `egress_spec_builder_free`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_new(
    name: *const c_char,
    builder_out: *mut *mut egress_spec_builder,
) -> egress_result {
    call("egress_spec_builder_new", || {
        // SAFETY (all unsafe calls below): as documented for the caller.
        let out = unsafe { arg_out(builder_out, "builder_out") }?;
        let name = unsafe { arg_str(name, "name") }?;
        *out = Box::into_raw(Box::new(egress_spec_builder {
            inner: RouterSpec::builder(name),
            macvlan: false,
        }));
        Ok(())
    })
}

/// Releases a builder that will not be built. `NULL` is a no-op.
///
/// # Safety
/// `builder` must be NULL or a builder from `egress_spec_builder_new` that was neither built
/// nor freed.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_free(builder: *mut egress_spec_builder) {
    crate::error::boundary((), || {
        if !builder.is_null() {
            // SAFETY: made by `Box::into_raw` and not released yet, as the caller promises.
            drop(unsafe { Box::from_raw(builder) });
        }
    })
}

/// The builder and the string argument of a setter.
///
/// # Safety
/// As the setters document: `builder` is NULL or a live builder used by no other thread, `p` is
/// NULL or a NUL-terminated string, both valid for `'a`.
unsafe fn builder_and_str<'a>(
    builder: *mut egress_spec_builder,
    p: *const c_char,
    arg: &str,
) -> Result<(&'a mut egress_spec_builder, &'a str), Failure> {
    // SAFETY (both): as the caller promises.
    let b = unsafe { arg_mut(builder, "builder") }?;
    let value = unsafe { arg_str(p, arg) }?;
    Ok((b, value))
}

/// The router namespace by path (`/run/netns/pod`, `/proc/PID/ns/net`): like
/// `ip netns exec`, but by file.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `path` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_netns_path(
    builder: *mut egress_spec_builder,
    path: *const c_char,
) -> egress_result {
    call("egress_spec_builder_netns_path", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, path, "path") }?;
        b.set(|inner| inner.netns_path(value));
        Ok(())
    })
}

/// The router namespace by name under `/run/netns` (as `ip netns add NAME` makes it).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `netns` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_netns_name(
    builder: *mut egress_spec_builder,
    netns: *const c_char,
) -> egress_result {
    call("egress_spec_builder_netns_name", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, netns, "netns") }?;
        b.set(|inner| inner.netns_name(value));
        Ok(())
    })
}

/// The router namespace as the namespace of process `pid` (above 0: 0 is refused by
/// `egress_spec_builder_build`; negative or above 4294967295, `EGRESS_RESULT_OUT_OF_RANGE`).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_netns_pid(
    builder: *mut egress_spec_builder,
    pid: i64,
) -> egress_result {
    call("egress_spec_builder_netns_pid", || {
        // SAFETY: as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let pid = arg_int(pid, "pid", PID)?;
        b.set(|inner| inner.netns_pid(pid));
        Ok(())
    })
}

/// What a process id argument may be.
const PID: &str = "a process id (above 0)";

/// Creates a macvlan on link `parent` as the external link, directly inside the router
/// namespace (`ip link add macvlan0 link PARENT netns NS type macvlan mode MODE`). `mode` is an
/// `egress_macvlan_mode`; any other value returns `EGRESS_RESULT_OUT_OF_RANGE`. Replaces an
/// adopted link or a macvlan set before (and their options).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `parent` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_macvlan(
    builder: *mut egress_spec_builder,
    parent: *const c_char,
    mode: u32,
) -> egress_result {
    call("egress_spec_builder_macvlan", || {
        // SAFETY (both): as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let parent = unsafe { arg_str(parent, "parent") }?;
        let mode = macvlan_mode(mode)?;
        b.set(|inner| inner.macvlan(parent, mode));
        b.macvlan = true;
        Ok(())
    })
}

/// The namespace of the macvlan's parent link, by path (default: the calling thread's
/// namespace when `egress_spec_apply` starts).
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `path` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_parent_netns_path(
    builder: *mut egress_spec_builder,
    path: *const c_char,
) -> egress_result {
    call("egress_spec_builder_parent_netns_path", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, path, "path") }?;
        b.set_macvlan_option(|inner| inner.parent_netns(Netns::Path(value.into())))
    })
}

/// The namespace of the macvlan's parent link, by name under `/run/netns`.
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `netns` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_parent_netns_name(
    builder: *mut egress_spec_builder,
    netns: *const c_char,
) -> egress_result {
    call("egress_spec_builder_parent_netns_name", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, netns, "netns") }?;
        b.set_macvlan_option(|inner| inner.parent_netns(Netns::Name(value.into())))
    })
}

/// The namespace of the macvlan's parent link, as the namespace of process `pid` (as
/// `egress_spec_builder_netns_pid`).
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_parent_netns_pid(
    builder: *mut egress_spec_builder,
    pid: i64,
) -> egress_result {
    call("egress_spec_builder_parent_netns_pid", || {
        // SAFETY: as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let pid = arg_int(pid, "pid", PID)?;
        b.set_macvlan_option(|inner| inner.parent_netns(Netns::Pid(pid)))
    })
}

/// The macvlan's MTU (`ip link add ... mtu N`; at least 68, 1280 with IPv6, at most the
/// parent's: checked by `egress_spec_builder_build`; negative or above 4294967295,
/// `EGRESS_RESULT_OUT_OF_RANGE`).
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_mtu(
    builder: *mut egress_spec_builder,
    mtu: i64,
) -> egress_result {
    call("egress_spec_builder_mtu", || {
        // SAFETY: as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let mtu = arg_int(mtu, "mtu", "an MTU (68 to the parent's)")?;
        b.set_macvlan_option(|inner| inner.mtu(mtu))
    })
}

/// The macvlan's MAC address, such as `02:00:00:00:00:99` (default: the kernel picks one).
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `mac` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_mac(
    builder: *mut egress_spec_builder,
    mac: *const c_char,
) -> egress_result {
    call("egress_spec_builder_mac", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, mac, "mac") }?;
        b.set_macvlan_option(|inner| inner.mac(value))
    })
}

/// The macvlan's name inside the router namespace (default `macvlan0`).
///
/// Returns `EGRESS_RESULT_MACVLAN_NOT_SET` unless `egress_spec_builder_macvlan` was called
/// before.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `name` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_link_name(
    builder: *mut egress_spec_builder,
    name: *const c_char,
) -> egress_result {
    call("egress_spec_builder_link_name", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, name, "name") }?;
        b.set_macvlan_option(|inner| inner.link_name(value))
    })
}

/// Adopts an existing link of the router namespace as the external link (OpenShift legacy
/// mode, where the SDN made `macvlan0`); teardown leaves the link. Replaces a macvlan set
/// before, and its options.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `link` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_adopt(
    builder: *mut egress_spec_builder,
    link: *const c_char,
) -> egress_result {
    call("egress_spec_builder_adopt", || {
        // SAFETY (both): as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let link = unsafe { arg_str(link, "link") }?;
        b.set(|inner| inner.adopt(link));
        b.macvlan = false;
        Ok(())
    })
}

/// The internal (cluster) link (default `eth0`).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `link` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_internal(
    builder: *mut egress_spec_builder,
    link: *const c_char,
) -> egress_result {
    call("egress_spec_builder_internal", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, link, "link") }?;
        b.set(|inner| inner.internal(value));
        Ok(())
    })
}

/// Adds an egress source, `ADDR` or `ADDR/PREFIX` (`ip addr add ... dev macvlan0`). The
/// first source of each family is the SNAT source.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `cidr` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_add_source(
    builder: *mut egress_spec_builder,
    cidr: *const c_char,
) -> egress_result {
    call("egress_spec_builder_add_source", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, cidr, "cidr") }?;
        b.set(|inner| inner.source(value));
        Ok(())
    })
}

/// Sets the gateway of one address family (`ip route add default via GW dev macvlan0`).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `ip` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_add_gateway(
    builder: *mut egress_spec_builder,
    ip: *const c_char,
) -> egress_result {
    call("egress_spec_builder_add_gateway", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, ip, "ip") }?;
        b.set(|inner| inner.gateway(value));
        Ok(())
    })
}

/// Adds a redirect: connections to `port`/`protocol` on the router's internal link go to
/// `to`:`to_port` (`to_port` 0 = `port`). `protocol` is an `egress_protocol`; any other value
/// returns `EGRESS_RESULT_OUT_OF_RANGE`. `port` must be 1 to 65535 (0 is refused by
/// `egress_spec_builder_build`); a port or `to_port` below 0 or above 65535 returns
/// `EGRESS_RESULT_OUT_OF_RANGE`.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `to` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_add_redirect(
    builder: *mut egress_spec_builder,
    protocol: u32,
    port: i64,
    to: *const c_char,
    to_port: i64,
) -> egress_result {
    call("egress_spec_builder_add_redirect", || {
        // SAFETY (both): as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let to = unsafe { arg_str(to, "to") }?;
        let protocol = self::protocol(protocol)?;
        let port = arg_int(port, "port", "a port from 1 to 65535")?;
        let to_port: u16 = arg_int(
            to_port,
            "to_port",
            "a port from 1 to 65535, or 0 for `port`",
        )?;
        let to_port = (to_port != 0).then_some(to_port);
        b.set(|inner| inner.redirect(protocol, port, to, to_port));
        Ok(())
    })
}

/// Sets the fallback destination of one address family: connections to any port that is
/// not redirected go there.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `ip` must be NULL or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_add_fallback(
    builder: *mut egress_spec_builder,
    ip: *const c_char,
) -> egress_result {
    call("egress_spec_builder_add_fallback", || {
        // SAFETY: as documented for the caller.
        let (b, value) = unsafe { builder_and_str(builder, ip, "ip") }?;
        b.set(|inner| inner.fallback(value));
        Ok(())
    })
}

/// Keeps network `cidr` reachable through the internal link (`ip route add CIDR via VIA dev
/// eth0`); `via` may be NULL for a directly connected network.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `cidr` must be NULL or a
/// NUL-terminated string; `via` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_add_kept_route(
    builder: *mut egress_spec_builder,
    cidr: *const c_char,
    via: *const c_char,
) -> egress_result {
    call("egress_spec_builder_add_kept_route", || {
        // SAFETY (all): as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let cidr = unsafe { arg_str(cidr, "cidr") }?;
        let via = if via.is_null() {
            None
        } else {
            Some(unsafe { arg_str(via, "via") }?)
        };
        b.set(|inner| inner.keep_route(cidr, via));
        Ok(())
    })
}

/// How many gratuitous ARPs / unsolicited neighbour advertisements to send per egress address
/// when it comes up (default 1, 0 = none, at most 16: 17 to 255 are refused by
/// `egress_spec_builder_build`; negative or above 255, `EGRESS_RESULT_OUT_OF_RANGE`).
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_announce(
    builder: *mut egress_spec_builder,
    count: i64,
) -> egress_result {
    call("egress_spec_builder_announce", || {
        // SAFETY: as documented for the caller.
        let b = unsafe { arg_mut(builder, "builder") }?;
        let count = arg_int(count, "count", "a count from 0 to 16")?;
        b.set(|inner| inner.announce(count));
        Ok(())
    })
}

/// Validates everything that needs no kernel and stores the spec in `*spec_out`.
///
/// Consumes `builder` whatever the result (unless it is NULL): it must not be used or freed
/// afterwards. `EGRESS_RESULT_INVALID_SPEC` names the field, the value and what would be valid.
///
/// # Safety
/// `builder` must be NULL or a live builder used by no other thread; `spec_out` must be NULL or
/// point to writable storage for a pointer. On success `*spec_out` owns a spec, to be released
/// with `egress_spec_free`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_builder_build(
    builder: *mut egress_spec_builder,
    spec_out: *mut *mut egress_spec,
) -> egress_result {
    call("egress_spec_builder_build", || {
        // SAFETY: as documented for the caller. The output first (NULL on every failure),
        // then the builder, consumed on every path, before a NULL `spec_out` is reported.
        let out = unsafe { arg_out(spec_out, "spec_out") };
        if builder.is_null() {
            return Err(Failure::new(
                egress_result::NullParameter,
                "argument `builder` is NULL",
            ));
        }
        // SAFETY: made by `Box::into_raw` and not released yet, as the caller promises.
        let b = unsafe { Box::from_raw(builder) };
        let out = out?;
        let spec = b.inner.build()?;
        *out = Box::into_raw(Box::new(egress_spec(spec)));
        Ok(())
    })
}

/// Parses and validates a spec from its JSON form (the one every front end shares; see the
/// README), such as `{"name": "egress-1", "netns": {"name": "pod"}, "external": {"macvlan":
/// {"parent": "eth1", "mode": "private"}}, "sources": ["203.0.113.99/24"], "gateways":
/// ["203.0.113.1"]}`. Unknown keys are rejected by name (`EGRESS_RESULT_INVALID_SPEC`).
///
/// # Safety
/// `json` must be NULL or a NUL-terminated string; `spec_out` must be NULL or point to writable
/// storage for a pointer. On success `*spec_out` owns a spec, to be released with
/// `egress_spec_free`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_from_json(
    json: *const c_char,
    spec_out: *mut *mut egress_spec,
) -> egress_result {
    call("egress_spec_from_json", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(spec_out, "spec_out") }?;
        let json = unsafe { arg_str(json, "json") }?;
        let spec = RouterSpec::from_json(json)?;
        *out = Box::into_raw(Box::new(egress_spec(spec)));
        Ok(())
    })
}

/// Releases a spec. `NULL` is a no-op. Routers applied from it are not affected.
///
/// # Safety
/// `spec` must be NULL or a spec from this library that is not freed yet and that no other
/// thread is using.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_free(spec: *mut egress_spec) {
    crate::error::boundary((), || {
        if !spec.is_null() {
            // SAFETY: made by `Box::into_raw` and not released yet, as the caller promises.
            drop(unsafe { Box::from_raw(spec) });
        }
    })
}

/// The dry run: every kernel change `egress_spec_apply` would make in a namespace without the
/// router, one numbered line each, into `*plan_out` (free it with `egress_string_free`). Needs
/// no kernel and changes nothing. (What a live namespace still needs is
/// `egress_spec_plan_live`.)
///
/// # Safety
/// `spec` must be NULL or a live spec; `plan_out` must be NULL or point to writable storage for
/// a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_plan(
    spec: *const egress_spec,
    plan_out: *mut *mut c_char,
) -> egress_result {
    call("egress_spec_plan", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(plan_out, "plan_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        put_string(out, spec.0.plan().to_string())
    })
}

/// The spec's JSON form into `*json_out` (free it with `egress_string_free`);
/// `egress_spec_from_json` reads it back to an equal spec.
///
/// # Safety
/// `spec` must be NULL or a live spec; `json_out` must be NULL or point to writable storage for
/// a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_to_json(
    spec: *const egress_spec,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_spec_to_json", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        put_string(out, spec.0.to_json())
    })
}

#[cfg(test)]
mod tests {
    use std::{
        ffi::{CStr, CString},
        ptr::{null, null_mut},
    };

    use super::*;
    use crate::{egress_string_free, error::tests::last_error};

    fn new(name: &CStr) -> *mut egress_spec_builder {
        let mut b = null_mut();
        assert_eq!(
            unsafe { egress_spec_builder_new(name.as_ptr(), &mut b) },
            egress_result::Ok
        );
        b
    }

    fn build(b: *mut egress_spec_builder) -> Result<*mut egress_spec, (egress_result, String)> {
        let mut spec = null_mut();
        match unsafe { egress_spec_builder_build(b, &mut spec) } {
            egress_result::Ok => Ok(spec),
            code => {
                assert!(spec.is_null());
                Err((code, last_error()))
            }
        }
    }

    fn take(s: *mut c_char) -> String {
        let text = unsafe { CStr::from_ptr(s) }.to_str().unwrap().to_owned();
        unsafe { egress_string_free(s) };
        text
    }

    /// The lab's router, call by call, with every setter.
    fn full_builder() -> *mut egress_spec_builder {
        let b = new(c"egress-1");
        unsafe {
            assert_eq!(
                egress_spec_builder_netns_path(b, c"/run/netns/pod".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_macvlan(
                    b,
                    c"eth1".as_ptr(),
                    egress_macvlan_mode::Private as u32
                ),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_parent_netns_pid(b, 1),
                egress_result::Ok
            );
            assert_eq!(egress_spec_builder_mtu(b, 1400), egress_result::Ok);
            assert_eq!(
                egress_spec_builder_mac(b, c"02:00:00:00:00:99".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_link_name(b, c"ext9".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_internal(b, c"eth0".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_source(b, c"203.0.113.99/24".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_gateway(b, c"203.0.113.1".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_redirect(
                    b,
                    egress_protocol::Tcp as u32,
                    80,
                    c"198.51.100.25".as_ptr(),
                    8080
                ),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_redirect(
                    b,
                    egress_protocol::Udp as u32,
                    53,
                    c"198.51.100.25".as_ptr(),
                    0
                ),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_fallback(b, c"198.51.100.9".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_kept_route(
                    b,
                    c"10.128.0.0/14".as_ptr(),
                    c"10.129.0.1".as_ptr()
                ),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_add_kept_route(b, c"10.0.0.0/8".as_ptr(), null()),
                egress_result::Ok
            );
            assert_eq!(egress_spec_builder_announce(b, 3), egress_result::Ok);
        }
        b
    }

    #[test]
    fn built_spec_equals_the_rust_builder_and_plans_the_same() {
        let spec = build(full_builder()).unwrap();
        let expected = RouterSpec::builder("egress-1")
            .netns_path("/run/netns/pod")
            .macvlan("eth1", MacvlanMode::Private)
            .parent_netns(Netns::Pid(1))
            .mtu(1400)
            .mac("02:00:00:00:00:99")
            .link_name("ext9")
            .internal("eth0")
            .source("203.0.113.99/24")
            .gateway("203.0.113.1")
            .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
            .redirect(Protocol::Udp, 53, "198.51.100.25", None)
            .fallback("198.51.100.9")
            .keep_route("10.128.0.0/14", Some("10.129.0.1"))
            .keep_route("10.0.0.0/8", None)
            .announce(3)
            .build()
            .unwrap();
        assert_eq!(unsafe { &(*spec).0 }, &expected);

        let mut plan = null_mut();
        assert_eq!(
            unsafe { egress_spec_plan(spec, &mut plan) },
            egress_result::Ok
        );
        assert_eq!(take(plan), expected.plan().to_string());

        let mut json = null_mut();
        assert_eq!(
            unsafe { egress_spec_to_json(spec, &mut json) },
            egress_result::Ok
        );
        let json = CString::new(take(json)).unwrap();
        let mut again = null_mut();
        assert_eq!(
            unsafe { egress_spec_from_json(json.as_ptr(), &mut again) },
            egress_result::Ok
        );
        assert_eq!(unsafe { &(*again).0 }, &expected);
        unsafe {
            egress_spec_free(spec);
            egress_spec_free(again);
        }
    }

    #[test]
    fn invalid_values_fail_at_build_naming_the_field() {
        type Mutate = fn(*mut egress_spec_builder) -> egress_result;
        let cases: [(&str, Mutate); 5] = [
            ("invalid redirects[2].port `0`", |b| unsafe {
                egress_spec_builder_add_redirect(b, 6, 0, c"198.51.100.1".as_ptr(), 0)
            }),
            ("invalid announce `17`", |b| unsafe {
                egress_spec_builder_announce(b, 17)
            }),
            ("invalid netns.pid `0`", |b| unsafe {
                egress_spec_builder_netns_pid(b, 0)
            }),
            ("invalid external.macvlan.mtu `67`", |b| unsafe {
                egress_spec_builder_mtu(b, 67)
            }),
            ("invalid sources[1] `203.0.113.300/24`", |b| unsafe {
                egress_spec_builder_add_source(b, c"203.0.113.300/24".as_ptr())
            }),
        ];
        for (expected, mutate) in cases {
            let b = full_builder();
            assert_eq!(
                mutate(b),
                egress_result::Ok,
                "setters check only their arguments"
            );
            let (code, msg) = build(b).unwrap_err();
            assert_eq!(code, egress_result::InvalidSpec, "{msg}");
            assert!(
                msg.starts_with(&format!("egress_spec_builder_build: {expected}")),
                "{msg}"
            );
        }
        let (code, msg) = build(new(c"Egress_1")).unwrap_err();
        assert_eq!(code, egress_result::InvalidSpec);
        assert!(
            msg.starts_with("egress_spec_builder_build: invalid name `Egress_1`"),
            "{msg}"
        );
    }

    #[test]
    fn enum_arguments_out_of_range() {
        let b = new(c"r");
        let r = unsafe { egress_spec_builder_macvlan(b, c"eth1".as_ptr(), 3) };
        assert_eq!(r, egress_result::OutOfRange);
        assert_eq!(
            last_error(),
            "egress_spec_builder_macvlan: argument `mode` is 3, expected an egress_macvlan_mode: \
             PRIVATE (1), VEPA (2), BRIDGE (4) or PASSTHRU (8)"
        );
        let r = unsafe { egress_spec_builder_add_redirect(b, 1, 80, c"198.51.100.1".as_ptr(), 0) };
        assert_eq!(r, egress_result::OutOfRange);
        assert!(
            last_error().contains("argument `protocol` is 1"),
            "{}",
            last_error()
        );
        unsafe { egress_spec_builder_free(b) };
    }

    /// An integer the field cannot hold is refused by name and value, never truncated.
    #[test]
    fn integers_out_of_the_field_s_range() {
        let b = new(c"r");
        let to = c"198.51.100.1".as_ptr();
        assert_eq!(
            unsafe { egress_spec_builder_macvlan(b, c"eth1".as_ptr(), 1) },
            egress_result::Ok
        );
        type Set = Box<dyn Fn(*mut egress_spec_builder) -> egress_result>;
        let cases: [(Set, &str); 8] = [
            (
                Box::new(move |b| unsafe { egress_spec_builder_add_redirect(b, 6, 65_616, to, 0) }),
                "argument `port` is 65616, expected a port from 1 to 65535",
            ),
            (
                Box::new(move |b| unsafe { egress_spec_builder_add_redirect(b, 6, -1, to, 0) }),
                "argument `port` is -1, expected a port from 1 to 65535",
            ),
            (
                Box::new(move |b| unsafe {
                    egress_spec_builder_add_redirect(b, 6, 80, to, 70_000)
                }),
                "argument `to_port` is 70000",
            ),
            (
                Box::new(|b| unsafe { egress_spec_builder_announce(b, 256) }),
                "argument `count` is 256, expected a count from 0 to 16",
            ),
            (
                Box::new(|b| unsafe { egress_spec_builder_announce(b, -1) }),
                "argument `count` is -1",
            ),
            (
                Box::new(|b| unsafe { egress_spec_builder_netns_pid(b, -1) }),
                "argument `pid` is -1, expected a process id (above 0)",
            ),
            (
                Box::new(|b| unsafe { egress_spec_builder_parent_netns_pid(b, 1 << 32) }),
                "argument `pid` is 4294967296",
            ),
            (
                Box::new(|b| unsafe { egress_spec_builder_mtu(b, -1500) }),
                "argument `mtu` is -1500",
            ),
        ];
        for (set, message) in cases {
            assert_eq!(set(b), egress_result::OutOfRange, "{message}");
            assert!(last_error().contains(message), "{}", last_error());
        }
        // What the fields hold reaches the spec as it is.
        assert_eq!(
            unsafe { egress_spec_builder_add_redirect(b, 6, 65_535, to, 65_535) },
            egress_result::Ok
        );
        assert_eq!(
            unsafe { egress_spec_builder_announce(b, 16) },
            egress_result::Ok
        );
        unsafe { egress_spec_builder_adopt(b, c"m".as_ptr()) };
        unsafe { egress_spec_builder_add_source(b, c"203.0.113.9".as_ptr()) };
        unsafe { egress_spec_builder_add_gateway(b, c"203.0.113.1".as_ptr()) };
        let spec = build(b).unwrap();
        let redirect = &unsafe { &(*spec).0 }.redirects()[0];
        assert_eq!((redirect.port, redirect.to_port), (65_535, 65_535));
        unsafe { egress_spec_free(spec) };
    }

    #[test]
    fn macvlan_options_need_a_macvlan() {
        let b = new(c"r");
        let r = unsafe { egress_spec_builder_mtu(b, 1500) };
        assert_eq!(r, egress_result::MacvlanNotSet);
        assert!(
            last_error().starts_with("egress_spec_builder_mtu: "),
            "{}",
            last_error()
        );
        unsafe {
            assert_eq!(
                egress_spec_builder_macvlan(b, c"eth1".as_ptr(), 4),
                egress_result::Ok
            );
            assert_eq!(egress_spec_builder_mtu(b, 1500), egress_result::Ok);
            // Adopting replaces the macvlan, and with it the place for its options.
            assert_eq!(
                egress_spec_builder_adopt(b, c"macvlan0".as_ptr()),
                egress_result::Ok
            );
            assert_eq!(
                egress_spec_builder_mac(b, c"02:00:00:00:00:01".as_ptr()),
                egress_result::MacvlanNotSet
            );
            egress_spec_builder_free(b);
        }
    }

    #[test]
    fn null_and_invalid_utf8_arguments() {
        let mut b = null_mut();
        let r = unsafe { egress_spec_builder_new(null(), &mut b) };
        assert_eq!((r, b.is_null()), (egress_result::NullParameter, true));
        assert_eq!(
            last_error(),
            "egress_spec_builder_new: argument `name` is NULL"
        );
        let r = unsafe { egress_spec_builder_new(c"r".as_ptr(), null_mut()) };
        assert_eq!(r, egress_result::NullParameter);
        let r = unsafe { egress_spec_builder_add_source(null_mut(), c"x".as_ptr()) };
        assert_eq!(r, egress_result::NullParameter);
        let b = new(c"r");
        let r = unsafe { egress_spec_builder_add_gateway(b, c"\xc3(".as_ptr()) };
        assert_eq!(r, egress_result::InvalidUtf8);
        assert_eq!(
            last_error(),
            "egress_spec_builder_add_gateway: argument `ip` is not valid UTF-8 (bad byte at offset 0)"
        );
        // NULL spec_out still consumes the builder (no leak; checked under ASan by the C tests).
        assert_eq!(
            unsafe { egress_spec_builder_build(b, null_mut()) },
            egress_result::NullParameter
        );
        assert_eq!(
            unsafe { egress_spec_builder_build(null_mut(), null_mut()) },
            egress_result::NullParameter
        );
        // A NULL builder leaves the output NULL too, whatever it held.
        let mut spec = std::ptr::dangling_mut::<egress_spec>();
        assert_eq!(
            unsafe { egress_spec_builder_build(null_mut(), &mut spec) },
            egress_result::NullParameter
        );
        assert!(spec.is_null());
        unsafe {
            egress_spec_builder_free(null_mut());
            egress_spec_free(null_mut());
        }
    }

    #[test]
    fn json_errors_name_the_key() {
        let mut spec = null_mut();
        let json = cr#"{"name": "r", "external": {"adopt": "m"}, "sources": ["203.0.113.9"],
                         "gateways": ["203.0.113.1"], "fallbackIP": "198.51.100.9"}"#;
        let r = unsafe { egress_spec_from_json(json.as_ptr(), &mut spec) };
        assert_eq!((r, spec.is_null()), (egress_result::InvalidSpec, true));
        assert!(
            last_error().contains("unknown field `fallbackIP`"),
            "{}",
            last_error()
        );
    }

    #[test]
    fn nul_in_a_json_namespace_name_is_refused() {
        let json = cr#"{"name": "r", "netns": {"name": "a\u0000b"}, "external": {"macvlan": {"parent": "eth1"}},
                         "sources": ["203.0.113.9"], "gateways": ["203.0.113.1"]}"#;
        let mut spec = null_mut();
        let r = unsafe { egress_spec_from_json(json.as_ptr(), &mut spec) };
        assert_eq!((r, spec.is_null()), (egress_result::InvalidSpec, true));
        assert!(last_error().contains("netns.name"), "{}", last_error());
    }
}
