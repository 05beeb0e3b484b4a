"""The library as a guest in someone else's process (root): one Router used from many threads
at once, a promote that has sent every announcement when it returns (keepalived's notify
script exits right after it), and Ctrl-C during an apply (fork: test_fork.py). Whatever could
hang runs in a child interpreter with a timeout, so that a hang fails the test instead of
stalling the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import TracebackType
from typing import Any, Optional

import pytest

import egress
from conftest import Lab, assert_same


def run_python(code: str, *args: str, timeout: float = 60) -> str:
    """Runs `code` in a new interpreter; its stdout. A child still running after `timeout`
    seconds is killed and fails the test as hung."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung: killed after {timeout} s\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


THREADS = r"""
import json, sys, threading, time
import egress

spec, ns = egress.RouterSpec.from_dict(json.loads(sys.argv[1])), sys.argv[2]
router = spec.apply(standby=True)
stop = threading.Event()
errors, calls = [], {}


def loop(name, call, expected=()):
    def run():
        n = 0
        try:
            while not stop.is_set():
                call()
                n += 1
        except expected:
            pass
        except BaseException as e:
            errors.append(f"{name}: {e!r}")
        calls[name] = n
    return threading.Thread(target=run, name=name)


flip = lambda: (router.promote(), router.demote())
threads = [
    loop("flip", flip),
    loop("flip again", flip),
    loop("stats", router.stats),
    loop("diagnose", lambda: router.diagnose(timeout_ms=20)),
    loop("spec", lambda: (router.spec.to_dict(), router.name)),
]
for t in threads:
    t.start()
reads = 0
deadline = time.monotonic() + 3
while time.monotonic() < deadline:
    # What a GIL holder reads while the others change the router.
    repr(router), router.active
    reads += 1
stop.set()
for t in threads:
    t.join()

# A teardown while promotions run in another thread: they stop with StaleHandleError.
stop.clear()
stale = loop("flip until torn down", flip, egress.StaleHandleError)
stale.start()
time.sleep(0.3)
undone = router.teardown()
stale.join()
print(json.dumps({
    "errors": errors,
    "calls": calls,
    "reads": reads,
    "undone": len(undone),
    "active": router.active,
    "repr": repr(router),
    "left": egress.inspect(spec.name, netns=ns),
}))
"""


def test_every_method_of_one_router_from_many_threads_at_once(lab: Lab) -> None:
    before = lab.snapshot()
    spec = lab.spec("py-threads")
    try:
        seen = json.loads(run_python(THREADS, json.dumps(spec.to_dict()), lab.path("router"), timeout=40))
    finally:
        egress.teardown("py-threads", netns=lab.path("router"))
    assert seen["errors"] == []
    for name in ("flip", "flip again", "stats", "diagnose", "spec", "flip until torn down"):
        assert seen["calls"][name] > 0, seen["calls"]
    assert seen["reads"] > 100
    assert seen["undone"] > 0 and seen["active"] is False and seen["left"] is None
    assert seen["repr"] == '<egress.Router "py-threads" (torn down)>'
    assert_same(before, lab.snapshot())


# Counts gratuitous ARPs for one address (sender and target both that address) on one link,
# until a line arrives on stdin; prints "ready" once it listens and the count when told.
CAPTURE = r"""
import select, socket, sys
link, address = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((link, 0))
print("ready", flush=True)
count = 0


def take():
    global count
    frame = s.recv(2048)
    # Ethernet header (14), then ARP: sender IP at 28, target IP at 38.
    count += frame[28:32] == address and frame[38:42] == address


while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if s in ready:
        take()
    if sys.stdin in ready:
        s.setblocking(False)
        try:
            while True:
                take()
        except BlockingIOError:
            pass
        print(count, flush=True)
        break
"""


class GratuitousArps:
    """The gratuitous ARPs for the lab's egress source that reach the gateway's link (in the
    `ext` namespace), counted while the `with` block runs."""

    def __init__(self, lab: Lab) -> None:
        self.argv = ["ip", "netns", "exec", lab.ns["ext"]["name"], sys.executable, "-c", CAPTURE,
                     lab.c["GATEWAY_LINK"], lab.source4()]
        self.count: Optional[int] = None

    def __enter__(self) -> GratuitousArps:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n"
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        out, _ = self.proc.communicate("stop\n", timeout=10)
        self.count = int(out)


def test_promote_returns_once_every_announcement_is_sent(lab: Lab) -> None:
    before = lab.snapshot()
    ns = lab.path("router")
    d: dict[str, Any] = lab.spec("py-garp").to_dict()
    # Three announcements, 300 ms apart: the last one 600 ms after the first.
    d["announce"] = {"count": 3, "interval_ms": 300}
    router = egress.RouterSpec.from_dict(d).apply(standby=True)
    try:
        # keepalived's notify script: a process that promotes by name and exits.
        with GratuitousArps(lab) as by_name:
            started = time.monotonic()
            run_python("import egress, sys; egress.promote(sys.argv[1], netns=sys.argv[2])", "py-garp", ns)
            took = time.monotonic() - started
            time.sleep(0.1)  # what was sent before it returned is on the wire by now
        assert by_name.count == 3
        assert took >= 0.6
        router.demote()
        with GratuitousArps(lab) as by_handle:
            assert router.promote()["role"] == "active"
            time.sleep(0.1)
        assert by_handle.count == 3
    finally:
        router.teardown()
    assert_same(before, lab.snapshot())


CTRL_C = r"""
import json, logging, os, signal, sys, threading, time
import egress

spec, ns = egress.RouterSpec.from_dict(json.loads(sys.argv[1])), sys.argv[2]
# At DEBUG, the apply's records reach logging on this thread when the call is back: Python runs
# the pending Ctrl-C handler inside that logging call, before the binding's own check.
logging.basicConfig(level=sys.argv[3], stream=sys.stderr)
sent = []


def interrupt():
    time.sleep(0.3)
    sent.append(time.monotonic())
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C


threading.Thread(target=interrupt).start()
notes = []
try:
    router = spec.apply()
    outcome = "returned"
except KeyboardInterrupt as e:
    outcome = "KeyboardInterrupt"
    notes = getattr(e, "__notes__", [])
back = time.monotonic()
print(json.dumps({
    "outcome": outcome,
    "notes": notes,
    "during_apply": bool(sent) and sent[0] < back,
    "left": egress.inspect(spec.name, netns=ns),
}))
"""


@pytest.mark.parametrize("level", ["WARNING", "DEBUG"])
def test_ctrl_c_during_apply_leaves_no_router_behind(lab: Lab, level: str) -> None:
    before = lab.snapshot()
    d: dict[str, Any] = lab.spec("py-ctrl-c").to_dict()
    # A duplicate address probe nobody answers keeps the apply busy for 1.5 s: the signal
    # arrives 0.3 s into it.
    d["probe"] = {"timeout_ms": 1500}
    try:
        seen = json.loads(run_python(CTRL_C, json.dumps(d), lab.path("router"), level))
    finally:
        egress.teardown("py-ctrl-c", netns=lab.path("router"))
    assert seen == {"outcome": "KeyboardInterrupt", "notes": [], "during_apply": True, "left": None}
    assert_same(before, lab.snapshot())
