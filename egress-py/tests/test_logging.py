"""The core's tracing events in Python's logging (logger "egress"), handled on the thread that
called the library, in its namespace: per-step records of a real apply at DEBUG, none at
WARNING, repairs at INFO, fields as record.egress_fields; logging.disable() is obeyed; a
handler that calls back into the library works (root)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

import egress
from conftest import Lab, assert_same


def egress_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "egress"]


def test_apply_logs_each_step_at_debug(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    before = lab.snapshot()
    spec = lab.spec("py-log")
    steps = [str(s) for s in spec.plan()]
    caplog.set_level(logging.DEBUG, logger="egress")
    router = spec.apply()
    done = [r for r in egress_records(caplog) if r.msg.startswith("step done")]
    assert [r.egress_fields["step"] for r in done] == steps  # type: ignore[attr-defined]
    for r in done:
        fields: dict[str, Any] = r.egress_fields  # type: ignore[attr-defined]
        assert r.levelno == logging.DEBUG
        assert isinstance(fields["us"], int) and fields["us"] >= 0
        assert r.getMessage() == f"step done step={fields['step']} us={fields['us']}"
        assert r.egress_target == "egress_core::context::tx"  # type: ignore[attr-defined]
        assert r.pathname.endswith("context/tx.rs") and r.lineno > 0
    caplog.clear()

    # WARNING: nothing below it reaches logging, not even as a record that is dropped.
    caplog.set_level(logging.WARNING, logger="egress")
    router.teardown()
    again = spec.apply()
    assert egress_records(caplog) == []

    # INFO: the repairs of an ensure, and no step.
    caplog.set_level(logging.INFO, logger="egress")
    lab.ip("router", "link", "set", "macvlan0", "down")
    assert spec.ensure().action == "repaired"
    records = egress_records(caplog)
    assert [r.getMessage() for r in records] == [
        "repairing drift=link macvlan0 is down kind=link_down",
        f"repairing drift=route missing: {lab.c['GATEWAY4']}/32 dev macvlan0 proto 158 kind=route_missing",
        f"repairing drift=route missing: default via {lab.c['GATEWAY4']} dev macvlan0 proto 158 kind=route_missing",
    ]
    assert all(r.levelno == logging.INFO for r in records)
    assert records[0].egress_fields == {"drift": "link macvlan0 is down", "kind": "link_down"}  # type: ignore[attr-defined]
    again.teardown()
    assert_same(before, lab.snapshot())


def test_logging_disable_is_respected(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="egress")
    logging.disable(logging.INFO)
    try:
        with lab.spec("py-log-off").apply():
            pass
    finally:
        logging.disable(logging.NOTSET)
    assert egress_records(caplog) == []


class Where(logging.Handler):
    """A handler that notes the thread and the network namespace it runs in."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((threading.get_ident(), os.readlink("/proc/thread-self/ns/net")))


@pytest.mark.parametrize("in_thread", [False, True], ids=["main thread", "another thread"])
def test_records_are_handled_on_the_calling_thread_outside_the_router_namespace(
    lab: Lab, in_thread: bool
) -> None:
    # A SocketHandler connects from where its emit() runs: that must be the caller's
    # namespace, not the router's, which the library's own threads enter.
    logger = logging.getLogger("egress")
    handler = Where()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    caller: list[tuple[int, str]] = []

    def call() -> None:
        caller.append((threading.get_ident(), os.readlink("/proc/thread-self/ns/net")))
        with lab.spec("py-log-where").apply():
            pass

    try:
        if in_thread:
            thread = threading.Thread(target=call)
            thread.start()
            thread.join()
        else:
            call()
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
    router_ns = f"net:[{os.stat(lab.path('router')).st_ino}]"
    assert caller[0][1] != router_ns
    assert handler.seen, "no record reached the handler"
    assert set(handler.seen) == {caller[0]}


class CallsBack(logging.Handler):
    """A handler that calls the library for each record (of an apply: the library's own calls
    log no step)."""

    def __init__(self, netns: str) -> None:
        super().__init__(logging.DEBUG)
        self.netns = netns
        self.seen: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("step done"):
            return
        try:
            self.seen.append(egress.inspect("py-log-back", netns=self.netns))
        except egress.EgressError as e:
            self.seen.append(e)


def test_a_handler_that_calls_the_library(lab: Lab) -> None:
    logger = logging.getLogger("egress")
    handler = CallsBack(lab.path("router"))
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with lab.spec("py-log-back").apply():
            pass
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
    assert handler.seen, "no record reached the handler"
    # It runs on the caller's thread once the apply is back, where calling the library is
    # calling it: the router is there.
    for state in handler.seen:
        assert isinstance(state, dict) and state["name"] == "py-log-back", state
