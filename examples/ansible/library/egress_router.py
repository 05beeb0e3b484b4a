#!/usr/bin/python
# Copyright: the egress authors. MIT OR Apache-2.0.
"""Ansible module egress_router: an egress router in a network namespace, via the egress library."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: egress_router
short_description: Configure an egress router in a Linux network namespace
description:
  - Turns a network namespace into an egress router with the C(egress) Python library
    (macvlan, addresses, routes, sysctls and one nftables table, applied as one netlink
    transaction with rollback).
  - With I(state=present) the router is converged with C(RouterSpec.ensure()) - created when
    missing, left alone when it matches, repaired when it drifted - so a second identical run
    reports C(changed=false).
  - With I(state=standby) a missing router is created as a standby (everything but the egress
    addresses, the default route via the gateway and the announcements), for an election
    engine (keepalived's notify commands C(egress-router promote/demote)) to promote; an
    existing router is converged in the role it has (Ansible never fights the election).
  - With I(state=absent) everything the router owns is removed and what it replaced is restored,
    as C(egress.teardown()) by name does - also what is left of a router whose crash record
    is gone (its marked macvlan). C(changed) is true exactly when something was removed; a
    namespace that is gone is C(ok), with nothing to remove.
  - Check mode reports the drift and the plan - the steps the namespace still needs, read
    from the kernel with C(RouterSpec.plan_live()), for I(state=standby) the plan of a standby
    - and changes nothing; for I(state=absent), the plan is what the teardown would undo
    (C(egress.plan_teardown())). Diff mode shows the router's kernel state before and after.
  - An invalid spec fails with every invalid field at once (I(msg) names them all,
    I(errors) lists them).
  - The options are the fields of the library's JSON form of a router spec.
requirements:
  - the C(egress) Python package on the managed host
  - root (CAP_NET_ADMIN and CAP_SYS_ADMIN) on the managed host
options:
  name:
    description: The router's name, C([a-z0-9-]), at most 32 characters.
    type: str
    required: true
  state:
    description: Whether the router should exist (I(standby) - created as a standby).
    type: str
    choices: [present, standby, absent]
    default: present
  netns:
    description:
      - The router's namespace, a path (C(/run/netns/pod), C(/proc/PID/ns/net)) or a name
        under C(/run/netns). Default is the namespace the module runs in.
    type: str
  internal:
    description: The internal (cluster) link; connections arriving on it are redirected.
    type: str
    default: eth0
  macvlan:
    description: Create a macvlan as the external link, directly inside I(netns).
    type: dict
    suboptions:
      parent:
        description: The parent link.
        type: str
        required: true
      parent_netns:
        description: The parent's namespace (path or name); default is the module's.
        type: str
      mode:
        description: The macvlan mode.
        type: str
        choices: [bridge, private, vepa, passthru]
        default: bridge
      mtu:
        description: The MTU (default the parent's).
        type: int
      mac:
        description: The MAC address (default random).
        type: str
      name:
        description: The link's name in I(netns).
        type: str
        default: macvlan0
  adopt:
    description: Adopt this existing link of I(netns) as the external link instead of I(macvlan).
    type: str
  sources:
    description: Egress addresses C(ADDR[/PREFIX]); the first of each family is the SNAT source.
    type: list
    elements: str
  gateways:
    description: The external gateway of each address family in use.
    type: list
    elements: str
  redirects:
    description: Connections to I(port)/I(protocol) on the router go to I(to):I(to_port).
    type: list
    elements: dict
    suboptions:
      port:
        description: Local port on the router.
        type: int
        required: true
      protocol:
        description: Transport protocol.
        type: str
        choices: [tcp, udp, sctp]
        default: tcp
      to:
        description: Destination address.
        type: str
        required: true
      to_port:
        description: Destination port (default I(port)).
        type: int
  fallback:
    description: Where everything that is not redirected goes, one address per family.
    type: list
    elements: str
  kept_routes:
    description: Networks kept reachable through the internal link.
    type: list
    elements: dict
    suboptions:
      to:
        description: The network.
        type: str
        required: true
      via:
        description: The next hop (default directly connected).
        type: str
  announce:
    description: Gratuitous ARPs / unsolicited NAs per address (0 to 16).
    type: int
    default: 1
author:
  - the egress authors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Egress router in the pod's namespace
  egress.router.egress_router:
    name: egress-1
    netns: /run/netns/pod
    macvlan:
      parent: eth1
      mode: private
    sources: [203.0.113.99/24]
    gateways: [203.0.113.1]
    redirects:
      - {port: 80, protocol: tcp, to: 198.51.100.25, to_port: 8080}
    fallback: [198.51.100.9]

- name: Remove it
  egress.router.egress_router:
    name: egress-1
    netns: /run/netns/pod
    state: absent
"""

RETURN = r"""
action:
  description: What was (or in check mode would be) done - created, unchanged, repaired, removed.
  returned: always
  type: str
drift:
  description: How the kernel differed from the spec before the run.
  returned: when state is present
  type: list
  elements: str
plan:
  description:
    - The steps the run takes (in check mode would take), as the library prints them - only
      what is missing or wrong; the whole plan when the router is missing; empty when
      unchanged.
    - For I(state=absent), what the teardown undoes (in check mode would undo).
  returned: always
  type: list
  elements: str
removed:
  description: What teardown undid (empty when nothing was there).
  returned: when state is absent (not in check mode)
  type: list
  elements: str
router:
  description: The router's kernel state after the run (C(egress.inspect)), or null.
  returned: always
  type: dict
error:
  description: The class of the library's exception (InvalidSpecError, NotFoundError, ...).
  returned: failed
  type: str
field:
  description: The first invalid field, as a JSON path (C(redirects[0].port)).
  returned: failed with InvalidSpecError
  type: str
errors:
  description: Every invalid field, each with I(field), I(value) and I(expected).
  returned: failed with InvalidSpecError
  type: list
  elements: dict
"""

