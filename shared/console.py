"""The operator console's read-only view of every employer (sql/queries/ops.sql), and what an operator does
for an employer here: retry a finished payroll's FAILED items, and cancel a processing payroll, as that
employer.

Reads only, except `retry_for_employer`, which makes a DRAFT (processing it is the employer's decision)
through `payrolls.retry_failed`, and `cancel_for_employer`, which is `cancellation.cancel` with the
operator recorded; both scoped to the payroll's own employer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared import cancellation, db, errors, payrolls, sqlfiles

Q = sqlfiles.queries("ops")
RATE_NAME = "intasend"  # the shared limiter's row (dispatcher_service/limiter.py)
RECENT_SENDS_S = 5.0  # the send log keeps a few seconds only: the rate in use is read over this span
STUCK_AFTER_S = 300.0  # a pending row due this long ago and not claimed is stuck (no dispatcher took it)
MAX_EMPLOYERS = 500
OUTBOX_STATES = ("pending", "in_progress", "dead")

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Filters:
    employer_id: uuid.UUID | None = None
    status: str | None = None
    search: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next_after: Any  # the last row's key when another page follows, else None


def _like(text: str) -> str:
    """`%text%` for LIKE/ILIKE, the text's own wildcards and backslashes matched literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def account_pattern(search: str) -> str:
    """A phone number in any of its forms (07…, 2547…, +254 7…) matches the account's last nine digits;
    anything else matches as text."""
    digits = "".join(ch for ch in search if ch.isascii() and ch.isdigit())
    if len(digits) >= 9 and all(ch.isdigit() or ch in "+ -" for ch in search.strip()):
        return _like(digits[-9:])
    return _like(search)


def _page(records: list[asyncpg.Record], limit: int, key: Any) -> Page:
    rows = [dict(r) for r in records[:limit]]
    return Page(rows, key(rows[-1]) if len(records) > limit else None)


async def overview(conn: db.Executor) -> Row:
    row = await conn.fetchrow(Q.overview, STUCK_AFTER_S)
    assert row is not None
    return dict(row)


async def employers(conn: db.Executor) -> list[Row]:
    return [dict(r) for r in await conn.fetch(Q.employers, MAX_EMPLOYERS)]


async def rate(conn: db.Executor) -> Row | None:
    row = await conn.fetchrow(Q.rate, RATE_NAME, RECENT_SENDS_S)
    return dict(row) if row else None


async def per_minute(conn: db.Executor) -> list[Row]:
    return [dict(r) for r in await conn.fetch(Q.per_minute)]


async def payroll_page(
    conn: db.Executor, filters: Filters, *, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> Page:
    at, last_id = after or (None, None)
    pattern = _like(filters.search) if filters.search else None
    records = await conn.fetch(
        Q.payrolls, filters.employer_id, filters.status, pattern, at, last_id, limit + 1
    )
    return _page(records, limit, lambda r: (r["created_at"], r["id"]))


async def item_page(conn: db.Executor, filters: Filters, *, limit: int, after: int | None) -> Page:
    search = filters.search
    records = await conn.fetch(
        Q.items,
        filters.status,
        filters.employer_id,
        after,
        _like(search) if search else None,
        account_pattern(search) if search else None,
        search,
        limit + 1,
    )
    return _page(records, limit, lambda r: r["id"])


async def outbox_page(
    conn: db.Executor,
    states: tuple[str, ...],
    *,
    stuck_only: bool,
    employer_id: uuid.UUID | None,
    limit: int,
    after: int | None,
) -> Page:
    records = await conn.fetch(
        Q.outbox_rows, list(states), stuck_only, STUCK_AFTER_S, employer_id, after, limit + 1
    )
    return _page(records, limit, lambda r: r["id"])


async def actions(conn: db.Executor, limit: int) -> list[Row]:
    return [dict(r) for r in await conn.fetch(Q.actions, limit)]


async def retry_for_employer(
    conn: db.Connection, payroll_id: uuid.UUID, reference: str | None
) -> tuple[payrolls.Payroll, list[payrolls.Item]]:
    """`payrolls.retry_failed` as the payroll's own employer: the new DRAFT is that employer's, like the
    old one; nothing is processed (the employer runs it)."""
    employer_id = await conn.fetchval(Q.employer_of_payroll, payroll_id)
    if employer_id is None:
        raise errors.PayrollNotFound()
    return await payrolls.retry_failed(conn, employer_id, payroll_id, reference)


async def cancel_for_employer(
    conn: db.Connection, payroll_id: uuid.UUID, operator_id: uuid.UUID, note: str | None
) -> cancellation.Cancelled:
    """`cancellation.cancel` as the payroll's own employer, the operator recorded as the one who asked."""
    employer_id = await conn.fetchval(Q.employer_of_payroll, payroll_id)
    if employer_id is None:
        raise errors.PayrollNotFound()
    return await cancellation.cancel(conn, employer_id, payroll_id, operator_id=operator_id, note=note)
