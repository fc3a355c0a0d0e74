"""What `payrun dev` shows of its processes' output: state changes, not every request.

The processes log JSON lines (LOG_FORMAT=json); each line is read here, dropped when it is routine (one per
HTTP request or status poll, unless it failed) and otherwise rendered for people with structlog's console
renderer, or passed on as JSON when LOG_FORMAT=json was asked for. `payrun dev --verbose` (or
PAYRUN_DEV_VERBOSE=1) shows every line. Lines that are not JSON (start-up messages) pass unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

# One line per HTTP request (API and simulator) or per status poll: routine, unless they show a failure.
ROUTINE = frozenset({"request_finished", "sim_request", "batch_poll_later"})
QUIET_LEVELS = frozenset({None, "debug", "info"})


def parse(line: str) -> dict[str, Any] | None:
    """The log event a line carries, or None for a line that is not one."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def routine(event: dict[str, Any]) -> bool:
    status = event.get("status")
    failed = isinstance(status, int) and status >= 500 or status == "cancelled"
    return event["event"] in ROUTINE and event.get("level") in QUIET_LEVELS and not failed


class LineView:
    def __init__(self, *, verbose: bool, as_json: bool, colors: bool) -> None:
        self.verbose = verbose
        self.as_json = as_json
        self._console = structlog.dev.ConsoleRenderer(colors=colors)

    def show(self, line: str, event: dict[str, Any] | None) -> str | None:
        """The text to print for a process's line (None: not shown)."""
        if event is None:
            return line
        if not self.verbose and routine(event):
            return None
        if self.as_json:
            return line
        fields = dict(event)
        moment = str(fields.pop("timestamp", None) or fields.pop("ts", ""))
        fields["timestamp"] = moment[11:19]  # HH:MM:SS of an ISO timestamp: the date is today's
        return str(self._console(None, "", fields))