import traceback
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # type: ignore[import-untyped]

try:
    import egress

    EGRESS_IMPORT_ERROR: Optional[str] = None
except ImportError:
    EGRESS_IMPORT_ERROR = traceback.format_exc()


def build_spec(p: dict[str, Any]) -> "egress.RouterSpec":
    """The module's options as an egress.RouterSpec (the library validates it)."""
    spec = egress.RouterSpec(
        p["name"],
        netns=p["netns"],
        internal=p["internal"],
        sources=p["sources"],
        gateways=p["gateways"],
        fallback=p["fallback"],
        announce=p["announce"],
    )
    m = p["macvlan"]
    if m is not None:
        spec = spec.macvlan(
            m["parent"],
            m["mode"],
            parent_netns=m["parent_netns"],
            mtu=m["mtu"],
            mac=m["mac"],
            name=m["name"],
        )
    elif p["adopt"] is not None:
        spec = spec.adopt(p["adopt"])
    for r in p["redirects"] or []:
        spec = spec.redirect(r["port"], r["to"], to_port=r["to_port"], protocol=r["protocol"])
    for k in p["kept_routes"] or []:
        spec = spec.keep_route(k["to"], k["via"])
    return spec


def view(router: Optional[dict[str, Any]], leftovers: Optional[list[str]] = None) -> dict[str, Any]:
    """The router's kernel state as diff mode shows it; what a teardown would still remove of a
    router whose crash record is gone (`leftovers`)."""
    if router is not None:
        return {"state": "present", **router}
    if leftovers:
        return {"state": "leftovers", "teardown": leftovers}
    return {"state": "absent"}


def present(module: AnsibleModule, standby: bool) -> dict[str, Any]:
    p = module.params
    spec = build_spec(p).validate()  # every invalid field at once, before the kernel is read
    before = egress.inspect(p["name"], netns=p["netns"])
    drift = spec.check()
    plan = [str(step) for step in spec.plan_live(standby=standby)]
    if not drift:
        return dict(changed=False, action="unchanged", drift=[], plan=plan, router=before,
                    diff=dict(before=view(before), after=view(before)))
    if module.check_mode:
        action = "created" if before is None else "repaired"
        planned = {"state": "present", "drift": [str(d) for d in drift], "plan": plan}
        return dict(changed=True, action=action, drift=[str(d) for d in drift], plan=plan,
                    router=before, diff=dict(before=view(before), after=planned))
    outcome = spec.ensure(standby=standby)
    after = egress.inspect(p["name"], netns=p["netns"])
    return dict(changed=outcome.changed, action=outcome.action,
                drift=[str(d) for d in outcome.drift], plan=plan, router=after,
                diff=dict(before=view(before), after=view(after)))


def absent(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    try:
        before = egress.inspect(p["name"], netns=p["netns"])
        plan = egress.plan_teardown(p["name"], netns=p["netns"])
    except egress.NotFoundError as e:
        if e.field != "netns":
            raise
        # The router's namespace is gone, and with it everything the router had.
        return dict(changed=False, action="unchanged", plan=[], removed=[], router=None,
                    diff=dict(before=view(None), after=view(None)))
    diff = dict(before=view(before, plan), after=view(None))
    if module.check_mode:
        return dict(changed=bool(plan), action="removed" if plan else "unchanged", plan=plan,
                    router=before, diff=diff)
    removed = egress.teardown(p["name"], netns=p["netns"])
    return dict(changed=bool(removed), action="removed" if removed else "unchanged", plan=plan,
                removed=removed, router=None, diff=diff)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "standby", "absent"], default="present"),
            netns=dict(type="str"),
            internal=dict(type="str", default="eth0"),
            macvlan=dict(
                type="dict",
                options=dict(
                    parent=dict(type="str", required=True),
                    parent_netns=dict(type="str"),
                    mode=dict(type="str", choices=["bridge", "private", "vepa", "passthru"],
                              default="bridge"),
                    mtu=dict(type="int"),
                    mac=dict(type="str"),
                    name=dict(type="str", default="macvlan0"),
                ),
            ),
            adopt=dict(type="str"),
            sources=dict(type="list", elements="str"),
            gateways=dict(type="list", elements="str"),
            redirects=dict(
                type="list",
                elements="dict",
                options=dict(
                    port=dict(type="int", required=True),
                    protocol=dict(type="str", choices=["tcp", "udp", "sctp"], default="tcp"),
                    to=dict(type="str", required=True),
                    to_port=dict(type="int"),
                ),
            ),
            fallback=dict(type="list", elements="str"),
            kept_routes=dict(
                type="list",
                elements="dict",
                options=dict(to=dict(type="str", required=True), via=dict(type="str")),
            ),
            announce=dict(type="int", default=1),
        ),
        mutually_exclusive=[("macvlan", "adopt")],
        supports_check_mode=True,
    )
    if EGRESS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("egress"), exception=EGRESS_IMPORT_ERROR)
    try:
        if module.params["state"] in ("present", "standby"):
            result = present(module, standby=module.params["state"] == "standby")
        else:
            result = absent(module)
    except egress.InvalidSpecError as e:
        module.fail_json(msg=str(e), error=type(e).__name__, field=e.field, errors=e.errors)
    except egress.EgressError as e:
        module.fail_json(msg=str(e), error=type(e).__name__)
    except TypeError as e:
        module.fail_json(msg=str(e), error="TypeError")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
