"""The README's Python example, run as it is printed.

It names its namespace "/run/netns/pod" and the parent link "eth1" of the namespace it runs in:
it runs in a throwaway `egt-…` "node" namespace holding eth1, and in a private mount namespace
(`unshare --mount`) whose /run/netns is a tmpfs holding only `pod`, a bind mount of a throwaway
`egt-…` namespace holding eth0 (the other end of eth1). No other process sees that `pod`; both
namespaces must be exactly as before afterwards (tests/readme.rs does the same for the Rust
example).
"""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"

AS_POD = """set -e
touch "$DIR/node" "$DIR/pod"
mount --bind "$NODE" "$DIR/node"
mount --bind "$POD" "$DIR/pod"
mount -t tmpfs -o size=1m egress-readme /run/netns
touch /run/netns/pod
mount --bind "$DIR/pod" /run/netns/pod
exec nsenter --net="$DIR/node" "$@"
"""


def python_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Use it from Python\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"\n```python\n(.*?)\n```\n", section, re.S)
    assert match, "README's Python section has no python block"
    return match.group(1) + "\n"


def state(ns: str) -> dict[str, str]:
    """What the example may change in `ns`, one text per command."""
    commands = [
        ["ip", "-n", ns, "-d", "link"],
        ["ip", "-n", ns, "addr"],
        ["ip", "-n", ns, "route", "show", "table", "all"],
        ["ip", "-n", ns, "-6", "route", "show", "table", "all"],
        ["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
        ["ip", "netns", "exec", ns, "sysctl", "net.ipv4.ip_forward",
         "net.ipv6.conf.all.forwarding"],
    ]
    return {" ".join(c): subprocess.run(c, check=True, capture_output=True, text=True).stdout
            for c in commands}


def assert_same(before: dict[str, str], after: dict[str, str]) -> None:
    for command, text in before.items():
        diff = "".join(difflib.unified_diff(text.splitlines(True), after[command].splitlines(True)))
        assert not diff, f"{command} differs after the example:\n{diff}"


def test_the_python_example_runs_as_printed(tmp_path: Path) -> None:
    node, pod = (f"egt-{os.getpid()}-readme-{role}" for role in ("node", "pod"))
    made: list[str] = []
    try:
        for ns in (node, pod):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run(["ip", "-n", node, "link", "add", "eth1", "type", "veth", "peer", "name",
                        "eth0", "netns", pod], check=True)
        subprocess.run(["ip", "-n", node, "link", "set", "eth1", "up"], check=True)
        subprocess.run(["ip", "-n", pod, "link", "set", "eth0", "up"], check=True)
        # The veth's carrier comes up a moment later: the snapshot is taken after it.
        for _ in range(500):
            links = [subprocess.run(["ip", "-n", ns, "link", "show", link], check=True,
                                    capture_output=True, text=True).stdout
                     for ns, link in ((node, "eth1"), (pod, "eth0"))]
            if not any("NO-CARRIER" in text for text in links):
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"the veth pair has no carrier after 5 s: {links}")
        before = [state(node), state(pod)]
        host_has_pod = Path("/run/netns/pod").exists()
        example = tmp_path / "example.py"
        example.write_text(python_block(), encoding="utf-8")
        out = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", AS_POD, "sh",
             sys.executable, str(example)],
            env={**os.environ, "DIR": str(tmp_path), "NODE": f"/run/netns/{node}",
                 "POD": f"/run/netns/{pod}"},
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        # It printed the plan (the macvlan made on eth1 and moved into pod) and the router.
        assert "ip link add macvlan0 link eth1 netns /run/netns/pod" in out.stdout, out.stdout
        assert "'name': 'egress-1'" in out.stdout, out.stdout
        for was, ns in zip(before, (node, pod)):
            assert_same(was, state(ns))
        assert Path("/run/netns/pod").exists() == host_has_pod
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=True)
