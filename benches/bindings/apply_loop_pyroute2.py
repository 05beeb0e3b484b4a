"""The pyroute2 leg of scripts/bench-bindings.sh: what a Python author writes today without
egress. The same router as the other legs (SPEC.json, egress's JSON form, read here for its
values only), built with pyroute2 (IPRoute bound to the node and router namespaces: the
macvlan, its addresses, the routes) plus one `nft -f` process for egress's own ruleset (the
same NAT map, SNAT and forward filter, as text), and the sysctls written in /proc/sys from
the router namespace (pyroute2 has no sysctl API; `pyroute2.netns.pushns`). Teardown removes
the table and the macvlan and puts back the default routes and the sysctls.

    python apply_loop_pyroute2.py SPEC.json N    # as root, pyroute2 installed

prints one JSON line like apply_loop.py: {"apply": [us, ...], "teardown": [...],
"apply_cpu": [...], "teardown_cpu": [...]} (the CPU time of this process: `nft`'s own is not
in it). The sockets are opened inside the timed apply, as a function that applies a router
does (pyroute2 opens a socket in another namespace from a forked child); "open" holds that
part alone. One untimed warm-up round. Unlike egress it validates nothing, has no rollback and
reads nothing back: it is the floor of what such a script costs, not an equivalent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from pyroute2 import IPRoute
from pyroute2.netns import popns, pushns

import egress

MACVLAN = "macvlan0"
SYSCTLS_ON = {
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    f"net/ipv4/conf/{MACVLAN}/arp_notify": "1",
    f"net/ipv6/conf/{MACVLAN}/ndisc_notify": "1",
    f"net/ipv6/conf/{MACVLAN}/accept_ra": "0",
}
FORWARDING = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")


def family(addr: str) -> int:
    return 10 if ":" in addr else 2


def ruleset_of(spec_dict: dict, router_ns: str) -> str:
    """egress's own ruleset for this spec, as `nft -f` text under another table name."""
    router = egress.RouterSpec.from_dict(spec_dict).apply()
    tables = nft(router_ns, ["list", "tables"]).split()
    table = next(t for t in tables if t.startswith("egress_"))
    text = nft(router_ns, ["list", "table", "inet", table])
    router.teardown()
    return text.replace(table, "pyroute2_router")


def nft(ns: str, args: list[str], stdin: str | None = None) -> str:
    return subprocess.run(["nsenter", f"--net={ns}", "nft", *args], input=stdin, text=True,
                          check=True, capture_output=True).stdout


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    pushns(ns)
    try:
        for key, value in values.items():
            with open(f"/proc/sys/{key}", "w", encoding="ascii") as f:
                f.write(value)
    finally:
        popns()


class Router:
    def __init__(self, spec: dict, ruleset: str):
        ext = spec["external"]["macvlan"]
        self.node_ns = ext["parent_netns"]["path"]
        self.router_ns = spec["netns"]["path"]
        self.parent = ext["parent"]
        self.sources = spec["sources"]
        self.gateways = spec["gateways"]
        self.kept = spec["kept_routes"]
        self.internal = spec["internal"]
        self.ruleset = ruleset
        with IPRoute(netns=self.router_ns) as ipr:
            # The default routes a teardown puts back.
            self.defaults = [
                (fam, r.get("RTA_GATEWAY"), r.get("RTA_OIF"), r["proto"])
                for fam in (2, 10)
                for r in ipr.get_routes(family=fam, table=254)
                if r["dst_len"] == 0 and r.get("RTA_GATEWAY")
            ]

    def apply(self) -> float:
        t0 = time.perf_counter_ns()
        node, ipr = IPRoute(netns=self.node_ns), IPRoute(netns=self.router_ns)
        opened = time.perf_counter_ns() - t0
        try:
            parent = node.link_lookup(ifname=self.parent)[0]
            node.link("add", ifname=MACVLAN, kind="macvlan", link=parent,
                      macvlan_mode="private", net_ns_fd=self.router_ns)
            idx = ipr.link_lookup(ifname=MACVLAN)[0]
            ipr.link("set", index=idx, state="up")
            for cidr in self.sources:
                addr, plen = cidr.split("/")
                extra = {"flags": 0x02} if ":" in addr else {}  # IFA_F_NODAD
                ipr.addr("add", index=idx, address=addr, prefixlen=int(plen), **extra)
            for gw in self.gateways:
                fam = family(gw)
                ipr.route("add", dst=gw, dst_len=32 if fam == 2 else 128, oif=idx, family=fam)
            for fam, _, _, _ in self.defaults:
                ipr.route("del", dst="default", family=fam)
            for gw in self.gateways:
                ipr.route("add", dst="default", gateway=gw, oif=idx, family=family(gw))
            internal = ipr.link_lookup(ifname=self.internal)[0]
            for k in self.kept:
                ipr.route("add", dst=k["to"], gateway=k["via"], oif=internal)
            write_sysctls(self.router_ns, SYSCTLS_ON)
        finally:
            node.close()
            ipr.close()
        nft(self.router_ns, ["-f", "-"], self.ruleset)
        return opened / 1e3

    def teardown(self) -> None:
        nft(self.router_ns, ["delete", "table", "inet", "pyroute2_router"])
        with IPRoute(netns=self.router_ns) as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname=MACVLAN)[0])
            for k in self.kept:
                ipr.route("del", dst=k["to"])
            for fam, gw, oif, proto in self.defaults:
                ipr.route("add", dst="default", gateway=gw, oif=oif, family=fam, proto=proto)
        write_sysctls(self.router_ns, {k: "0" for k in FORWARDING})


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print("usage: apply_loop_pyroute2.py SPEC.json N", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    router = Router(spec, ruleset_of(spec, spec["netns"]["path"]))
    if any(open_forwarding(router.router_ns)):
        print("apply_loop_pyroute2: forwarding is on before the run", file=sys.stderr)
        return 1
    n = int(argv[2])
    keys = ("apply", "teardown", "apply_cpu", "teardown_cpu", "open")
    times: dict[str, list[float]] = {k: [] for k in keys}
    wall, cpu = time.perf_counter_ns, time.process_time_ns
    for i in range(n + 1):
        w0, c0 = wall(), cpu()
        opened = router.apply()
        w1, c1 = wall(), cpu()
        router.teardown()
        w2, c2 = wall(), cpu()
        if i > 0:
            times["apply"].append((w1 - w0) / 1e3)
            times["teardown"].append((w2 - w1) / 1e3)
            times["apply_cpu"].append((c1 - c0) / 1e3)
            times["teardown_cpu"].append((c2 - c1) / 1e3)
            times["open"].append(opened)
    print(json.dumps(times))
    return 0


def open_forwarding(ns: str) -> list[bool]:
    pushns(ns)
    try:
        return [open(f"/proc/sys/{k}", encoding="ascii").read().strip() != "0"
                for k in FORWARDING]
    finally:
        popns()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
