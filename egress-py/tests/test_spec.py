"""The builder, the JSON form, validation errors, the plan, the exception hierarchy: no kernel
needed (no root)."""

from __future__ import annotations

import copy
import inspect
import multiprocessing
import os
import pathlib
import pickle
import pydoc
from typing import Callable

import pytest

import egress
from egress import RouterSpec


def base() -> RouterSpec:
    return (
        RouterSpec(name="egress-1", netns="/run/netns/pod")
        .macvlan(parent="eth1", mode="private")
        .source("203.0.113.99/24")
        .gateway("203.0.113.1")
    )


ISSUE_EXAMPLE = {
    "name": "egress-1",
    "netns": {"path": "/run/netns/pod"},
    "external": {"macvlan": {"parent": "eth1", "mode": "bridge", "name": "macvlan0"}},
    "internal": "eth0",
    "sources": ["203.0.113.99/24"],
    "gateways": ["203.0.113.1"],
    "redirects": [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", "to_port": 8080}],
    "fallback": ["198.51.100.9"],
    "announce": 1,
}


def test_builder_chain_gives_the_json_form() -> None:
    spec = (
        RouterSpec(name="egress-1", netns="/run/netns/pod")
        .macvlan(parent="eth1", mode="bridge")
        .source("203.0.113.99/24")
        .gateway("203.0.113.1")
        .redirect(80, "198.51.100.25", 8080)
        .fallback("198.51.100.9")
    )
    assert spec.to_dict() == ISSUE_EXAMPLE
    assert spec.name == "egress-1"
    assert spec.validate() is spec


def test_keyword_arguments_equal_methods() -> None:
    by_kwargs = RouterSpec(
        name="r",
        netns="pod",
        internal="eth9",
        sources=["203.0.113.9", "2001:db8::9/64"],
        gateways=["203.0.113.1", "2001:db8::1"],
        fallback=["198.51.100.9"],
        announce=3,
    ).adopt("macvlan0")
    by_methods = (
        RouterSpec("r")
        .netns("pod")
        .adopt("macvlan0")
        .internal("eth9")
        .source("203.0.113.9")
        .source("2001:db8::9/64")
        .gateway("203.0.113.1")
        .gateway("2001:db8::1")
        .fallback("198.51.100.9")
        .announce(3)
    )
    assert by_kwargs.to_dict() == by_methods.to_dict()
    d = by_kwargs.to_dict()
    assert d["netns"] == {"name": "pod"}
    assert d["sources"] == ["203.0.113.9/32", "2001:db8::9/64"]
    assert d["external"] == {"adopt": "macvlan0"}


def test_every_namespace_form() -> None:
    def netns(ns: object) -> object:
        return base().netns(ns).to_dict().get("netns")  # type: ignore[arg-type]

    assert netns("/run/netns/pod") == {"path": "/run/netns/pod"}
    assert netns(pathlib.Path("/proc/1/ns/net")) == {"path": "/proc/1/ns/net"}
    assert netns("pod") == {"name": "pod"}
    assert netns(1) == {"pid": 1}
    assert netns(None) is None
    m = base().macvlan("eth1", parent_netns=42, mtu=1400, mac="02:00:00:00:00:99", name="ext9")
    assert m.to_dict()["external"] == {
        "macvlan": {
            "parent": "eth1",
            "parent_netns": {"pid": 42},
            "mode": "bridge",
            "mtu": 1400,
            "mac": "02:00:00:00:00:99",
            "name": "ext9",
        }
    }


def test_methods_return_new_specs() -> None:
    spec = base()
    more = spec.source("203.0.113.98/24").redirect(53, "198.51.100.53", protocol="udp")
    assert spec.to_dict()["sources"] == ["203.0.113.99/24"]
    assert "redirects" not in spec.to_dict()
    assert more.to_dict()["sources"] == ["203.0.113.99/24", "203.0.113.98/24"]
    assert more.to_dict()["redirects"] == [{"protocol": "udp", "port": 53, "to": "198.51.100.53"}]


def test_dict_round_trip_and_repr() -> None:
    spec = RouterSpec.from_dict(ISSUE_EXAMPLE).keep_route("10.128.0.0/14", "10.129.0.1")
    d = spec.to_dict()
    assert d["kept_routes"] == [{"to": "10.128.0.0/14", "via": "10.129.0.1"}]
    assert RouterSpec.from_dict(d).to_dict() == d
    again = eval(repr(spec), {"RouterSpec": RouterSpec})
    assert again.to_dict() == d


def test_a_spec_pickles_through_its_json_form() -> None:
    spec = RouterSpec.from_dict(ISSUE_EXAMPLE).keep_route("10.128.0.0/14", "10.129.0.1")
    again = pickle.loads(pickle.dumps(spec))
    assert isinstance(again, RouterSpec) and again.to_dict() == spec.to_dict()
    assert copy.deepcopy(spec).to_dict() == spec.to_dict()
    # Only a valid spec pickles: the other side could not read it back.
    with pytest.raises(egress.InvalidSpecError, match="announce"):
        pickle.dumps(spec.announce(17))
    # multiprocessing with spawn: the spec crosses to a new interpreter and back.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(RouterSpec.to_dict, (spec,)) == spec.to_dict()
        more = pool.apply(RouterSpec.source, (spec, "203.0.113.98/24"))
    assert more.to_dict()["sources"] == ["203.0.113.99/24", "203.0.113.98/24"]


def test_local_ports_round_trip_and_a_redirected_one_is_a_conflict() -> None:
    local = [{"protocol": "tcp", "port": 9100}]
    spec = RouterSpec.from_dict({**ISSUE_EXAMPLE, "local_ports": local})
    assert spec.to_dict()["local_ports"] == local
    assert RouterSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    assert any("local ports tcp/9100 accepted" in str(s) for s in spec.plan())
    with pytest.raises(egress.InvalidSpecError) as e:
        RouterSpec.from_dict({**ISSUE_EXAMPLE, "local_ports": [{"protocol": "tcp", "port": 80}]})
    assert (e.value.field, e.value.value) == ("local_ports[0].port", "tcp/80")
    assert e.value.expected == "a port no redirect takes (redirects[0] sends tcp/80 to 198.51.100.25)"


def test_from_dict_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(egress.InvalidSpecError, match="unknown field `fallbackIP`") as e:
        RouterSpec.from_dict({**ISSUE_EXAMPLE, "fallbackIP": "198.51.100.9"})
    assert (e.value.field, e.value.value) == ("fallbackIP", '"198.51.100.9"')


def test_from_dict_validates_at_once() -> None:
    with pytest.raises(egress.InvalidSpecError) as e:
        RouterSpec.from_dict({**ISSUE_EXAMPLE, "gateways": ["2001:db8::1"]})
    assert e.value.field == "gateways[0]"


def test_from_dict_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="from_dict\\(\\) takes a dict, not list"):
        RouterSpec.from_dict([("name", "x")])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^netns.path must be a JSON value .*, not PosixPath$"):
        RouterSpec.from_dict({**ISSUE_EXAMPLE, "netns": {"path": pathlib.Path("/x")}})
    with pytest.raises(TypeError, match=r"^redirects\[0\]: keys must be str, not int$"):
        RouterSpec.from_dict({**ISSUE_EXAMPLE, "redirects": [{1: "x"}]})
    with pytest.raises(TypeError, match="^spec: keys must be str, not int$"):
        RouterSpec.from_dict({**ISSUE_EXAMPLE, 1: "x"})  # type: ignore[dict-item]


