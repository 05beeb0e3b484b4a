"""Fuzzes RouterSpec.from_dict through the Python conversion layer (atheris, libFuzzer).

Each input builds a dict the way a caller might: the spec's JSON form with fields replaced by
generated values — nested dicts, lists and tuples, containers that contain themselves, chains
thousands of levels deep, integers far beyond 64 bits, floats (NaN, infinities), bools where
ints go, unicode with lone surrogates, values that are not JSON at all. The only acceptable
outcomes are a spec (which must then survive to_dict() and from_dict() again unchanged) or an
EgressError, TypeError or ValueError; anything else — another exception, a crash, a hang — is a
finding, and libFuzzer saves the input that caused it.

    python fuzz_from_dict.py -runs=N                 # N inputs
    python fuzz_from_dict.py -max_total_time=S DIR   # S seconds, growing the corpus in DIR

scripts/test-py.sh runs it briefly; scripts/fuzz.sh --python runs it longer.
"""

from __future__ import annotations

import sys
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    import egress
    from egress import RouterSpec

# The JSON form of a valid spec: what the generated values are put into.
VALID: dict[str, Any] = {
    "name": "egress-1",
    "netns": {"path": "/run/netns/pod"},
    "external": {
        "macvlan": {
            "parent": "eth1",
            "parent_netns": {"pid": 1},
            "mode": "private",
            "mtu": 1500,
            "mac": "02:00:00:00:00:99",
            "name": "macvlan0",
        }
    },
    "internal": "eth0",
    "sources": ["203.0.113.99/24", "2001:db8:1::99/64"],
    "gateways": ["203.0.113.1", "2001:db8:1::1"],
    "redirects": [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", "to_port": 8080}],
    "fallback": ["198.51.100.9"],
    "kept_routes": [{"to": "10.128.0.0/14", "via": "10.129.0.1"}],
    "announce": 2,
}

KEYS = [
    "name", "netns", "path", "pid", "external", "macvlan", "adopt", "parent", "parent_netns",
    "mode", "mtu", "mac", "internal", "sources", "gateways", "redirects", "protocol", "port",
    "to", "to_port", "fallback", "kept_routes", "via", "announce",
]
WORDS = [
    "egress-1", "tcp", "udp", "sctp", "icmp", "bridge", "private", "vepa", "passthru", "eth0",
    "eth1", "macvlan0", "203.0.113.99/24", "203.0.113.1", "2001:db8::1", "198.51.100.25",
    "10.128.0.0/14", "/run/netns/pod", "pod", "..", "../x", "a/b", "02:00:00:00:00:99", "",
    "0.0.0.0", "224.0.0.1", "\x00", "\ud800", "\udfff", "ë", "\u202e", "A_B",
]
INTS = [0, 1, -1, 67, 68, 255, 256, 65535, 65536, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
        -(2**63), -(2**63) - 1, 2**70, -(2**70), 10**5000]
FLOATS = [0.0, -0.0, 1.5, 80.0, 1e308, float("nan"), float("inf"), float("-inf")]


class Gen:
    """Values from the fuzzer's bytes; `open` holds the containers being built (for cycles)."""

    def __init__(self, data: bytes) -> None:
        self.fdp = atheris.FuzzedDataProvider(data)
        self.open: list[Any] = []
        self.budget = 200  # containers per input, so that one input stays fast

    def pick(self, items: list[Any]) -> Any:
        return items[self.fdp.ConsumeIntInRange(0, len(items) - 1)]

    def value(self, depth: int) -> Any:
        kind = self.fdp.ConsumeIntInRange(0, 15)
        if kind == 0:
            return None
        if kind == 1:
            return self.fdp.ConsumeBool()
        if kind == 2:
            return self.pick(INTS)
        if kind == 3:
            return self.fdp.ConsumeInt(self.fdp.ConsumeIntInRange(1, 12))
        if kind == 4:
            return self.pick(FLOATS) if self.fdp.ConsumeBool() else self.fdp.ConsumeRegularFloat()
        if kind == 5:
            return self.pick(WORDS)
        if kind == 6:
            return self.fdp.ConsumeUnicode(self.fdp.ConsumeIntInRange(0, 40))
        if kind == 7:
            return self.fdp.ConsumeUnicodeNoSurrogates(self.fdp.ConsumeIntInRange(0, 40))
        if kind == 8 and self.open:
            return self.pick(self.open)  # a container that (will) contain itself
        if kind == 9:
            return self.deep()
        if kind == 10:
            return self.pick([b"eth0", {"a"}, object(), 1j, bytearray(b"x"), range(3), Exception()])
        if depth > 6 or self.budget <= 0:
            return self.pick(WORDS)
        self.budget -= 1
        if kind in (11, 12):
            return self.mapping(depth)
        items: list[Any] = []
        self.open.append(items)
        for _ in range(self.fdp.ConsumeIntInRange(0, 4)):
            items.append(self.value(depth + 1))
        self.open.pop()
        return tuple(items) if kind == 13 else items

    def mapping(self, depth: int) -> dict[Any, Any]:
        d: dict[Any, Any] = {}
        self.open.append(d)
        for _ in range(self.fdp.ConsumeIntInRange(0, 4)):
            d[self.key()] = self.value(depth + 1)
        self.open.pop()
        return d

    def key(self) -> Any:
        kind = self.fdp.ConsumeIntInRange(0, 9)
        if kind < 7:
            return self.pick(KEYS)
        if kind < 9:
            return self.fdp.ConsumeUnicode(self.fdp.ConsumeIntInRange(0, 12))
        return self.pick([1, None, 2.5, ("a",), True])

    def deep(self) -> Any:
        """A chain of lists or dicts up to 100,000 levels deep, built without recursion."""
        value: Any = self.pick(WORDS)
        as_dict = self.fdp.ConsumeBool()
        for _ in range(self.pick([33, 1000, 100_000])):
            value = {"to": value} if as_dict else [value]
        return value

    def spec(self) -> dict[Any, Any]:
        """The valid spec with a few fields replaced, added or removed (or a generated dict)."""
        if self.fdp.ConsumeIntInRange(0, 7) == 0:
            return self.mapping(0)
        spec: dict[Any, Any] = copy(VALID)
        for _ in range(self.fdp.ConsumeIntInRange(1, 4)):
            target, key = self.place(spec)
            if self.fdp.ConsumeIntInRange(0, 5) == 0:
                target.pop(key, None)
            else:
                self.open.append(target)
                target[key] = self.value(1)
                self.open.pop()
        return spec

    def place(self, spec: dict[Any, Any]) -> tuple[dict[Any, Any], Any]:
        """A dict inside the spec, and one of its keys (or a new one)."""
        node: dict[Any, Any] = spec
        while self.fdp.ConsumeBool():
            children = [v for v in node.values() if isinstance(v, dict)]
            children += [i for v in node.values() if isinstance(v, list) for i in v if isinstance(i, dict)]
            if not children:
                break
            node = self.pick(children)
        keys = list(node) or KEYS
        return node, self.pick(keys) if self.fdp.ConsumeBool() else self.key()


def copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy(v) for v in value]
    return value


def check(data: bytes) -> None:
    spec = Gen(data).spec()
    try:
        parsed = RouterSpec.from_dict(spec)
    except egress.InvalidSpecError as e:
        # Every invalid field is listed, the first one also on the exception itself.
        assert e.errors and (e.field, e.value, e.expected) == tuple(e.errors[0].values()), e
        assert str(e).startswith(f"invalid {e.field} "), e
        return
    except (egress.EgressError, TypeError, ValueError):
        return
    # A spec: its canonical form reads back to itself.
    canonical = parsed.to_dict()
    assert RouterSpec.from_dict(canonical).to_dict() == canonical


def main(argv: list[str]) -> None:
    # Coverage of the harness's own choices guides the fuzzer through the shapes of input.
    for f in (Gen.value, Gen.mapping, Gen.key, Gen.deep, Gen.spec, Gen.place, check):
        atheris.instrument_func(f)
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
