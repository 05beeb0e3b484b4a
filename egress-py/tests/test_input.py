"""Bad input is an exception that names the field, never a crash: self-referencing and deeply
nested dicts, integers beyond 64 bits, values of the wrong type, subclasses that run code,
namespace names that leave /run/netns; every invalid field at once. No kernel needed (no
root)."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest

import egress
from egress import RouterSpec

BASE: dict[str, Any] = {
    "name": "egress-1",
    "external": {"adopt": "macvlan0"},
    "sources": ["203.0.113.99/24"],
    "gateways": ["203.0.113.1"],
}


def redirect(**fields: Any) -> dict[str, Any]:
    return {**BASE, "redirects": [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", **fields}]}


def invalid(spec: dict[str, Any]) -> egress.InvalidSpecError:
    with pytest.raises(egress.InvalidSpecError) as e:
        RouterSpec.from_dict(spec)
    return e.value


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_a_dict_that_contains_itself() -> None:
    spec: dict[str, Any] = dict(BASE)
    spec["external"] = {"macvlan": {"parent": "eth1"}}
    spec["external"]["macvlan"]["parent_netns"] = spec["external"]
    e = invalid(spec)
    assert e.field == "external.macvlan.parent_netns"
    assert e.value == "(dict that contains itself)"
    assert e.expected == "a JSON value (a dict or list cannot contain itself)"


def test_a_list_that_contains_itself() -> None:
    sources: list[Any] = ["203.0.113.99/24"]
    sources.append(sources)
    e = invalid({**BASE, "sources": sources})
    assert (e.field, e.value) == ("sources[1]", "(list that contains itself)")


def test_the_same_object_twice_is_not_a_cycle() -> None:
    r = {"protocol": "tcp", "port": 80, "to": "198.51.100.25"}
    e = invalid({**BASE, "redirects": [r, r]})
    # Found by the core's validation: the walk itself went through.
    assert (e.field, e.value) == ("redirects[1].port", "80/tcp")


@pytest.mark.parametrize("depth", [33, 1_000, 10_000, 100_000])
def test_deep_nesting(depth: int) -> None:
    e = invalid({**BASE, "sources": nested(depth, "203.0.113.99/24")})
    assert e.field == "sources" + "[0]" * 31
    assert e.value == "(list nested 32 levels deep)"
    assert e.expected == "a JSON value nested at most 32 levels deep"


def test_deep_dicts() -> None:
    deep: dict[str, Any] = {}
    for _ in range(10_000):
        deep = {"x": deep}
    e = invalid({**BASE, "netns": deep})
    assert e.field == "netns" + ".x" * 31


def test_nesting_within_the_bound_reaches_validation() -> None:
    e = invalid({**BASE, "sources": nested(30, "203.0.113.99/24")})
    assert e.field == "sources[0]"
    assert e.expected.startswith("invalid type: sequence, expected a string")


BIG = [
    (2**64, "18446744073709551616"),
    (2**70, "1180591620717411303424"),
    (-(2**63) - 1, "-9223372036854775809"),
    (10**5000, "(an integer of 16610 bits)"),
]


@pytest.mark.parametrize("value,shown", BIG, ids=["2**64", "2**70", "-2**63-1", "10**5000"])
def test_integers_beyond_64_bits(value: int, shown: str) -> None:
    e = invalid(redirect(to_port=value))
    assert (e.field, e.value, e.expected) == ("redirects[0].to_port", shown, "an integer that fits in 64 bits")


class EvilInt(int):
    """An int subclass whose methods would break the walk if it called them."""

    def __str__(self) -> str:
        raise AssertionError("__str__ called")

    __repr__ = __str__

    def __index__(self) -> int:
        raise AssertionError("__index__ called")


class EvilList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise AssertionError("__iter__ called")


class EvilDict(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise AssertionError("items called")

    def __iter__(self) -> Any:
        raise AssertionError("__iter__ called")


def test_subclasses_are_read_as_their_base_type_without_running_their_code() -> None:
    spec = RouterSpec.from_dict(
        EvilDict({**BASE, "sources": EvilList(["203.0.113.99/24"]), "announce": EvilInt(2)})
    )
    assert spec.to_dict()["announce"] == 2
    e = invalid(redirect(port=EvilInt(2**70)))
    assert (e.field, e.value) == ("redirects[0].port", "1180591620717411303424")


# A value of the wrong JSON type: the field, its value as JSON, serde's words for the mistake.
WRONG: list[tuple[str, dict[str, Any], str, str, str]] = [
    ("port str", redirect(port="80"), "redirects[0].port", '"80"', 'invalid type: string "80", expected u64'),
    ("port negative", redirect(port=-1), "redirects[0].port", "-1", "invalid value: integer `-1`, expected u64"),
    ("port float", redirect(port=80.0), "redirects[0].port", "80.0", "invalid type: floating point `80.0`, expected u64"),
    ("port bool", redirect(port=True), "redirects[0].port", "true", "invalid type: boolean `true`, expected u64"),
    ("port None", redirect(port=None), "redirects[0].port", "null", "invalid type: null, expected u64"),
    ("to list", redirect(to=["a"]), "redirects[0].to", '["a"]', "invalid type: sequence, expected a string"),
    ("announce bool", {**BASE, "announce": False}, "announce", "false",
     'invalid type: boolean `false`, expected a count, or {"count": N, "interval_ms": M}'),
    ("announce 256", {**BASE, "announce": 256}, "announce", "256", "a count from 0 to 16"),
    ("mtu str", {**BASE, "external": {"macvlan": {"parent": "eth1", "mtu": "1500"}}},
     "external.macvlan.mtu", '"1500"', 'invalid type: string "1500", expected u32'),
    ("pid float", {**BASE, "netns": {"pid": 1.5}}, "netns.pid", "1.5", "invalid type: floating point `1.5`, expected u32"),
    ("netns str", {**BASE, "netns": "pod"}, "netns", '"pod"', "unknown variant `pod`, expected one of `path`, `name`, `pid`"),
    ("sources str", {**BASE, "sources": "203.0.113.99/24"}, "sources", '"203.0.113.99/24"',
     'invalid type: string "203.0.113.99/24", expected a sequence'),
    ("unknown nested key", {**BASE, "kept_routes": [{"to": "10.0.0.0/8", "gw": "x"}]}, "kept_routes[0].gw", '"x"',
     "unknown field `gw`, expected `to` or `via`"),
    ("missing key", {**BASE, "kept_routes": [{"via": "10.0.0.1"}]}, "kept_routes[0]", '{"via":"10.0.0.1"}',
     "missing field `to`"),
    ("missing name", {"sources": []}, "spec", '{"sources":[]}', "missing field `name`"),
]


@pytest.mark.parametrize("case", WRONG, ids=[c[0] for c in WRONG])
def test_wrong_json_types_name_the_field(case: tuple[str, dict[str, Any], str, str, str]) -> None:
    _, spec, field, value, expected = case
    e = invalid(spec)
    assert (e.field, e.value, e.expected) == (field, value, expected)
    assert str(e) == f"invalid {field} `{value}`: {expected}"
    assert e.errors == [{"field": field, "value": value, "expected": expected}]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_floats_that_json_cannot_hold(value: float) -> None:
    e = invalid({**BASE, "announce": value})
    assert (e.field, e.expected) == ("announce", "a finite number")


def test_unicode() -> None:
    e = invalid({**BASE, "internal": "eth\ud800"})
    assert (e.field, e.value) == ("internal", "'eth\\ud800'")
    assert e.expected == "a str of valid Unicode (no lone surrogates)"
    e = invalid({**BASE, "\udcff": 1})
    assert e.field == "spec"
    e = invalid({**BASE, "name": "égress"})  # valid Unicode, not a valid router name
    assert (e.field, e.value) == ("name", "égress")
    e = invalid({**BASE, "nåme": "x"})
    assert e.field == "nåme" and "unknown field `nåme`" in e.expected


@pytest.mark.parametrize(
    "value,type_name",
    [(b"eth0", "bytes"), ({"eth0"}, "set"), (object(), "object"), (1j, "complex"), (bytearray(), "bytearray")],
)
def test_values_that_are_not_json_are_type_errors(value: object, type_name: str) -> None:
    with pytest.raises(TypeError) as e:
        RouterSpec.from_dict({**BASE, "kept_routes": [{"to": value}]})
    assert str(e.value) == (
        f"kept_routes[0].to must be a JSON value (dict, list, str, int, float, bool or None), not {type_name}"
    )


def test_every_invalid_field_at_once() -> None:
    e = invalid(
        {
            **BASE,
            "name": "Egress_1",
            "sources": ["203.0.113.300/24"],
            "redirects": [{"protocol": "icmp", "port": 0, "to": "web.example"}],
        }
    )
    assert e.errors == [
        {"field": "name", "value": "Egress_1", "expected": "1 to 32 characters from [a-z0-9-]"},
        {
            "field": "sources[0]",
            "value": "203.0.113.300/24",
            "expected": "an IPv4 or IPv6 address with an optional /prefix",
        },
        {"field": "redirects[0].protocol", "value": "icmp", "expected": "one of tcp, udp, sctp"},
        {"field": "redirects[0].port", "value": "0", "expected": "a port from 1 to 65535"},
        {"field": "redirects[0].to", "value": "web.example", "expected": "an IPv4 or IPv6 address"},
    ]
    first = e.errors[0]
    assert (e.field, e.value, e.expected) == (first["field"], first["value"], first["expected"])
    assert str(e).startswith("invalid name `Egress_1`: 1 to 32 characters from [a-z0-9-]; and 4 more: ")
    # Builder errors carry the list too.
    with pytest.raises(egress.InvalidSpecError) as b:
        RouterSpec("r").redirect(-1, "198.51.100.1")
    assert b.value.errors == [{"field": "redirects[0].port", "value": "-1", "expected": "a port from 1 to 65535"}]
    # What the JSON form holds (a port beyond 16 bits, any protocol name) is validated with
    # the rest, whichever way the spec was built.
    chained = (
        RouterSpec("Egress_1", sources=["203.0.113.300/24"])
        .adopt("macvlan0")
        .redirect(80, "198.51.100.1", 70000, protocol="icmp")
        .redirect(65536, "198.51.100.2")
    )
    assert "'to_port': 70000" in repr(chained) and "'protocol': 'icmp'" in repr(chained)
    with pytest.raises(egress.InvalidSpecError) as b:
        chained.validate()
    assert [(f["field"], f["value"]) for f in b.value.errors] == [
        ("name", "Egress_1"),
        ("sources[0]", "203.0.113.300/24"),
        ("redirects[0].protocol", "icmp"),
        ("redirects[0].to_port", "70000"),
        ("redirects[1].port", "65536"),
    ]


# Integer arguments of the builder beyond 64 bits (or their JSON type): InvalidSpecError, not
# OverflowError.
OVERFLOW: list[tuple[str, Callable[[], object], str, str]] = [
    ("port", lambda: RouterSpec("r").redirect(2**70, "198.51.100.1"), "redirects[0].port", "a port from 1 to 65535"),
    ("to_port", lambda: RouterSpec("r").redirect(80, "198.51.100.1", -(2**70)), "redirects[0].to_port",
     "a port from 1 to 65535"),
    ("mtu", lambda: RouterSpec("r").macvlan("eth1", mtu=2**70), "external.macvlan.mtu", "an MTU from 68 to 65535"),
    ("mtu 2**32", lambda: RouterSpec("r").macvlan("eth1", mtu=2**32), "external.macvlan.mtu", "an MTU from 68 to 65535"),
    ("announce", lambda: RouterSpec("r").announce(2**70), "announce", "a count from 0 to 16"),
    ("announce kwarg", lambda: RouterSpec("r", announce=2**64), "announce", "a count from 0 to 16"),
    ("netns pid", lambda: RouterSpec("r").netns(2**70), "netns.pid", "a process id above 0"),
    ("netns pid 2**32", lambda: RouterSpec("r", netns=2**32), "netns.pid", "a process id above 0"),
    ("parent pid", lambda: RouterSpec("r").macvlan("eth1", parent_netns=2**70), "external.macvlan.parent_netns.pid",
     "a process id above 0"),
    ("teardown pid", lambda: egress.teardown("r", netns=-(2**70)), "netns.pid", "a process id above 0"),
]


@pytest.mark.parametrize("case", OVERFLOW, ids=[c[0] for c in OVERFLOW])
def test_big_integer_arguments(case: tuple[str, Callable[[], object], str, str]) -> None:
    _, call, field, expected = case
    with pytest.raises(egress.InvalidSpecError) as e:
        call()
    assert (e.value.field, e.value.expected) == (field, expected)
    assert e.value.value.lstrip("-").isdigit()


# A namespace named on its own (teardown, inspect) is validated before the kernel is asked.
@pytest.mark.parametrize(
    "netns,field,value",
    [
        ("../x", "netns.name", "../x"),
        ("..", "netns.name", ".."),
        ("pods/a", "netns.name", "pods/a"),
        ("a\0b", "netns.name", "a\0b"),
        ("", "netns.name", ""),
        (0, "netns.pid", "0"),
    ],
)
@pytest.mark.parametrize("call", [egress.teardown, egress.inspect])
def test_namespace_names_that_leave_run_netns(
    call: Callable[..., object], netns: object, field: str, value: str
) -> None:
    with pytest.raises(egress.InvalidSpecError) as e:
        call("egress-1", netns=netns)
    assert (e.value.field, e.value.value) == (field, value)


@pytest.mark.parametrize("call", [egress.teardown, egress.inspect])
def test_router_names_are_checked_by_teardown_and_inspect(call: Callable[..., object]) -> None:
    with pytest.raises(egress.InvalidSpecError) as e:
        call("A_B")
    assert (e.value.field, e.value.value) == ("name", "A_B")
    assert e.value.expected == "1 to 32 characters from [a-z0-9-]"


def test_spec_namespaces_are_checked_with_the_spec() -> None:
    spec = RouterSpec.from_dict(BASE)
    for ns in ("../x", ".."):
        with pytest.raises(egress.InvalidSpecError) as e:
            spec.netns(ns).validate()
        assert (e.value.field, e.value.value) == ("netns.name", ns)
    with pytest.raises(egress.InvalidSpecError) as e:
        spec.macvlan("eth1", parent_netns="a/../b").validate()
    assert e.value.field == "external.macvlan.parent_netns.name"