# Each builder mistake: the exception class, the field and the exact message.
INVALID: list[tuple[str, Callable[[], object], str, str]] = [
    (
        "name",
        lambda: RouterSpec("Egress_1").adopt("m").source("203.0.113.9").gateway("203.0.113.1").plan(),
        "name",
        "invalid name `Egress_1`: 1 to 32 characters from [a-z0-9-]",
    ),
    (
        "source",
        lambda: base().source("203.0.113.300/24").plan(),
        "sources[1]",
        "invalid sources[1] `203.0.113.300/24`: an IPv4 or IPv6 address with an optional /prefix",
    ),
    (
        "no sources",
        lambda: RouterSpec("r").adopt("m").plan(),
        "sources",
        "invalid sources `[]`: at least one address, e.g. 203.0.113.99/24",
    ),
    (
        "gateway family",
        lambda: base().gateway("2001:db8::1").plan(),
        "gateways[1]",
        "invalid gateways[1] `2001:db8::1`: an address of a family with a source (IPv6 has no source)",
    ),
    (
        "second gateway",
        lambda: base().gateway("203.0.113.2").check(),
        "gateways[1]",
        "invalid gateways[1] `203.0.113.2`: one gateway per address family",
    ),
    (
        "protocol",
        lambda: base().redirect(80, "198.51.100.25", protocol="icmp").apply(),
        "redirects[0].protocol",
        "invalid redirects[0].protocol `icmp`: one of tcp, udp, sctp",
    ),
    (
        "port 0",
        lambda: base().redirect(0, "198.51.100.25").ensure(),
        "redirects[0].port",
        "invalid redirects[0].port `0`: a port from 1 to 65535",
    ),
    (
        "port too big",
        lambda: base().redirect(80, "198.51.100.25").redirect(70000, "198.51.100.25").plan(),
        "redirects[1].port",
        "invalid redirects[1].port `70000`: a port from 1 to 65535",
    ),
    (
        "negative port",
        lambda: base().redirect(-1, "198.51.100.25"),
        "redirects[0].port",
        "invalid redirects[0].port `-1`: a port from 1 to 65535",
    ),
    (
        "negative to_port",
        lambda: base().redirect(80, "198.51.100.25", -8080),
        "redirects[0].to_port",
        "invalid redirects[0].to_port `-8080`: a port from 1 to 65535",
    ),
    (
        "duplicate redirect",
        lambda: base().redirect(80, "198.51.100.1").redirect(80, "198.51.100.2").plan(),
        "redirects[1].port",
        "invalid redirects[1].port `80/tcp`: a local port not redirected before for this protocol and family",
    ),
    (
        "redirect target",
        lambda: base().redirect(80, "web.example").plan(),
        "redirects[0].to",
        "invalid redirects[0].to `web.example`: an IPv4 or IPv6 address",
    ),
    (
        "mode",
        lambda: base().macvlan("eth1", "brige"),
        "external.macvlan.mode",
        "invalid external.macvlan.mode `brige`: unknown variant `brige`, expected one of "
        "`bridge`, `private`, `vepa`, `passthru`",
    ),
    (
        "mac",
        lambda: base().macvlan("eth1", mac="01:00:00:00:00:01").plan(),
        "external.macvlan.mac",
        "invalid external.macvlan.mac `01:00:00:00:00:01`: a unicast MAC address (first octet even, not all zero)",
    ),
    (
        "mtu",
        lambda: base().macvlan("eth1", mtu=67).plan(),
        "external.macvlan.mtu",
        "invalid external.macvlan.mtu `67`: an MTU from 68 to 65535",
    ),
    (
        "negative mtu",
        lambda: base().macvlan("eth1", mtu=-1),
        "external.macvlan.mtu",
        "invalid external.macvlan.mtu `-1`: an MTU from 68 to 65535",
    ),
    (
        "announce",
        lambda: base().announce(17).plan(),
        "announce",
        "invalid announce `17`: a count from 0 to 16",
    ),
    (
        "announce beyond a byte",
        lambda: base().announce(300),
        "announce",
        "invalid announce `300`: a count from 0 to 16",
    ),
    (
        "internal is external",
        lambda: base().internal("macvlan0").plan(),
        "internal",
        "invalid internal `macvlan0`: a link other than the external link",
    ),
    (
        "no external link",
        lambda: RouterSpec("r", sources=["203.0.113.9"], gateways=["203.0.113.1"]).to_dict(),
        "external",
        'invalid external `(missing)`: {"macvlan": {"parent": "<link>", …}} or {"adopt": "<link>"}',
    ),
    (
        "relative netns path",
        lambda: base().netns(pathlib.Path("relative/ns")).plan(),
        "netns.path",
        "invalid netns.path `relative/ns`: an absolute path such as /run/netns/pod or /proc/PID/ns/net (no NUL)",
    ),
    (
        "netns name",
        lambda: base().netns("pods/a").plan(),
        "netns.name",
        "invalid netns.name `pods/a`: a namespace name under /run/netns (no `/` or NUL, not `.` or `..`)",
    ),
    (
        "negative pid",
        lambda: base().netns(-5),
        "netns.pid",
        "invalid netns.pid `-5`: a process id above 0",
    ),
    (
        "kept route",
        lambda: base().keep_route("10.128.0.1/14").validate(),
        "kept_routes[0].to",
        "invalid kept_routes[0].to `10.128.0.1/14`: a network address (host bits zero: 10.128.0.0/14)",
    ),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_names_field_and_value(case: tuple[str, Callable[[], object], str, str]) -> None:
    _, build, field, message = case
    with pytest.raises(egress.InvalidSpecError) as e:
        build()
    assert str(e.value) == message
    assert e.value.field == field
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, egress.EgressError)


