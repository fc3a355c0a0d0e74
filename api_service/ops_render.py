"""The operator console's rows (shared/console.py) → the JSON of GET /ops/... (shapes in ops_schemas.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from api_service import render
from shared import console, funds

_MONEY = ("amount", "total_amount", "paid_amount")
_RENAMED = {"available_at": "next_attempt_at"}


def _value(name: str, value: Any) -> Any:
    if isinstance(value, Decimal) and name in _MONEY:
        return render.money(value)
    if isinstance(value, datetime):
        return value.isoformat() if value.year not in (1, 9999) else None  # ±infinity: never set
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def row(r: console.Row) -> dict[str, Any]:
    return {_RENAMED.get(k, k): _value(k, v) for k, v in r.items()}


def _payroll(r: console.Row, wait: funds.FundsWait | None) -> dict[str, Any]:
    out = row(r)
    out.setdefault("outbox", {})
    out["status_detail"] = render.status_detail(wait)
    return out


def payroll_page(page: console.Page, waits: dict[uuid.UUID, funds.FundsWait | None]) -> dict[str, Any]:
    """`waits`: the funds wait of each PROCESSING payroll of the page (funds.payroll_wait)."""
    cursor = render.encode_cursor(*page.next_after) if page.next_after else None
    return {"items": [_payroll(r, waits.get(r["id"])) for r in page.rows], "next_cursor": cursor}


def id_page(page: console.Page) -> dict[str, Any]:
    cursor = render.encode_id_cursor(page.next_after) if page.next_after is not None else None
    return {"items": [row(r) for r in page.rows], "next_cursor": cursor}


def _rate(r: console.Row | None, max_rps: float) -> dict[str, Any]:
    if r is None:  # no limiter row: nothing was ever sent through this database
        return {"max_rps": max_rps, "recent_rps": 0.0, "unanswered": 0, "paused": False,
                "paused_until": None, "pauses": 0, "next_slot": None}  # fmt: skip
    paused_until = _value("paused_until", r["paused_until"])
    return {
        "max_rps": max_rps,
        "recent_rps": round(r["recent_sends"] / console.RECENT_SENDS_S, 2),
        "unanswered": r["unanswered"],
        "paused": paused_until is not None and r["paused_until"] > r["now"],
        "paused_until": paused_until,
        "pauses": r["pause_epoch"],
        "next_slot": _value("next_slot", r["next_slot"]),
    }


def overview(
    head: console.Row,
    rate: console.Row | None,
    minutes: list[console.Row],
    employers: list[console.Row],
    max_rps: float,
) -> dict[str, Any]:
    outbox = {k: head[k] for k in ("pending", "due", "in_progress", "dead", "stuck", "total_estimate")}
    return {
        "payrolls": head["payrolls"],
        "outbox": outbox,
        "review_items": head["review"],
        "rate": _rate(rate, max_rps),
        "last_hour": [row(m) for m in minutes],
        "employers": [row(e) for e in employers],
    }


def actions(rows: list[console.Row]) -> dict[str, Any]:
    return {"items": [row(r) for r in rows]}
