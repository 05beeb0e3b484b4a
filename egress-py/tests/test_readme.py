"""The README's Python example, run as it is printed.

It names its namespace "/run/netns/pod" and the parent link "eth1" of the namespace it runs in:
it runs in a throwaway `egt-…` "node" namespace holding eth1, and in a private mount namespace
(`unshare --mount`) whose /run/netns is a tmpfs holding only `pod`, a bind mount of a throwaway
`egt-…` namespace holding eth0 (the other end of eth1). No other process sees that `pod`; both
namespaces must be exactly as before afterwards (tests/readme.rs does the same for the Rust
example).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
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


def state(ns: str) -> list[str]:
    def run(*cmd: str) -> str:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    return [
        run("ip", "-n", ns, "-d", "link"),
        run("ip", "-n", ns, "addr"),
        run("ip", "-n", ns, "route", "show", "table", "all"),
        run("ip", "-n", ns, "-6", "route", "show", "table", "all"),
        run("ip", "netns", "exec", ns, "nft", "list", "ruleset"),
        run("ip", "netns", "exec", ns, "sysctl", "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding"),
    ]


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
        assert [state(node), state(pod)] == before
        assert Path("/run/netns/pod").exists() == host_has_pod
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=True)
