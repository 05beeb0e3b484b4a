"""RouterSpec.redirect(port, to, to_port=None, protocol="tcp"): keywords, and the old order
redirect(port, protocol, to, to_port), which still works and warns. No kernel needed."""

from __future__ import annotations

from typing import Callable

import pytest

from egress import RouterSpec


def test_redirect_takes_keywords() -> None:
    spec = RouterSpec("r")
    by_position = spec.redirect(53, "198.51.100.53", 5353, "udp")
    by_keyword = spec.redirect(port=53, to="198.51.100.53", to_port=5353, protocol="udp")
    mixed = spec.redirect(53, "198.51.100.53", protocol="udp", to_port=5353)
    raw = [{"port": 53, "protocol": "udp", "to": "198.51.100.53", "to_port": 5353}]
    for s in (by_position, by_keyword, mixed):
        assert repr(s) == f"RouterSpec.from_dict({{'name': 'r', 'redirects': {raw!r}}})"
    default = spec.redirect(80, "198.51.100.25", None)
    assert "'protocol': 'tcp'" in repr(default) and "to_port" not in repr(default)


OLD_ORDER: list[tuple[str, Callable[[RouterSpec], RouterSpec], Callable[[RouterSpec], RouterSpec]]] = [
    ("4 positional", lambda s: s.redirect(80, "tcp", "198.51.100.25", 8080),  # type: ignore[arg-type]
     lambda s: s.redirect(80, "198.51.100.25", 8080)),
    ("3 positional", lambda s: s.redirect(53, "udp", "198.51.100.53"),  # type: ignore[arg-type]
     lambda s: s.redirect(53, "198.51.100.53", protocol="udp")),
    ("to_port keyword", lambda s: s.redirect(53, "sctp", "198.51.100.53", to_port=54),  # type: ignore[arg-type, misc]
     lambda s: s.redirect(53, "198.51.100.53", 54, "sctp")),
    ("to keyword", lambda s: s.redirect(53, "UDP", to="198.51.100.53"),  # type: ignore[misc]
     lambda s: s.redirect(53, "198.51.100.53", protocol="UDP")),
]


@pytest.mark.parametrize("case", OLD_ORDER, ids=[c[0] for c in OLD_ORDER])
def test_the_old_argument_order_still_works_and_warns(
    case: tuple[str, Callable[[RouterSpec], RouterSpec], Callable[[RouterSpec], RouterSpec]],
) -> None:
    _, old, new = case
    with pytest.warns(DeprecationWarning, match=r"redirect\(port, protocol, to, to_port\) is deprecated") as w:
        spec = old(RouterSpec("r"))
    assert len(w) == 1 and w[0].filename == __file__
    assert repr(spec) == repr(new(RouterSpec("r")))


def test_the_old_order_with_protocol_twice() -> None:
    with pytest.raises(TypeError, match="multiple values for argument 'protocol'"):
        RouterSpec("r").redirect(80, "tcp", "198.51.100.25", 8080, protocol="udp")  # type: ignore[misc, arg-type]