def test_invalid_spec_attributes() -> None:
    with pytest.raises(ValueError) as e:
        base().source("224.0.0.1").plan()
    err = e.value
    assert isinstance(err, egress.InvalidSpecError)
    assert (err.field, err.value, err.expected) == (
        "sources[1]",
        "224.0.0.1",
        "a unicast address (not unspecified, loopback, multicast or broadcast)",
    )


WRONG_TYPES: list[tuple[str, Callable[[], object], str]] = [
    ("name", lambda: RouterSpec(name=1), "not an instance of 'str'"),  # type: ignore[arg-type]
    ("sources str", lambda: RouterSpec("r", sources="203.0.113.9"), "Can't extract `str` to `Vec`"),
    ("source", lambda: base().source(5), "not an instance of 'str'"),  # type: ignore[arg-type]
    ("port str", lambda: base().redirect("80", "198.51.100.1"), "port must be an int, not str"),  # type: ignore[arg-type]
    ("port bool", lambda: base().redirect(True, "198.51.100.1"), "port must be an int, not bool"),
    ("to_port float", lambda: base().redirect(80, "198.51.100.1", 80.0), "to_port must be an int, not float"),  # type: ignore[arg-type]
    ("to int", lambda: base().redirect(80, 1), "to must be a str, not int"),  # type: ignore[arg-type]
    ("protocol None", lambda: base().redirect(80, "198.51.100.1", None, None), "protocol must be a str, not NoneType"),  # type: ignore[arg-type]
    ("redirect without to", lambda: base().redirect(80), "redirect() missing required argument 'to'"),  # type: ignore[call-arg]
    ("redirect to twice", lambda: base().redirect(80, "198.51.100.1", to="198.51.100.2"), "multiple values for argument 'to'"),  # type: ignore[misc]
    ("redirect too many", lambda: base().redirect(80, "198.51.100.1", 8080, "tcp", 1), "at most 4 positional arguments (5 given)"),  # type: ignore[call-arg]
    ("mtu", lambda: base().macvlan("eth1", mtu="1500"), "mtu must be an int, not str"),  # type: ignore[arg-type]
    ("announce", lambda: base().announce(None), "count must be an int, not NoneType"),  # type: ignore[arg-type]
    ("netns float", lambda: base().netns(1.5), "netns must be a namespace path or name"),  # type: ignore[arg-type]
    ("netns bool", lambda: base().netns(True), "netns must be a namespace path or name"),
    ("teardown name", lambda: egress.teardown(5), "not an instance of 'str'"),  # type: ignore[arg-type]
    ("inspect netns", lambda: egress.inspect("r", netns=b"/run/netns/x"), "netns must be a namespace path"),  # type: ignore[arg-type]
    ("inspect positional netns", lambda: egress.inspect("r", "/run/netns/x"), "positional argument"),  # type: ignore[call-arg]
    ("from_env", lambda: RouterSpec.from_env({"EGRESS_SOURCE": 5}), "keys and values must be str, not int"),  # type: ignore[dict-item]
]


