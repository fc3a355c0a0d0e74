"""The outbox: written by the API with the payroll's change, claimed and finished by dispatchers.

Design rules (never twice, never lost):
- A row is written in the transaction that sets its payroll to PROCESSING, so a payroll is PROCESSING if and
  only if its rows exist.
- A claim hands a row to one dispatcher for a lease and a fresh `lease_token`. Every later write checks the
  token (the fence): a dispatcher whose lease ran out and was taken over can no longer record anything.
- Rows are never deleted by normal operation; `done` and `dead` rows are the audit trail.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import db, sqlfiles

NOTIFY_CHANNEL = "payrun_outbox"  # also named in sql/queries/outbox.sql (start_payroll)
Executor = db.Executor


class RowStatus(enum.StrEnum):
    """outbox.status, as stored."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    DEAD = "dead"


class Kind(enum.StrEnum):
    """outbox.kind, as stored."""

    SEND_BATCH = "send_batch"
    DELIVER_EVENT = "deliver_event"  # an employer callback (shared/events.py, migration 0016)


Q = sqlfiles.queries("outbox")


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    payroll_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    errors: int
    lease_token: uuid.UUID
    employer_id: uuid.UUID | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Claimed:
        return cls(
            r["id"],
            r["payroll_id"],
            r["kind"],
            r["payload"],
            r["attempts"],
            r["errors"],
            r["lease_token"],
            r["employer_id"],
        )


@dataclass(frozen=True, slots=True)
class Carried:
    """A row carried by another row's provider batch: it has no lease of its own (its lead holds it)."""

    id: int
    payroll_id: uuid.UUID
    item_ids: tuple[int, ...]

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Carried:
        return cls(r["id"], r["payroll_id"], tuple(int(i) for i in r["payload"]["item_ids"]))


async def carried_rows(conn: Executor, lead_id: int) -> list[Carried]:
    return [Carried.from_record(r) for r in await conn.fetch(Q.carried_rows, lead_id)]


async def start_payroll(
    conn: Executor, payroll_id: uuid.UUID, employer_id: uuid.UUID, batch_size: int
) -> bool:
    """DRAFT → PROCESSING with the payroll's send_batch rows, atomically (one statement); wakes the
    dispatchers at commit. False when the payroll was not DRAFT (nothing written)."""
    row = await conn.fetchrow(Q.start_payroll, payroll_id, employer_id, batch_size)
    assert row is not None  # one row of counts, always
    return bool(row["started"])


async def claim(
    conn: db.Executor,
    *,
    worker: str,
    lease_s: float,
    limit: int,
    running: Sequence[int] = (),
    events: int = 0,
) -> list[Claimed]:
    """Claim up to `limit` due payout rows and up to `events` due event rows (kind DELIVER_EVENT), never one
    of `running` (rows whose flow this process still runs)."""
    rows = await conn.fetch(Q.claim_batch, worker, lease_s, limit, list(running), events)
    return [Claimed.from_record(r) for r in rows]


async def next_due_s(conn: Executor, *, payouts: bool = True, events: bool = True) -> float | None:
    """Seconds until the next row of these kinds is due; None when no such row is live."""
    due = await conn.fetchval(Q.next_due_of_kinds, payouts, events)
    return None if due is None else float(due)


async def extend_leases(
    conn: db.Executor, *, worker: str, lease_s: float, held: dict[int, uuid.UUID]
) -> set[int]:
    """Extend the leases still held; returns the ids whose lease is still ours."""
    if not held:
        return set()
    ids = list(held)
    rows = await conn.fetch(Q.extend_leases, worker, lease_s, ids, [held[i] for i in ids])
    return {r["id"] for r in rows}


async def hold_lease(conn: db.Connection, row_id: int, token: uuid.UUID) -> bool:
    """Inside a transaction: lock the row if we still hold its lease (the fence)."""
    return await conn.fetchval(Q.hold_lease, row_id, token) is not None


async def release(
    conn: db.Executor,
    row_id: int,
    token: uuid.UUID,
    *,
    delay_s: float,
    error: str | None = None,
    count_error: bool = False,
) -> bool:
    return await conn.fetchval(Q.release, row_id, token, delay_s, error, count_error) is not None


async def finish(
    conn: db.Connection,
    row_id: int,
    token: uuid.UUID,
    *,
    status: RowStatus = RowStatus.DONE,
    error: str | None = None,
) -> bool:
    return await conn.fetchval(Q.finish, row_id, token, status, error) is not None
