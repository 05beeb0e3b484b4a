"""egress.diagnose() and RouterSpec.diagnose() against the lab (root), with real frames and TCP:
a healthy router passes every check and is left as it was; a cause made real (the gateway's
address removed, a default route deleted) fails its check with a hint; bad input raises the
typed error naming the field and the value; the GIL is released while it probes."""

from __future__ import annotations

import json

import pytest

import egress
from conftest import Lab, assert_python_ran_in_the_middle, assert_same

CHECK_NAMES = ["state", "link", "sysctl", "gateway", "l2_filter", "duplicate_address", "destination", "traffic"]


def test_a_healthy_router_passes_every_check_and_is_left_unchanged(lab: Lab) -> None:
    c = lab.c
    lab.ask("serve")
    spec = lab.spec("py-diag")
    with spec.apply() as router:
        before = lab.snapshot()
        d = spec.diagnose()
        assert isinstance(d, egress.Diagnosis)
        assert d.router == "py-diag"
        assert (d.ok, d.failed, d.status) == (True, False, "ok"), str(d)
        assert [ch.name for ch in d.checks if ch.name in CHECK_NAMES] == [ch.name for ch in d.checks]
        assert set(CHECK_NAMES) <= {ch.name for ch in d.checks}, str(d)
        for ch in d.checks:
            assert isinstance(ch, egress.Check)
            assert (ch.status, ch.hint, ch.ok, ch.failed) == ("ok", None, True, False), repr(ch)
        [gw] = d.named("gateway")
        assert gw.evidence["gateway"] == c["GATEWAY4"]
        assert gw.evidence["probe"] == "ARP request"
        assert len(gw.evidence["answered_by"]) == 1
        [dest] = d.named("destination")
        assert (dest.evidence["target"], dest.evidence["port"]) == (c["WEB4"], c["WEB_PORT"])
        assert dest.evidence["result"] == "connected"
        # The evidence is a fresh dict each time: changing one changes nothing else.
        gw.evidence["gateway"] = "changed"
        assert gw.evidence["gateway"] == c["GATEWAY4"]

        # to_dict() is exactly the documented JSON form.
        form = d.to_dict()
        assert list(form) == ["router", "checks"] and form["router"] == "py-diag"
        assert [list(ch) for ch in form["checks"]] == [["name", "status", "summary", "hint", "evidence"]] * len(
            d.checks
        )
        assert form["checks"] == [ch.to_dict() for ch in d.checks]
        assert json.loads(json.dumps(form)) == form
        assert str(d).startswith(f"router py-diag: {len(d.checks)} checks, none failed")

        # By name, as the kernel holds it, and through the handle: as healthy, same checks.
        by_name = egress.diagnose("py-diag", netns=lab.path("router"), timeout_ms=100)
        assert by_name.ok, str(by_name)
        assert [ch.name for ch in by_name.checks] == [ch.name for ch in d.checks]
        assert [ch.evidence["timeout_ms"] for ch in by_name.named("gateway")] == [100]
        assert router.diagnose().ok
        assert_same(before, lab.snapshot())


def test_the_gateway_gone_fails_gateway_with_a_hint(lab: Lab) -> None:
    c = lab.c
    spec = lab.spec("py-diag-gw")
    with spec.apply():
        lab.ip("ext", "addr", "del", f"{c['GATEWAY4']}/24", "dev", c["GATEWAY_LINK"])
        d = spec.diagnose()
        assert d.failed and not d.ok and d.status == "fail", str(d)
        [gw] = d.named("gateway")
        assert (gw.status, gw.failed) == ("fail", True)
        assert "did not answer" in gw.summary
        assert gw.hint is not None and "node's own link either" in gw.hint
        assert gw.evidence["gateway"] == c["GATEWAY4"] and "answered_by" not in gw.evidence
        [l2] = d.named("l2_filter")
        assert l2.status == "warn" and l2.hint is not None
        assert f"{gw.hint}" in str(d)
        assert gw.to_dict()["hint"] == gw.hint


def test_drift_fails_state_and_lists_it(lab: Lab) -> None:
    spec = lab.spec("py-diag-drift")
    with spec.apply():
        lab.ip("router", "route", "del", "default")
        for d in (spec.diagnose(), egress.diagnose("py-diag-drift", netns=lab.path("router"))):
            [state] = d.named("state")
            assert state.failed, str(d)
            assert state.hint is not None and "ensure" in state.hint
            assert state.evidence["drift"][0]["kind"] == "route_missing"
        spec.ensure()
        assert spec.diagnose().named("state")[0].ok


def test_a_router_that_is_not_there_fails_state_only(lab: Lab) -> None:
    d = egress.diagnose("nonesuch", netns=lab.path("router"))
    assert d.checks[0].name == "state" and d.checks[0].failed
    assert all(ch.status == "skipped" for ch in d.checks[1:]), str(d)


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"timeout_ms": 0}, "timeout_ms", "0"),
        ({"timeout_ms": 10001}, "timeout_ms", "10001"),
        ({"timeout_ms": -5}, "timeout_ms", "-5"),
        ({"fallback_ports": [443, 0]}, "fallback_ports[1]", "0"),
        ({"fallback_ports": [70000]}, "fallback_ports[0]", "70000"),
        ({"netns": "a/b"}, "netns.name", "a/b"),
        ({"name": "Bad_Name"}, "name", "Bad_Name"),
    ],
)
def test_bad_input_names_the_field_and_the_value(lab: Lab, kwargs: dict[str, object], field: str, value: str) -> None:
    before = lab.snapshot()
    args: dict[str, object] = {"name": "py-diag-bad", "netns": lab.path("router"), **kwargs}
    with pytest.raises(egress.InvalidSpecError) as e:
        egress.diagnose(**args)  # type: ignore[arg-type]
    assert (e.value.field, e.value.value) == (field, value), str(e.value)
    assert f"invalid {field} `{value}`" in str(e.value)
    spec_kwargs = {k: v for k, v in kwargs.items() if k in ("timeout_ms", "fallback_ports")}
    if spec_kwargs:
        with pytest.raises(egress.InvalidSpecError) as e:
            lab.spec("py-diag-bad").diagnose(**spec_kwargs)  # type: ignore[arg-type]
        assert (e.value.field, e.value.value) == (field, value)
    assert_same(before, lab.snapshot())


def test_arguments_of_the_wrong_type_raise_type_error() -> None:
    with pytest.raises(TypeError, match="timeout_ms must be an int, not bool"):
        egress.diagnose("r", timeout_ms=True)
    with pytest.raises(TypeError, match="fallback_ports must be a list of int, not int"):
        egress.diagnose("r", fallback_ports=443)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"fallback_ports\[0\] must be an int, not str"):
        egress.diagnose("r", fallback_ports=["443"])  # type: ignore[list-item]
    with pytest.raises(egress.InvalidSpecError) as e:
        egress.RouterSpec("r").diagnose()
    assert e.value.field == "external"


def test_the_gil_is_released_while_it_probes(lab: Lab) -> None:
    # The diagnosis waits a whole timeout (1.5 s) for the duplicate address probe's answer that
    # must not come.
    lab.ask("serve")
    spec = lab.spec("py-diag-gil")
    with spec.apply():
        result: list[egress.Diagnosis] = []
        assert_python_ran_in_the_middle(lambda: result.append(spec.diagnose(timeout_ms=1500)))
        assert len(result) == 1 and not result[0].failed, str(result[0])