@pytest.mark.parametrize("case", WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_argument_types_raise_type_error(case: tuple[str, Callable[[], object], str]) -> None:
    _, call, message = case
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_plan_steps_read_like_commands() -> None:
    spec = base().redirect(80, "198.51.100.25", 8080).fallback("198.51.100.9")
    steps = spec.plan()
    assert [s.index for s in steps] == list(range(1, len(steps) + 1))
    text = [str(s) for s in steps]
    # The crash record first, then the table, then the link.
    assert text[0].startswith("ip -6 route add blackhole 6567:… table 1701278323 proto 158")
    assert text[1].startswith('nft add table inet egress_egress_1 { comment "<crash record>" }')
    assert "dnat 1 redirect via map + fallback 198.51.100.9" in text[1]
    assert text[2].startswith(
        "ip link add macvlan0 link eth1 netns /run/netns/pod type macvlan mode private up group 0x"
    )
    assert (
        "ip route save: copy the default routes of table main to tables 1701278323 and 1701278317"
        in text
    )
    assert "ip addr add 203.0.113.99/24 dev macvlan0 proto 158" in text
    assert "ip route replace default via 203.0.113.1 dev macvlan0 proto 158 (previous default routes removed)" in text
    assert "sysctl -w net.ipv4.ip_forward=1" in text
    assert text[-1] == (
        "ip link set dev macvlan0 address <its own> (the kernel announces 203.0.113.99; x1, 100 ms apart)"
    )
    assert repr(steps[1]) == f"<egress.Step 2: {text[1]}>"


def test_from_env_is_the_openshift_contract() -> None:
    env = {
        "EGRESS_SOURCE": "203.0.113.99/24",
        "EGRESS_GATEWAY": "203.0.113.1",
        "EGRESS_DESTINATION": "80 tcp 198.51.100.25 8080\n198.51.100.9",
        "EGRESS_ROUTER_MODE": "init",
        "PATH": "/usr/bin",
    }
    d = RouterSpec.from_env(env).to_dict()
    assert d["external"] == {"adopt": "macvlan0"}
    assert "netns" not in d
    assert d["redirects"] == [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", "to_port": 8080}]
    assert d["fallback"] == ["198.51.100.9"]
    assert RouterSpec.from_env(os.environ | env).to_dict() == d
    with pytest.raises(egress.InvalidSpecError) as e:
        RouterSpec.from_env({**env, "EGRESS_SOURCE": "999.1.1.1"})
    assert e.value.field == "EGRESS_SOURCE"
    assert "octet 999 is over 255" in str(e.value)
    with pytest.raises(TypeError, match="from_env\\(\\) takes a mapping"):
        RouterSpec.from_env(["EGRESS_SOURCE=203.0.113.99"])  # type: ignore[arg-type]


def test_exception_hierarchy() -> None:
    kinds = [
        egress.InvalidSpecError,
        egress.PermissionDeniedError,
        egress.NotFoundError,
        egress.AlreadyExistsError,
        egress.ConflictError,
        egress.KernelError,
        egress.ApplyError,
        egress.RollbackIncompleteError,
        egress.TeardownError,
        egress.StaleHandleError,
        egress.TeardownInProgressError,
        egress.VerifyError,
        egress.UndoSkippedError,
    ]
    for kind in kinds:
        assert issubclass(kind, egress.EgressError)
        assert kind.__module__ == "egress"
        assert kind.__doc__
    assert issubclass(egress.InvalidSpecError, ValueError)
    # Errors of how the library ran (a call inside its own runtime, work outside one) are gone
    # with the second runtime that caused them.
    assert not hasattr(egress, "BlockingInAsyncError")
    assert not hasattr(egress, "NoRuntimeError")
    for kind in (
        egress.StaleHandleError,
        egress.TeardownInProgressError,
        egress.VerifyError,
        egress.UndoSkippedError,
    ):
        assert not issubclass(kind, (ValueError, RuntimeError, egress.ApplyError))
    assert issubclass(egress.RollbackIncompleteError, egress.ApplyError)
    assert issubclass(egress.EgressError, Exception)


def test_public_names_are_documented() -> None:
    public = {n for n in dir(egress) if not n.startswith("_")}
    assert set(egress.__all__) == public | {"__version__"}
    for name in egress.__all__:
        obj = getattr(egress, name)
        if name != "__version__":
            assert obj.__doc__, name
    for cls in (egress.RouterSpec, egress.Router, egress.Step, egress.Drift, egress.EnsureResult):
        for attr, member in vars(cls).items():
            if not attr.startswith("_"):
                assert member.__doc__, f"{cls.__name__}.{attr}"
    text = pydoc.plain(pydoc.render_doc(egress.RouterSpec))
    assert "Creates a macvlan on `parent` as the external link" in text
    assert str(inspect.signature(RouterSpec.macvlan)) == (
        "(self, /, parent, mode='bridge', *, parent_netns=None, mtu=None, mac=None, name=None)"
    )
    assert "Every method returns a new RouterSpec" in text
    assert "redirect(self, /, port, to, to_port=None, protocol='tcp')" in text
    assert str(inspect.signature(RouterSpec.redirect)) == (
        "(self, /, port, to, to_port=None, protocol='tcp')"
    )
