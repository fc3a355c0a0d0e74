"""Repository rows → the JSON the API answers (shapes described by the *Out models in schemas.py).

Amounts are decimal strings with two places ("15000.00"), times ISO 8601 with their UTC offset, ids strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared import cancellation, errors, funds, payrolls, rechecks, resolutions

# The largest value payroll_items.position (an integer column) holds, and the largest bigint id.
MAX_POSITION = 2**31 - 1
MAX_ID = 2**63 - 1


def money(amount: Decimal) -> str:
    return f"{amount:.2f}"


def payroll_path(payroll_id: uuid.UUID) -> str:
    return f"/payrolls/{payroll_id}"


def status_path(payroll_id: uuid.UUID) -> str:
    return f"/payrolls/{payroll_id}/status"


def payroll(p: payrolls.Payroll) -> dict[str, Any]:
    return {
        "id": str(p.id),
        "reference": p.reference,
        "currency": p.currency,
        "status": str(p.status),
        "item_count": p.item_count,
        "total_amount": money(p.total_amount),
        "paid_amount": money(p.paid_amount),
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
        "retry_of": str(p.retry_of) if p.retry_of else None,
    }


def item(i: payrolls.Item) -> dict[str, Any]:
    return {
        "id": str(i.id),
        "name": i.name,
        "account": i.account,
        "amount": money(i.amount),
        "provider": str(i.provider),
        "status": str(i.status),
        "failure_reason": i.failure_reason,
        "provider_reference": i.provider_reference,
    }


def payroll_detail(
    p: payrolls.Payroll, items: list[payrolls.Item], wait: funds.FundsWait | None = None
) -> dict[str, Any]:
    return {**payroll(p), "items": [item(i) for i in items], "status_detail": status_detail(wait)}


def status_detail(wait: funds.FundsWait | None) -> dict[str, Any] | None:
    if wait is None:
        return None
    return {
        "code": "insufficient_funds",
        "message": (
            f"waiting for funds: wallet {wait.wallet_id or '(default)'} has {money(wait.available)} KES "
            f"available, the {wait.batches} batch(es) waiting need {money(wait.required)} KES (charges "
            f"included): add {money(wait.short_by)} KES; payrun checks again and pays by itself once funded, "
            "or cancel the payroll"
        ),
        "wallet_id": wait.wallet_id,
        "short_by": money(wait.short_by),
        "required": money(wait.required),
        "available_balance": money(wait.available),
        "waiting_batches": wait.batches,
        "checked_at": wait.checked_at.isoformat(),
        "next_check_at": wait.next_check_at.isoformat(),
    }


def cancelled(c: cancellation.Cancelled) -> dict[str, Any]:
    return {
        "id": str(c.payroll_id),
        "status": str(c.status),
        "cancelled_now": c.cancelled_now,
        "cancelled": c.cancelled,
        "not_cancellable": c.in_flight,
        "cancel_requested_at": c.cancel_requested_at.isoformat() if c.cancel_requested_at else None,
        "status_url": status_path(c.payroll_id),
    }


def tracked_item(i: payrolls.TrackedItem) -> dict[str, Any]:
    return {
        **item(i),
        "position": i.position,
        "request_reference_id": i.request_reference_id,
        "tracking_id": i.tracking_id,
        "updated_at": i.updated_at.isoformat(),
    }


def item_page(found: payrolls.ItemPage) -> dict[str, Any]:
    cursor = encode_item_cursor(found.next_after) if found.next_after is not None else None
    return {"items": [tracked_item(i) for i in found.items], "next_cursor": cursor}


def body_etag(body: bytes | memoryview) -> str:
    """A strong validator of a rendered body: the same bytes, the same ETag."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def page(found: payrolls.Page) -> dict[str, Any]:
    cursor = encode_cursor(*found.next_after) if found.next_after else None
    return {"items": [payroll(p) for p in found.payrolls], "next_cursor": cursor}


def status(s: payrolls.StatusSummary, wait: funds.FundsWait | None = None) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "status": str(s.status),
        "item_count": s.item_count,
        "counts": {str(k): v for k, v in s.counts.items()},
        "total_amount": money(s.total_amount),
        "paid_amount": money(s.paid_amount),
        "updated_at": s.updated_at.isoformat(),
        "status_detail": status_detail(wait),
    }


