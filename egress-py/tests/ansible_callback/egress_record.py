"""Test-only Ansible callback: appends every task result to the JSON-lines file named by
EGRESS_ANSIBLE_RECORD, so the pytest suite reads results instead of scraping the screen."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-untyped]

DOCUMENTATION = """
name: egress_record
type: notification
short_description: record task results as JSON lines (egress test suite)
description: Appends each task result to the file named by EGRESS_ANSIBLE_RECORD.
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "egress_record"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, result: Any, status: str) -> None:
        # ansible-core >= 2.19 passes result.result / result.task; older ones _result / _task.
        data = getattr(result, "result", None)
        if data is None:
            data = result._result
        task = getattr(result, "task", None) or result._task
        line = {"task": task.get_name(), "action": task.action, "status": status, "result": data}
        with open(os.environ["EGRESS_ANSIBLE_RECORD"], "a") as f:
            f.write(json.dumps(line, default=str) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "failed")
