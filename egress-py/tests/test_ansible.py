"""The Ansible modules (examples/ansible) run by a real ansible-playbook against the lab (root):
check mode changes nothing and reports the live plan (a standby's for state standby), apply
reports changed, re-apply reports unchanged, drift is repaired, absent removes everything
(also the marked macvlan of a router whose record is gone) and is ok when the namespace is
gone, and a library error comes back as `failed` (an invalid spec with every invalid field);
egress_router_info (diagnose.yml) changes nothing, in check mode or not, and returns the
router's state and its diagnosis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import egress
from conftest import Lab, assert_same

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ansible"
CALLBACKS = Path(__file__).resolve().parent / "ansible_callback"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable} (pip install ansible-core)")
    return str(path)


class Playbook:
    def __init__(self, lab: Lab, tmp: Path, playbook: str = "playbook.yml", action: str = "egress_router") -> None:
        self.tmp = tmp
        self.playbook = playbook
        self.action = action
        c = lab.c
        self.vars: dict[str, Any] = {
            "egress_name": "py-ansible",
            "egress_netns": lab.path("router"),
            "egress_parent": c["MACVLAN_PARENT"],
            "egress_parent_netns": lab.path("node"),
            "egress_sources": [c["EGRESS_SOURCE4"]],
            "egress_gateways": [c["GATEWAY4"]],
            "egress_redirects": [
                {"port": c["SERVICE_PORT"], "protocol": "tcp", "to": c["WEB4"], "to_port": c["WEB_PORT"]}
            ],
            "egress_fallback": [c["FALLBACK4"]],
        }
        self.runs = 0

    def run(self, *args: str, **overrides: Any) -> dict[str, Any]:
        """Runs the playbook; returns the result of its task of self.action (with "status")."""
        self.runs += 1
        record = self.tmp / f"run{self.runs}.jsonl"
        extra = self.tmp / f"vars{self.runs}.json"
        extra.write_text(json.dumps({**self.vars, **overrides}))
        env = {
            **os.environ,
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
            "ANSIBLE_CALLBACKS_ENABLED": "egress_record",
            "EGRESS_ANSIBLE_RECORD": str(record),
            "ANSIBLE_LOCALHOST_WARNING": "false",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_HOME": str(self.tmp / "ansible-home"),
        }
        proc = subprocess.run(
            [tool("ansible-playbook"), "-i", "inventory.ini", self.playbook, "-e", f"@{extra}", *args],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        results = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        mine = [r for r in results if r["action"] == self.action]
        assert len(mine) == 1, f"ansible-playbook {args}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        result: dict[str, Any] = mine[0]["result"]
        result["status"] = mine[0]["status"]
        expected_rc = 2 if result["status"] == "failed" else 0
        assert proc.returncode == expected_rc, f"{proc.stdout}\n{proc.stderr}"
        return result


def module_doc(module: str, tmp_path: Path) -> str:
    return subprocess.run(
        [tool("ansible-doc"), "-M", str(EXAMPLE / "library"), module],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_HOME": str(tmp_path), "ANSIBLE_NOCOLOR": "1"},
    ).stdout


def test_module_documentation_parses(tmp_path: Path) -> None:
    out = module_doc("egress_router", tmp_path)
    assert "MODULE egress_router" in out and "Turns a network namespace into an" in out
    assert "redirects" in out and "to_port" in out
    out = module_doc("egress_router_info", tmp_path)
    assert "MODULE egress_router_info" in out and "Never changes anything" in out
    assert "timeout_ms" in out and "failed_checks" in out


def test_playbook_check_apply_reapply_repair_absent(lab: Lab, tmp_path: Path) -> None:
    c = lab.c
    lab.ask("serve")
    before = lab.snapshot()
    book = Playbook(lab, tmp_path)
    router_ns = lab.path("router")

    # Check mode: reports the plan and the drift, changes nothing.
    r = book.run("--check", "--diff")
    assert (r["status"], r["changed"], r["action"]) == ("ok", True, "created")
    assert r["plan"][0].startswith("ip -6 route add blackhole")  # the crash record first
    assert r["plan"][1].startswith("nft add table inet egress_py_ansible")
    assert r["drift"] == ["router not configured (no nftables table inet egress_py_ansible)"]
    assert r["diff"]["before"] == {"state": "absent"}
    assert r["diff"]["after"]["plan"] == r["plan"]
    assert_same(before, lab.snapshot())

    # Apply: changed, and real TCP goes through the router.
    r = book.run("--diff")
    assert (r["status"], r["changed"], r["action"]) == ("ok", True, "created")
    assert r["router"]["name"] == "py-ansible" and r["router"]["link"]["mode"] == "private"
    assert r["diff"]["after"]["state"] == "present"
    body = lab.get(c["ROUTER_ETH0_4"], c["SERVICE_PORT"])
    assert body.strip() == f"peer={lab.source4()} port={c['WEB_PORT']}"

    # The same run again: nothing to do.
    r = book.run("--diff")
    assert (r["status"], r["changed"], r["action"], r["plan"]) == ("ok", False, "unchanged", [])
    assert r["diff"]["before"] == r["diff"]["after"]

    # Drift behind Ansible's back: check mode sees it, and plans only the repair.
    lab.ip("router", "link", "set", "macvlan0", "down")
    r = book.run("--check")
    assert (r["changed"], r["action"]) == (True, "repaired")
    assert "link macvlan0 is down" in r["drift"]
    assert r["plan"][0] == "ip link set dev macvlan0 up"
    assert not any(step.startswith("ip link add") for step in r["plan"]), r["plan"]
    assert egress.inspect("py-ansible", netns=router_ns)["link"]["up"] is False  # type: ignore[index]
    r = book.run()
    assert (r["changed"], r["action"]) == (True, "repaired")
    assert lab.get(c["ROUTER_ETH0_4"], c["SERVICE_PORT"]).startswith(f"peer={lab.source4()}")
    assert book.run()["changed"] is False

    # A changed spec (another fallback) is drift too.
    r = book.run(egress_fallback=[c["WEB4"]])
    assert (r["changed"], r["action"]) == (True, "repaired")

    # Absent, in check mode: would remove, removes nothing.
    r = book.run("--check", "--diff", egress_state="absent")
    assert (r["changed"], r["action"]) == (True, "removed")
    assert r["diff"]["after"] == {"state": "absent"}
    assert egress.inspect("py-ansible", netns=router_ns) is not None

    # Absent: everything removed, both namespaces exactly as before; then nothing to do.
    r = book.run("--diff", egress_state="absent")
    assert (r["changed"], r["action"]) == (True, "removed")
    assert any("macvlan0" in step for step in r["removed"])
    assert_same(before, lab.snapshot())
    r = book.run(egress_state="absent")
    assert (r["changed"], r["action"]) == (False, "unchanged")


def test_playbook_standby_creates_a_standby_and_leaves_the_role_to_the_election(
    lab: Lab, tmp_path: Path
) -> None:
    before = lab.snapshot()
    book = Playbook(lab, tmp_path)
    router_ns = lab.path("router")
    # Check mode plans the standby: nothing of the egress identity (its address, the default
    # route via the gateway), which the active plan claims.
    active = book.run("--check")["plan"]
    planned = book.run("--check", egress_state="standby")
    assert (planned["changed"], planned["action"]) == (True, "created")
    identity = [f"ip addr add {lab.c['EGRESS_SOURCE4']} dev macvlan0 proto 158"]
    assert set(identity) <= set(active)
    assert not set(identity) & set(planned["plan"]), planned["plan"]
    assert not any(step.startswith("ip route replace default") for step in planned["plan"])
    assert_same(before, lab.snapshot())
    r = book.run(egress_state="standby")
    assert (r["changed"], r["action"], r["plan"]) == (True, "created", planned["plan"])
    assert r["router"]["role"] == "standby" and r["router"]["addresses"] == []
    assert book.run(egress_state="standby")["changed"] is False
    # The election engine promotes it; Ansible does not fight it, in either state.
    egress.promote("py-ansible", netns=router_ns)
    assert book.run(egress_state="standby")["changed"] is False
    r = book.run()
    assert (r["changed"], r["router"]["role"]) == (False, "active")
    r = book.run(egress_state="absent")
    assert (r["changed"], r["action"]) == (True, "removed")
    assert_same(before, lab.snapshot())


def test_absent_is_ok_when_the_namespace_is_gone(lab: Lab, tmp_path: Path) -> None:
    book = Playbook(lab, tmp_path)
    gone = lab.path("router") + "-gone"
    assert not Path(gone).exists()
    for args in (("--check",), ()):
        r = book.run(*args, egress_state="absent", egress_netns=gone)
        assert (r["status"], r["changed"], r["action"], r["plan"]) == ("ok", False, "unchanged", [])
    # Present still needs the namespace: that is a failure naming it.
    r = book.run(egress_netns=gone)
    assert (r["status"], r["error"]) == ("failed", "NotFoundError")
    assert gone in r["msg"]


def test_absent_leaves_alone_a_link_no_record_proves_the_routers(lab: Lab, tmp_path: Path) -> None:
    book = Playbook(lab, tmp_path)
    router_ns = lab.path("router")
    lab.spec("py-ansible").apply()
    # Its crash record gone (both record tables flushed, its nftables table deleted): the
    # macvlan's link group is only a hint (a 16-bit hash of the name, which anyone with
    # CAP_NET_ADMIN in the pod can set), so teardown by name, and absent with it, proves
    # nothing its own and changes nothing (docs/security.md, rule 3).
    for family, table in (("-4", "1701278323"), ("-4", "1701278317"), ("-6", "1701278323")):
        lab.ip("router", family, "route", "flush", "table", table)
    subprocess.run(
        ["ip", "netns", "exec", lab.ns["router"]["name"], "nft", "delete", "table", "inet", "egress_py_ansible"],
        check=True,
    )
    assert egress.inspect("py-ansible", netns=router_ns) is None
    assert "macvlan0" in lab.ip("router", "link", "show")

    for args in (("--check", "--diff"), ()):
        r = book.run(*args, egress_state="absent")
        assert (r["status"], r["changed"], r["action"], r["plan"]) == ("ok", False, "unchanged", [])
        assert "macvlan0" in lab.ip("router", "link", "show")
    lab.ip("router", "link", "del", "macvlan0")


def test_library_errors_come_back_as_failed(lab: Lab, tmp_path: Path) -> None:
    before = lab.snapshot()
    book = Playbook(lab, tmp_path)
    r = book.run(egress_sources=["203.0.113.300/24"])
    assert r["status"] == "failed"
    assert r["msg"] == (
        "invalid sources[0] `203.0.113.300/24`: an IPv4 or IPv6 address with an optional /prefix"
    )
    assert (r["error"], r["field"]) == ("InvalidSpecError", "sources[0]")
    # Every invalid field at once, before the kernel is read.
    r = book.run(
        egress_name="Bad_Name",
        egress_gateways=["203.0.113.1", "gw.example"],
        egress_redirects=[{"port": 70000, "protocol": "tcp", "to": "198.51.100.25"}],
    )
    assert (r["status"], r["error"], r["field"]) == ("failed", "InvalidSpecError", "name")
    assert [e["field"] for e in r["errors"]] == ["name", "gateways[1]", "redirects[0].port"]
    assert r["errors"][2] == {"field": "redirects[0].port", "value": "70000", "expected": "a port from 1 to 65535"}
    assert r["msg"].startswith("invalid name `Bad_Name`: 1 to 32 characters from [a-z0-9-]; and 2 more: ")
    for e in r["errors"]:
        assert f"invalid {e['field']} `{e['value']}`: {e['expected']}" in r["msg"]
    r = book.run(egress_parent="eth9")
    assert r["status"] == "failed" and r["error"] == "NotFoundError"
    assert "eth9" in r["msg"]
    assert_same(before, lab.snapshot())


def test_info_module_reads_and_diagnoses_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    c = lab.c
    lab.ask("serve")
    book = Playbook(lab, tmp_path, "diagnose.yml", "egress_router_info")
    book.vars = {"egress_name": "py-ansible-info", "egress_netns": lab.path("router"), "egress_timeout_ms": 200}

    # Not configured: no error, no router, the state check fails and says so.
    before = lab.snapshot()
    r = book.run()
    assert (r["status"], r["changed"], r["router"], r["failed_checks"]) == ("ok", False, None, ["state"])
    assert r["diagnosis"]["checks"][0]["summary"].startswith("router py-ansible-info is not configured")
    assert_same(before, lab.snapshot())

    # A healthy router, applied by another process: every check ok, in check mode too, and
    # the namespaces as before.
    with lab.spec("py-ansible-info").apply():
        before = lab.snapshot()
        for args in ((), ("--check",)):
            r = book.run(*args)
            assert (r["status"], r["changed"], r["worst_status"], r["failed_checks"]) == ("ok", False, "ok", [])
            assert r["router"]["name"] == "py-ansible-info" and r["router"]["link"]["name"] == "macvlan0"
            d = r["diagnosis"]
            assert d["router"] == "py-ansible-info"
            names = [ch["name"] for ch in d["checks"]]
            for name in ("state", "link", "sysctl", "gateway", "l2_filter", "duplicate_address", "destination", "traffic"):
                assert name in names, names
            assert all(list(ch) == ["name", "status", "summary", "hint", "evidence"] for ch in d["checks"])
            assert all((ch["status"], ch["hint"]) == ("ok", None) for ch in d["checks"]), d
            [gw] = [ch for ch in d["checks"] if ch["name"] == "gateway"]
            assert (gw["evidence"]["gateway"], gw["evidence"]["timeout_ms"]) == (c["GATEWAY4"], 200)
        assert_same(before, lab.snapshot())

        # The gateway's address removed: the task still succeeds and names what failed, with
        # the hint.
        lab.ip("ext", "addr", "del", f"{c['GATEWAY4']}/24", "dev", c["GATEWAY_LINK"])
        r = book.run("--check")
        assert (r["status"], r["changed"], r["worst_status"]) == ("ok", False, "fail")
        assert "gateway" in r["failed_checks"]
        [gw] = [ch for ch in r["diagnosis"]["checks"] if ch["name"] == "gateway"]
        assert gw["status"] == "fail" and "did not answer" in gw["summary"] and gw["hint"]

        # Bad input: a module failure with the typed message, naming the field and the value.
        r = book.run(egress_timeout_ms=0)
        assert (r["status"], r["error"], r["field"]) == ("failed", "InvalidSpecError", "timeout_ms")
        assert r["msg"] == "invalid timeout_ms `0`: a timeout from 1 to 10000 ms"
        r = book.run(egress_name="Bad_Name")
        assert (r["status"], r["error"], r["field"]) == ("failed", "InvalidSpecError", "name")
        assert r["msg"].startswith("invalid name `Bad_Name`")
