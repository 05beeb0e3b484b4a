"""Routers in real namespaces (root): real TCP through them, kernel state read back, and both
namespaces restored exactly afterwards."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time

import pytest

import egress
from conftest import Lab, assert_python_ran_in_the_middle, assert_same


def test_apply_forwards_real_tcp_and_teardown_restores(lab: Lab) -> None:
    c = lab.c
    lab.ask("serve")
    before = lab.snapshot()
    assert lab.get_fails(c["WEB4"], c["WEB_PORT"]), "the client reaches the web server directly"
    assert lab.get_fails(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])

    router = lab.spec("py-e2e").fallback(c["FALLBACK4"]).apply()
    assert router.active and router.name == "py-e2e"
    assert router.spec.to_dict()["fallback"] == [c["FALLBACK4"]]
    assert "py-e2e" in repr(router) and "active" in repr(router)

    # Redirect SERVICE_PORT -> WEB4:WEB_PORT, seen from the web server as the egress source.
    body = lab.get(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])
    assert body.strip() == f"peer={lab.source4()} port={c['WEB_PORT']}"
    body = lab.get(c["ROUTER_ETH0_4"], c["WEB_PORT"])
    assert body.strip() == f"peer={lab.source4()} port={c['WEB_PORT']}"
    assert set(lab.ask("peers")["peers"]) == {lab.source4()}

    state = egress.inspect("py-e2e", netns=lab.path("router"))
    assert state is not None
    assert state["name"] == "py-e2e" and state["table"] == "egress_py_e2e"
    assert state["link"]["name"] == "macvlan0" and state["link"]["created"] is True
    assert state["link"]["mode"] == "private" and state["link"]["up"] is True
    assert state["addresses"] == [c["EGRESS_SOURCE4"]]
    assert state["sysctls"]["net.ipv4.ip_forward"] == "1"
    assert state["routes"] == [
        f"default via {c['GATEWAY4']} dev macvlan0 proto 158",
        f"{c['GATEWAY4']}/32 dev macvlan0 proto 158",
    ]
    assert f"  tcp . {c['SERVICE_PORT']} : {c['WEB4']} . {c['WEB_PORT']}" in state["nat"]
    assert any('comment "egress dnat4 fallback"' in rule for rule in state["nat"])
    assert lab.spec("py-e2e").fallback(c["FALLBACK4"]).check() == []

    undone = router.teardown()
    assert undone and all(isinstance(u, str) for u in undone)
    assert not router.active and "torn down" in repr(router)
    assert router.teardown() == []
    assert_same(before, lab.snapshot())
    assert egress.inspect("py-e2e", netns=lab.path("router")) is None
    assert lab.get_fails(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])


def test_context_manager_tears_down_on_an_exception(lab: Lab) -> None:
    before = lab.snapshot()
    with pytest.raises(RuntimeError, match="boom"):
        with lab.spec("py-ctx").apply() as router:
            assert egress.inspect("py-ctx", netns=lab.path("router")) is not None
            raise RuntimeError("boom")
    assert not router.active
    assert_same(before, lab.snapshot())


def test_a_failed_teardown_at_the_end_of_a_with_block_keeps_the_blocks_exception(lab: Lab) -> None:
    before = lab.snapshot()
    ns = lab.path("router")
    spec = lab.spec("py-exit")

    def replace_behind_the_handle() -> None:
        # Torn down and applied again by someone else: the handle's teardown refuses.
        egress.teardown("py-exit", netns=ns)
        spec.apply()

    with pytest.raises(RuntimeError, match="boom") as e:
        with spec.apply() as router:
            replace_behind_the_handle()
            raise RuntimeError("boom")
    assert not router.active
    [note] = e.value.__notes__
    assert note.startswith(
        'egress: tearing down router "py-exit" when the with block ended failed as well: '
        "StaleHandleError: "
    ), note
    assert egress.teardown("py-exit", netns=ns)
    # Without an exception in the block, the teardown's own error is raised.
    with pytest.raises(egress.StaleHandleError):
        with spec.apply():
            replace_behind_the_handle()
    assert egress.teardown("py-exit", netns=ns)
    assert_same(before, lab.snapshot())


def test_stats_count_the_connections_made(lab: Lab) -> None:
    c = lab.c
    lab.ask("serve")
    before_apply = lab.snapshot()
    # One redirect (WEB_PORT) and the fallback, which takes SERVICE_PORT (the web server
    # answers there too).
    d = lab.spec("py-stats").fallback(c["FALLBACK4"]).to_dict()
    d["redirects"] = [r for r in d["redirects"] if r["port"] == c["WEB_PORT"]]
    with egress.RouterSpec.from_dict(d).apply() as router:
        before = router.stats()
        assert before is not None
        assert [r["connections"] for r in before["redirects"]] == [0]
        assert [f["connections"] for f in before["fallback"]] == [0]
        for _ in range(3):
            lab.get(c["ROUTER_ETH0_4"], c["WEB_PORT"])
        for _ in range(2):
            assert lab.get(c["ROUTER_ETH0_4"], c["SERVICE_PORT"]).startswith(
                f"peer={lab.source4()} port={c['SERVICE_PORT']}"
            )
        stats = router.stats()
        assert stats == egress.stats("py-stats", netns=lab.path("router"))
        assert stats is not None and stats["name"] == "py-stats"
        [redirect] = stats["redirects"]
        assert (redirect["protocol"], redirect["port"], redirect["to"], redirect["to_port"]) == (
            "tcp", c["WEB_PORT"], c["WEB4"], c["WEB_PORT"],
        )
        assert redirect["connections"] == 3
        # Handshake, request, answer, close: at least 5 packets a connection, each at least an
        # IPv4 and a TCP header.
        assert redirect["packets"] >= 15 and redirect["bytes"] >= 40 * redirect["packets"]
        [fallback] = stats["fallback"]
        assert (fallback["to"], fallback["connections"]) == (c["FALLBACK4"], 2)
        assert fallback["packets"] >= 10
        [snat] = stats["snat"]
        assert snat["source"] == lab.source4() and snat["packets"] >= 5 * 3
        # The five connections stay tracked (TIME_WAIT) for minutes.
        assert stats["conntrack_entries"] >= 5
    assert router.stats() is None
    assert egress.stats("py-stats", netns=lab.path("router")) is None
    assert_same(before_apply, lab.snapshot())
    with pytest.raises(egress.InvalidSpecError) as e:
        egress.stats("Not_Valid", netns=lab.path("router"))
    assert e.value.field == "name"


def test_teardown_by_name_from_a_second_process(lab: Lab) -> None:
    before = lab.snapshot()
    spec = lab.spec("py-other")
    router = spec.apply()
    del router  # dropping the handle leaves the router configured
    assert spec.check() == []
    code = (
        "import egress, sys; "
        "print('\\n'.join(egress.teardown('py-other', netns=sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, lab.path("router")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "macvlan0" in out, out
    assert_same(before, lab.snapshot())
    assert egress.teardown("py-other", netns=lab.path("router")) == []


def test_check_and_ensure_converge(lab: Lab) -> None:
    before = lab.snapshot()
    spec = lab.spec("py-ensure")
    drift = spec.check()
    assert [d.kind for d in drift] == ["router_missing"]
    assert str(drift[0]) == "router not configured (no nftables table inet egress_py_ensure)"
    assert drift[0].to_dict() == {"kind": "router_missing", "table": "egress_py_ensure"}

    created = spec.ensure()
    assert (created.changed, created.action) == (True, "created")
    assert [d.kind for d in created.drift] == ["router_missing"]
    unchanged = spec.ensure()
    assert (unchanged.changed, unchanged.action, unchanged.drift) == (False, "unchanged", [])
    assert "unchanged" in repr(unchanged)

    lab.ip("router", "link", "set", "macvlan0", "down")
    drift = spec.check()  # the kernel drops the link's routes with it
    assert [d.kind for d in drift] == ["link_down", "route_missing", "route_missing"]
    assert str(drift[0]) == "link macvlan0 is down"
    assert drift[1].to_dict()["route"] == f"{lab.c['GATEWAY4']}/32 dev macvlan0 proto 158"
    repaired = spec.ensure()
    assert (repaired.changed, repaired.action) == (True, "repaired")
    assert spec.check() == []
    lab.ask("serve")
    assert lab.get(lab.c["ROUTER_ETH0_4"], lab.c["SERVICE_PORT"]).startswith(f"peer={lab.source4()}")

    assert egress.teardown("py-ensure", netns=lab.path("router"))
    assert_same(before, lab.snapshot())


def test_a_stale_handle_leaves_the_new_router_alone(lab: Lab) -> None:
    before = lab.snapshot()
    ns = lab.path("router")
    spec = lab.spec("py-stale")
    old = spec.apply()
    assert egress.teardown("py-stale", netns=ns)  # by name, behind the handle's back
    new = spec.apply()  # the same router, applied again by someone else
    # The handle reads what it holds: the new router's counters and state are not its own.
    with pytest.raises(egress.StaleHandleError):
        old.stats()
    with pytest.raises(egress.StaleHandleError):
        old.diagnose(timeout_ms=50)
    with pytest.raises(egress.StaleHandleError) as e:
        old.teardown()
    err = e.value
    assert (err.name, err.netns) == ("py-stale", ns)
    assert "apply id" in err.reason and "nothing was changed" in str(err)
    assert not old.active and old.teardown() == []  # the handle is spent
    assert spec.check() == []  # the new router is untouched
    assert new.teardown()
    assert_same(before, lab.snapshot())
    # A handle whose router is gone (torn down by name) has nothing to do: success.
    gone = spec.apply()
    assert egress.teardown("py-stale", netns=ns)
    assert gone.teardown() == []
    assert_same(before, lab.snapshot())


def test_plan_live_is_what_the_namespace_still_needs(lab: Lab) -> None:
    before = lab.snapshot()
    spec = lab.spec("py-live")
    # Not there: the whole plan.
    assert [str(s) for s in spec.plan_live()] == [str(s) for s in spec.plan()]
    assert_same(before, lab.snapshot())
    with spec.apply():
        assert spec.plan_live() == []
        lab.ip("router", "link", "set", "macvlan0", "down")
        steps = [str(s) for s in spec.plan_live()]
        assert steps and len(steps) < len(spec.plan())
        assert steps[:2] == ["ip link set dev macvlan0 up", f"ip route add {lab.c['GATEWAY4']}/32 dev macvlan0 proto 158"]
        assert [s.index for s in spec.plan_live()] == list(range(1, len(steps) + 1))
        repaired = spec.ensure()
        assert repaired.action == "repaired"
        assert spec.plan_live() == []
    assert_same(before, lab.snapshot())
    with pytest.raises(egress.InvalidSpecError):
        spec.announce(99).plan_live()


def test_kernel_errors_map_to_their_classes(lab: Lab) -> None:
    before = lab.snapshot()
    with pytest.raises(egress.NotFoundError, match="eth9"):
        lab.spec("py-err").macvlan("eth9", "private", parent_netns=lab.path("node")).apply()
    with pytest.raises(egress.NotFoundError):
        egress.inspect("py-err", netns="/run/netns/egt-no-such-namespace")
    with pytest.raises(egress.ConflictError, match="larger than the MTU 1500 of parent ext0"):
        lab.spec("py-err").macvlan("ext0", "private", parent_netns=lab.path("node"), mtu=9000).apply()
    with lab.spec("py-one").apply():
        with pytest.raises(egress.AlreadyExistsError) as e:
            lab.spec("py-two").apply()
        assert isinstance(e.value, egress.EgressError)
    assert_same(before, lab.snapshot())


def test_a_failed_apply_is_rolled_back_and_says_where(lab: Lab) -> None:
    before = lab.snapshot()
    # A kept route whose next hop is not on the internal link: the kernel refuses that step,
    # after the macvlan, its address and the default route were made.
    spec = lab.spec("py-fail").keep_route("10.128.0.0/14", "10.129.0.1")
    failing = "ip route add 10.128.0.0/14 via 10.129.0.1 dev eth0 proto 158"
    with pytest.raises(egress.ApplyError) as e:
        spec.apply()
    err = e.value
    assert not isinstance(err, egress.RollbackIncompleteError)
    assert (err.step, err.rolled_back, err.remaining, err.errno) == (failing, True, [], errno.ENETUNREACH)
    # The failed step's own error, with its class, is the cause.
    assert isinstance(err.__cause__, egress.KernelError)
    assert (err.__cause__.operation, err.__cause__.errno) == (failing, errno.ENETUNREACH)
    assert str(spec.plan()[err.step_index - 1]) == failing
    assert str(err) == (
        f"apply failed at step {err.step_index} ({failing}): {failing} failed: "
        "Network is unreachable (errno 101); rolled back completely"
    )
    assert_same(before, lab.snapshot())


def test_permission_denied_without_cap_net_admin(root: None) -> None:
    # The same interpreter, root but without CAP_NET_ADMIN / CAP_SYS_ADMIN in its bounding set.
    code = (
        "import egress\n"
        "try:\n"
        "    egress.inspect('py-perm')\n"
        "except egress.PermissionDeniedError as e:\n"
        "    print(e.capability, '|', e)\n"
    )
    out = subprocess.run(
        ["setpriv", "--bounding-set", "-net_admin,-sys_admin", sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == (
        "CAP_NET_ADMIN | permission denied: inspect an egress router needs CAP_NET_ADMIN "
        "(run as root or grant it)"
    )


def test_threads_apply_different_routers_concurrently(root: None) -> None:
    labs = [Lab() for _ in range(3)]
    try:
        for lab in labs:
            lab.ask("serve")
        befores = [lab.snapshot() for lab in labs]
        routers: list[egress.Router] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def apply(lab: Lab, name: str) -> None:
            try:
                router = lab.spec(name).apply()
                with lock:
                    routers.append(router)
            except BaseException as e:  # re-raised by the main thread below
                errors.append(e)

        def teardown(router: egress.Router) -> None:
            try:
                router.teardown()
            except BaseException as e:  # re-raised by the main thread below
                errors.append(e)

        run_all([threading.Thread(target=apply, args=(lab, f"py-thread-{i}")) for i, lab in enumerate(labs)])
        if errors:
            raise errors[0]
        assert sorted(r.name for r in routers) == ["py-thread-0", "py-thread-1", "py-thread-2"]
        for lab in labs:
            body = lab.get(lab.c["ROUTER_ETH0_4"], lab.c["SERVICE_PORT"])
            assert body.startswith(f"peer={lab.source4()}")
        run_all([threading.Thread(target=teardown, args=(r,)) for r in routers])
        if errors:
            raise errors[0]
        for lab, before in zip(labs, befores):
            assert_same(before, lab.snapshot())
    finally:
        for lab in labs:
            lab.close()


def run_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_the_gil_is_released_for_the_whole_apply_and_teardown(lab: Lab) -> None:
    before = lab.snapshot()
    # The apply waits 1.5 s for an answer to its duplicate address probe (nobody holds the
    # egress address).
    d = lab.spec("py-gil").to_dict()
    d["probe"] = {"timeout_ms": 1500}
    d["announce"] = {"count": 4, "interval_ms": 500}
    spec = egress.RouterSpec.from_dict(d)
    routers: list[egress.Router] = []
    assert_python_ran_in_the_middle(lambda: routers.append(spec.apply()))
    router = routers[0]

    # The teardown waits for the handle, which a promotion holds while it spaces its
    # announcements (four, 500 ms apart: 1.5 s).
    router.demote()
    promoting = threading.Thread(target=router.promote)
    promoting.start()
    try:
        # Claimed first, then announced: from here on the promotion holds the handle.
        deadline = time.monotonic() + 10
        while egress.inspect("py-gil", netns=lab.path("router"))["role"] != "active":  # type: ignore[index]
            assert time.monotonic() < deadline, "never promoted"
            time.sleep(0.005)
        assert_python_ran_in_the_middle(router.teardown)
    finally:
        promoting.join()
    assert egress.inspect("py-gil", netns=lab.path("router")) is None
    assert_same(before, lab.snapshot())


def test_a_standby_forwards_nothing_until_promoted_and_a_demotion_gives_it_back(lab: Lab) -> None:
    c = lab.c
    lab.ask("serve")
    before = lab.snapshot()
    router = lab.spec("py-ha").apply(standby=True)
    assert egress.inspect("py-ha", netns=lab.path("router"))["role"] == "standby"  # type: ignore[index]
    assert lab.source4() not in lab.ip("router", "-4", "addr", "show", "dev", "macvlan0")
    assert lab.get_fails(c["ROUTER_ETH0_4"], c["SERVICE_PORT"]), "a standby forwards"

    up = router.promote()
    assert (up["previous"], up["role"]) == ("standby", "active") and up["steps"]
    assert f"peer={lab.source4()}" in lab.get(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])
    assert router.promote()["steps"] == []

    # By name, from what the kernel holds (as keepalived's notify command does).
    down = egress.demote("py-ha", netns=lab.path("router"))
    assert down["role"] == "standby" and down["steps"][0].startswith("ip addr del")
    assert lab.get_fails(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])
    assert egress.promote("py-ha", netns=lab.path("router"))["role"] == "active"
    assert egress.inspect("py-ha", netns=lab.path("router"))["role"] == "active"  # type: ignore[index]
    router.teardown()
    assert_same(before, lab.snapshot())
