"""Reads a diagnosis in its JSON form on stdin (what diagnose_test.c got from libegress) with a
real JSON parser, checks its shape (docs/diagnose.md), and checks the statuses it is told:

    check_diagnosis.py ROUTER [NAME=STATUS ...]     # NAME "*": every check

Exits 0 when everything holds; otherwise prints what did not, and the diagnosis, and exits 1."""

from __future__ import annotations

import json
import sys


def main() -> int:
    router, expected = sys.argv[1], sys.argv[2:]
    d = json.load(sys.stdin)
    problems = []
    if list(d) != ["router", "checks"] or d["router"] != router:
        problems.append(f"not a diagnosis of {router}: keys {list(d)}")
    names = ["state", "link", "sysctl", "gateway", "l2_filter", "duplicate_address", "destination", "traffic"]
    for c in d.get("checks", []):
        if list(c) != ["name", "status", "summary", "hint", "evidence"]:
            problems.append(f"a check with keys {list(c)}")
        elif c["name"] not in names or c["status"] not in ("ok", "warn", "fail", "skipped"):
            problems.append(f"a check named {c['name']!r} with status {c['status']!r}")
        elif not isinstance(c["evidence"], dict) or (c["hint"] is None) != (c["status"] in ("ok", "skipped")):
            problems.append(f"check {c['name']}: evidence {c['evidence']!r}, hint {c['hint']!r}")
    order = [names.index(c["name"]) for c in d.get("checks", []) if c.get("name") in names]
    if order != sorted(order) or set(order) != set(range(len(names))):
        problems.append("the checks are not every check in the documented order")
    for e in expected:
        name, status = e.split("=")
        got = [c["status"] for c in d.get("checks", []) if name in ("*", c.get("name"))]
        if not got or any(s != status for s in got):
            problems.append(f"{name}: expected {status}, got {got}")
    if problems:
        print("check_diagnosis: " + "; ".join(problems), file=sys.stderr)
        print(json.dumps(d, indent=2), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
