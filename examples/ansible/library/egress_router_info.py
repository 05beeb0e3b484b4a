#!/usr/bin/python
# Copyright: the egress authors. MIT OR Apache-2.0.
"""Ansible module egress_router_info: an egress router's state and diagnosis, via the egress library."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: egress_router_info
short_description: Read an egress router's state and diagnose it
description:
  - Reads an egress router in a Linux network namespace back from the kernel with the
    C(egress) Python library (C(egress.inspect)) and diagnoses it (C(egress.diagnose)) - why
    does it not work, and what to change.
  - Never changes anything. The diagnosis sends probe frames (ARP and neighbour discovery)
    from the router's external link and opens and closes probe TCP connections from its
    egress address, each bounded by I(timeout_ms); a healthy router's diagnosis takes about
    one timeout.
  - Each check (state, link, sysctl, gateway, l2_filter, duplicate_address, destination,
    traffic) has a status (ok, warn, fail, skipped), a one-line summary, the evidence it saw
    and, for warn and fail, a hint that says what to change.
  - A failing check does not fail the task - test I(failed_checks) or I(worst_status), for
    example with C(failed_when). Invalid input and errors of the library (no such namespace, no privilege)
    fail the task with the error's class and message.
  - A router that is not configured is no error either - I(router) is null and the state
    check fails and says so.
requirements:
  - the C(egress) Python package on the managed host
  - root (CAP_NET_ADMIN and CAP_SYS_ADMIN) on the managed host
options:
  name:
    description: The router's name, C([a-z0-9-]), at most 32 characters.
    type: str
    required: true
  netns:
    description:
      - The router's namespace, a path (C(/run/netns/pod), C(/proc/PID/ns/net)) or a name
        under C(/run/netns). Default is the namespace the module runs in.
    type: str
  timeout_ms:
    description: How long each probe waits for its answer, in milliseconds (1 to 10000).
    type: int
    default: 300
attributes:
  check_mode:
    support: full
    description: The module changes nothing; in check mode it runs as it does otherwise.
author:
  - the egress authors (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Diagnose egress-1
  egress.router.egress_router_info:
    name: egress-1
    netns: /run/netns/pod
  register: egress_info

- name: Every failed check, with what to change
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.summary }} -- {{ item.hint }}"
  loop: "{{ egress_info.diagnosis.checks | selectattr('status', 'equalto', 'fail') }}"

- name: Fail when a check fails
  egress.router.egress_router_info:
    name: egress-1
    netns: /run/netns/pod
    timeout_ms: 500
  register: egress_info
  failed_when: egress_info.failed_checks | length > 0
"""

RETURN = r"""
router:
  description: The router's kernel state (C(egress.inspect)), or null when it is not configured.
  returned: success
  type: dict
diagnosis:
  description:
    - The diagnosis in its documented JSON form (docs/diagnose.md) - the router's name and
      every check in a fixed order.
  returned: success
  type: dict
  contains:
    router:
      description: The router's name.
      type: str
    checks:
      description: Each check with I(name), I(status), I(summary), I(hint) and I(evidence).
      type: list
      elements: dict
worst_status:
  description: The worst status of all checks - fail, warn, skipped or ok.
  returned: success
  type: str
  sample: ok
failed_checks:
  description: The names of the checks that failed, in order (empty when none did).
  returned: success
  type: list
  elements: str
  sample: [gateway, destination]
error:
  description: The class of the library's exception (InvalidSpecError, NotFoundError, ...).
  returned: failed
  type: str
field:
  description: The invalid field (C(name), C(netns.name), C(timeout_ms)).
  returned: failed with InvalidSpecError
  type: str
"""

import traceback
from typing import Any, Optional

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # type: ignore[import-untyped]

try:
    import egress

    EGRESS_IMPORT_ERROR: Optional[str] = None
except ImportError:
    EGRESS_IMPORT_ERROR = traceback.format_exc()


def info(p: dict[str, Any]) -> dict[str, Any]:
    """The router's state and its diagnosis; both only read and probe."""
    diagnosis = egress.diagnose(p["name"], netns=p["netns"], timeout_ms=p["timeout_ms"])
    router = egress.inspect(p["name"], netns=p["netns"])
    return dict(
        changed=False,
        router=router,
        diagnosis=diagnosis.to_dict(),
        worst_status=diagnosis.status,
        failed_checks=[c.name for c in diagnosis.checks if c.failed],
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            netns=dict(type="str"),
            timeout_ms=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    if EGRESS_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("egress"), exception=EGRESS_IMPORT_ERROR)
    try:
        result = info(module.params)
    except egress.InvalidSpecError as e:
        module.fail_json(msg=str(e), error=type(e).__name__, field=e.field)
    except egress.EgressError as e:
        module.fail_json(msg=str(e), error=type(e).__name__)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
