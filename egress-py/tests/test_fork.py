"""fork: a child process calls the library whatever its parent did just before, and may use a
router handle its parent made (root). Each child has its own deadline (SIGALRM) and the parent
waits for it with one: a hang fails the test, it does not stall it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings
from typing import Callable

import pytest

import egress
from conftest import Lab, assert_same

CHILD_SECONDS = 10


def in_child(child: Callable[[], int]) -> int:
    """Forks; the child runs `child` and exits with its code. Returns that code."""
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a process with threads (the library's, idle after a
        # call) may deadlock the child: exactly what this test says it does not.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        signal.alarm(CHILD_SECONDS)
        code = 101
        try:
            code = child()
        finally:
            os._exit(code)
    deadline = time.monotonic() + CHILD_SECONDS + 5
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.01)
    assert os.WIFEXITED(status), f"the child did not exit: status {status:#x} (a hang ends by SIGALRM)"
    return os.WEXITSTATUS(status)


def test_a_child_calls_right_after_its_parent(lab: Lab) -> None:
    path = lab.path("router")
    with lab.spec("py-fork").apply():
        for _ in range(3):
            assert egress.inspect("py-fork", netns=path) is not None
            assert in_child(lambda: 0 if egress.inspect("py-fork", netns=path) is not None else 1) == 0


def test_a_child_tears_down_with_its_parent_s_handle(lab: Lab) -> None:
    before = lab.snapshot()
    path = lab.path("router")
    router = lab.spec("py-fork-handle").apply()

    def teardown() -> int:
        return 0 if router.teardown() else 1

    assert in_child(teardown) == 0
    assert egress.inspect("py-fork-handle", netns=path) is None
    # The parent's copy finds nothing left to undo.
    assert router.teardown() == []
    assert_same(before, lab.snapshot())


def test_a_multiprocessing_fork_worker_calls_right_after_its_parent(lab: Lab) -> None:
    path = lab.path("router")
    with lab.spec("py-fork-pool").apply():
        assert egress.inspect("py-fork-pool", netns=path) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as in_child() says
            pool = multiprocessing.get_context("fork").Pool(1)  # its worker forks now
        with pool:
            answer = pool.apply_async(egress.inspect, ("py-fork-pool",), {"netns": path})
            try:
                state = answer.get(timeout=CHILD_SECONDS)
            except multiprocessing.TimeoutError:
                pytest.fail("the worker hung")
        assert state is not None and state["name"] == "py-fork-pool"
