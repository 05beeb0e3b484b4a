"""The Python leg of scripts/bench-bindings.sh: applies and tears down one router N times
through the `egress` wheel (RouterSpec.from_dict, spec.apply(), router.teardown()) and prints
how long each call took, like examples/apply_loop.rs does through egress_core::blocking.

    python apply_loop.py SPEC.json N    # as root

prints one JSON line, {"apply": [us, ...], "teardown": [...], "apply_cpu": [...],
"teardown_cpu": [...]}, with N values each: the wall-clock time of each call, then the CPU time
the process (every thread) spent in it. Only the two calls are timed: not reading or parsing
the spec, and not one untimed warm-up round (the calling thread's netlink runtime is made on
first use). spec.apply() validates the spec's dict form on every call, as it does for any user.
"""

from __future__ import annotations

import json
import sys
import time

import egress


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: apply_loop.py SPEC.json N", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = egress.RouterSpec.from_dict(json.load(f))
    n = int(argv[2])
    keys = ("apply", "teardown", "apply_cpu", "teardown_cpu")
    times: dict[str, list[float]] = {k: [] for k in keys}
    wall, cpu = time.perf_counter_ns, time.process_time_ns
    # Round 0 is the untimed warm-up.
    for i in range(n + 1):
        w0, c0 = wall(), cpu()
        router = spec.apply()
        w1, c1 = wall(), cpu()
        router.teardown()
        w2, c2 = wall(), cpu()
        if i > 0:
            times["apply"].append((w1 - w0) / 1e3)
            times["teardown"].append((w2 - w1) / 1e3)
            times["apply_cpu"].append((c1 - c0) / 1e3)
            times["teardown_cpu"].append((c2 - c1) / 1e3)
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
