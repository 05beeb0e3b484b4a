"""Fixtures: the lab topology of the Rust test suite, driven through `examples/lab-topology.rs`.

The topology (node, router, client, ext namespaces; the web server; snapshots of what
"restored exactly" means) is built by the same Rust code as the Rust end-to-end tests, in a
helper process that prints the namespaces as JSON, answers commands on stdin and deletes
everything when its stdin closes. Set EGRESS_LAB_TOPOLOGY to the helper's binary
(scripts/test-py.sh does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import egress


def helper_binary() -> str:
    path = os.environ.get("EGRESS_LAB_TOPOLOGY")
    if not path or not Path(path).is_file():
        pytest.fail(
            "EGRESS_LAB_TOPOLOGY must name the lab helper binary "
            "(cargo build --example lab-topology; scripts/test-py.sh sets it)",
            pytrace=False,
        )
    return path


class Lab:
    """One lab: four fresh namespaces, deleted by close()."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [helper_binary()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            pytest.fail(f"lab-topology exited with {self.proc.returncode} before describing the lab")
        info = json.loads(line)
        self.ns: dict[str, dict[str, str]] = info["namespaces"]
        self.c: dict[str, Any] = info["constants"]

    def path(self, role: str) -> str:
        """/run/netns/... of node, router, client or ext."""
        return self.ns[role]["path"]

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer or "ok" in answer, answer
        return answer

    def snapshot(self) -> dict[str, list[str]]:
        """Both namespaces a router touches (router, node), as normalized lines."""
        snap: dict[str, list[str]] = self.ask("snapshot")
        return snap

    def get(self, addr: str, port: int) -> str:
        """Body of an HTTP GET from the client namespace; fails the test if it fails."""
        answer = self.ask(f"get {addr} {port}")
        assert answer["ok"], answer["error"]
        body: str = answer["body"]
        return body

    def get_fails(self, addr: str, port: int) -> bool:
        return not self.ask(f"get {addr} {port}")["ok"]

    def ip(self, role: str, *args: str) -> str:
        """`ip -n NS ARGS` (to change the kernel behind the library's back)."""
        return subprocess.run(
            ["ip", "-n", self.ns[role]["name"], *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def spec(self, name: str) -> egress.RouterSpec:
        """The Rust lab's router_spec(): IPv4, a private macvlan on the node's ext0, two
        redirects (SERVICE_PORT -> WEB4:WEB_PORT, WEB_PORT -> WEB4)."""
        c = self.c
        return (
            egress.RouterSpec(name=name, netns=self.path("router"), internal=c["ROUTER_INTERNAL"])
            .macvlan(c["MACVLAN_PARENT"], "private", parent_netns=self.path("node"))
            .source(c["EGRESS_SOURCE4"])
            .gateway(c["GATEWAY4"])
            .redirect(c["SERVICE_PORT"], c["WEB4"], c["WEB_PORT"])
            .redirect(c["WEB_PORT"], c["WEB4"])
        )

    def source4(self) -> str:
        source: str = self.c["EGRESS_SOURCE4"].split("/")[0]
        return source

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        left = [n["name"] for n in self.ns.values() if Path(n["path"]).exists()]
        assert rc == 0, f"lab-topology exited with {rc}"
        assert not left, f"namespaces left behind: {left}"


def assert_same(before: dict[str, list[str]], after: dict[str, list[str]]) -> None:
    """Both namespaces exactly as before, with a readable diff if not."""
    for ns in ("router", "node"):
        gone = sorted(set(before[ns]) - set(after[ns]))
        new = sorted(set(after[ns]) - set(before[ns]))
        diff = "\n".join([f"- {line}" for line in gone] + [f"+ {line}" for line in new])
        assert before[ns] == after[ns], f"{ns} namespace differs:\n{diff}"


def python_beside(call: Callable[[], object]) -> tuple[float, float, list[float]]:
    """Runs `call` on a thread while this thread runs Python (a loop, each turn a point at
    which the interpreter may switch threads: every 0.2 ms when both want the GIL), noting the
    time every 1000 turns. Returns when the call started and when it returned, and the times
    noted. A call that held the GIL would let this thread run only before it entered the core
    and after it came back: for as long as the binding runs Python around the call (a few
    tens of milliseconds here), never in the middle of a long wait."""
    ticks: list[float] = []
    span: list[float] = []
    failed: list[BaseException] = []
    started = threading.Event()

    def run() -> None:
        span.append(time.monotonic())
        started.set()
        try:
            call()
        except BaseException as e:  # reported below, on the test's thread
            failed.append(e)
        span.append(time.monotonic())

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    thread = threading.Thread(target=run)
    try:
        thread.start()
        started.wait()
        while thread.is_alive():
            for _ in range(1000):
                pass
            ticks.append(time.monotonic())
    finally:
        thread.join()
        sys.setswitchinterval(switch_interval)
    assert not failed, failed
    return span[0], span[1], ticks


def assert_python_ran_in_the_middle(call: Callable[[], object]) -> None:
    """`call` waits at least 1.4 s (a kernel or network wait), and this thread ran Python in
    the middle third of it: the GIL was released while the call waited. A pause of the kernel's
    (60-90 ms seen on two busy CPUs) is far shorter than that third."""
    start, end, ticks = python_beside(call)
    took = end - start
    assert took >= 1.4, f"the call took {took:.3f} s: too quick to tell"
    middle = [t for t in ticks if start + took / 3 < t < end - took / 3]
    gaps = [round(b - a, 3) for a, b in zip([start, *ticks], [*ticks, end])]
    assert middle, f"no Python ran in the middle of a {took:.3f} s call (longest gap {max(gaps)} s)"


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it creates network namespaces)", pytrace=False)


@pytest.fixture
def lab(root: None) -> Iterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()