def status_etag(s: payrolls.StatusSummary, wait: funds.FundsWait | None = None) -> str:
    """A strong validator: changes whenever anything the status body shows changes."""
    seed = f"{s.status}|{s.updated_at.isoformat()}|{sorted(s.counts.items())}|{s.paid_amount}"
    if wait is not None:
        seed += f"|{wait.checked_at.isoformat()}|{wait.required}|{wait.available}|{wait.batches}"
    return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of `If-None-Match` (a list, or `*`) with our ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))


def processing_accepted(payroll_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(payroll_id), "status": "PROCESSING", "status_url": status_path(payroll_id)}


def resolved(outcome: resolutions.Outcome) -> dict[str, Any]:
    return {
        "resolutions": [
            {
                "id": r.id,
                "item_id": r.item_id,
                "payroll_id": str(r.payroll_id),
                "operator_id": str(r.operator_id),
                "operator_name": r.operator_name,
                "from_status": r.from_status,
                "to_status": r.to_status,
                "provider_reference": r.provider_reference,
                "reason": r.reason,
                "note": r.note,
                "created_at": r.created_at.isoformat(),
                "replayed": r.replayed,
            }
            for r in outcome.resolutions
        ],
        "payrolls": [
            {"id": str(payroll_id), "status": str(status)} for payroll_id, status in outcome.payrolls
        ],
    }


def rechecks_due(scheduled: list[rechecks.Scheduled]) -> dict[str, Any]:
    return {
        "batches": [
            {
                "tracking_id": b.tracking_id,
                "item_ids": b.item_ids,
                "due_at": b.due_at.isoformat(),
                "checks": b.checks,
                "last_checked_at": b.last_checked_at.isoformat() if b.last_checked_at else None,
                "last_result": b.last_result,
            }
            for b in scheduled
        ]
    }


# A cursor is opaque to clients: a JSON array, base64url-encoded without padding. GET /payrolls's holds the
# (created_at, id) of the last payroll of a page, GET /payrolls/{id}/items's the position of the last item.
# Each route accepts only its own kind; anything else is a 422 naming `cursor`.


def _encode(values: list[Any]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> Any:
    """The JSON a cursor holds; ValueError (or binascii.Error, RecursionError) if it holds none."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return json.loads(raw)


def _bad_cursor() -> errors.InvalidRequest:
    return errors.InvalidRequest(
        "the cursor is not one this API gave out",
        [{"field": "cursor", "message": "is not a valid cursor"}],
    )


def encode_cursor(created_at: datetime, payroll_id: uuid.UUID) -> str:
    return _encode([created_at.isoformat(), str(payroll_id)])


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor stands for, or a 422 naming `cursor`."""
    try:
        decoded = _decode(cursor)
        if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):
            raise ValueError("not a cursor")
        at = datetime.fromisoformat(decoded[0])
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return at, uuid.UUID(decoded[1])
    except (ValueError, binascii.Error, RecursionError):
        raise _bad_cursor() from None


def encode_item_cursor(position: int) -> str:
    return _encode([position])


def _decode_int(cursor: str, largest: int) -> int:
    try:
        decoded = _decode(cursor)
    except (ValueError, binascii.Error, RecursionError):
        raise _bad_cursor() from None
    if not (isinstance(decoded, list) and len(decoded) == 1 and type(decoded[0]) is int):
        raise _bad_cursor()
    value: int = decoded[0]
    if not 0 <= value <= largest:
        raise _bad_cursor()
    return value


def decode_item_cursor(cursor: str) -> int:
    """The item position a cursor of GET /payrolls/{id}/items stands for, or a 422 naming `cursor`."""
    return _decode_int(cursor, MAX_POSITION)


# The /ops/ lists of items and outbox rows page by id: their cursor holds the last row's id.
encode_id_cursor = encode_item_cursor


def decode_id_cursor(cursor: str) -> int:
    """The row id a cursor of GET /ops/items or GET /ops/outbox stands for, or a 422 naming `cursor`."""
    return _decode_int(cursor, MAX_ID)
