"""The re-check schedule of provider batches with NEEDS_REVIEW items, and what a late answer writes.

A batch gets a schedule (`batch_rechecks`, migration 0015) once its outbox row is over and it has items in
NEEDS_REVIEW (or resolved by an operator without IntaSend's final answer yet). A dispatcher takes a due
schedule with a lease and a fresh token, asks IntaSend's status, and writes what it learned only while the
token is still the schedule's (`hold`, the fence): a process paused past its lease writes nothing.

What a final answer does to an item, in one transaction with its payroll's status (THE rule,
`batches.close_payroll`) and an append-only row in `item_rechecks`:
- NEEDS_REVIEW: the item follows IntaSend (PAID with its reference, or FAILED with its reason);
- resolved by an operator the same way: recorded (`agrees`), nothing changes;
- resolved the other way: the item follows IntaSend, recorded (`agrees` false) and logged as a warning.

Locks: the schedule, then the items' payrolls (by id), then the items (by id), as resolutions.py and the
dispatcher lock them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared import batches, errors, sqlfiles
from shared.batches import Item, ItemOutcome, LeaseLost
from shared.payrolls import ItemStatus, PayrollStatus

Q = sqlfiles.queries("rechecks")
WHO = "provider re-check"
# A payroll in one of these is closed again by THE rule when a late answer changes one of its items; a
# PROCESSING payroll is closed by its last outbox row, as always.
REOPENABLE = (
    PayrollStatus.NEEDS_REVIEW,
    PayrollStatus.COMPLETED,
    PayrollStatus.PARTIALLY_FAILED,
    PayrollStatus.FAILED,
    PayrollStatus.CANCELLED,
)


class End:
    """How a check leaves the schedule (`checked`'s $5)."""

    GO_ON: str | None = None
    FINISHED = "finished"
    GAVE_UP = "gave_up"


@dataclass(frozen=True, slots=True)
class Claimed:
    batch_id: int
    tracking_id: str
    lease_token: uuid.UUID
    checks: int  # done before this one
    age_s: float  # since the schedule began


@dataclass(frozen=True, slots=True)
class Late:
    """IntaSend's final answer for one item, and the evidence (its transaction, or the batch's status)."""

    outcome: ItemOutcome
    status_code: str | None
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Written:
    """One item a check recorded: `agrees` is None when no operator had resolved it."""

    item_id: int
    payroll_id: uuid.UUID
    from_status: str
    to_status: str
    agrees: bool | None
    changed: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    items: list[Written]
    payrolls: dict[uuid.UUID, str]  # payroll id → its status after the check


async def discover(pool: asyncpg.Pool, first_s: float) -> int:
    """Schedules for batches that need one; returns how many were added."""
    return len(await pool.fetch(Q.discover, first_s))


async def claim(pool: asyncpg.Pool, *, worker: str, lease_s: float, limit: int) -> list[Claimed]:
    rows = await pool.fetch(Q.claim, worker, lease_s, limit)
    return [Claimed(r["batch_id"], r["tracking_id"], r["lease_token"], r["checks"], r["age_s"]) for r in rows]


async def next_due_s(pool: asyncpg.Pool) -> float | None:
    due: float | None = await pool.fetchval(Q.next_due)
    return due


async def items_to_recheck(pool: asyncpg.Pool, batch_id: int) -> list[Item]:
    rows = await pool.fetch(Q.items_to_recheck, batch_id)
    return [Item(**{**dict(r), "status": ItemStatus(r["status"])}) for r in rows]


async def checked(
    pool: asyncpg.Pool, claimed: Claimed, result: str, *, next_s: float, end: str | None
) -> None:
    """A check that wrote no item: count it, note what it learned, schedule the next or end (fenced)."""
    done = await pool.fetchval(Q.checked, claimed.batch_id, claimed.lease_token, result[:500], next_s, end)
    if done is None:
        raise LeaseLost(f"the re-check of batch {claimed.tracking_id} is no longer ours")


async def record(
    pool: asyncpg.Pool,
    claimed: Claimed,
    worker: str,
    answers: Sequence[Late],
    *,
    result: str,
    next_s: float,
    end: str | None,
) -> Recorded:
    """Write IntaSend's final answers, the payrolls' statuses and the schedule, in one fenced transaction.
    Each item is judged as it is under its lock: an operator may have resolved it since it was read."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(Q.hold, claimed.batch_id, claimed.lease_token) is None:
            raise LeaseLost(f"the re-check of batch {claimed.tracking_id} is no longer ours")
        ids = [a.outcome.item_id for a in answers]
        statuses = {r["id"]: PayrollStatus(r["status"]) for r in await conn.fetch(Q.lock_payrolls, ids)}
        rows = {r["id"]: r for r in await conn.fetch(Q.lock_items, ids)}
        written = [w for a in answers if (w := _decide(a, rows.get(a.outcome.item_id))) is not None]
        kept = {w.item_id for w in written}
        kept_answers = [a for a in answers if a.outcome.item_id in kept]
        changed = [a.outcome for a, w in zip(kept_answers, written, strict=True) if w.changed]
        if changed:
            await conn.fetch(
                Q.follow_provider,
                [o.item_id for o in changed],
                [o.status.value for o in changed],
                [o.provider_reference for o in changed],
                [o.reason for o in changed],
            )
        if written:
            await conn.fetch(
                Q.record,
                claimed.tracking_id,
                worker,
                [w.item_id for w in written],
                [w.payroll_id for w in written],
                [w.from_status for w in written],
                [w.to_status for w in written],
                [a.outcome.provider_reference for a in kept_answers],
                [a.outcome.reason for a in kept_answers],
                [a.status_code for a in kept_answers],
                [a.evidence for a in kept_answers],
                [rows[w.item_id]["resolution_id"] for w in written],
                [w.agrees for w in written],
            )
        for payroll_id in sorted({w.payroll_id for w in written if w.changed}):
            if statuses[payroll_id] in REOPENABLE:
                closed = await batches.close_payroll(conn, payroll_id, statuses[payroll_id])
                assert closed is not None, "the payroll was locked in this status"
                statuses[payroll_id] = PayrollStatus(closed["status"])
        if await conn.fetchval(Q.checked, claimed.batch_id, claimed.lease_token, result, next_s, end) is None:
            raise LeaseLost(f"the re-check of batch {claimed.tracking_id} is no longer ours")
    return Recorded(written, {w.payroll_id: str(statuses[w.payroll_id]) for w in written})


def _decide(answer: Late, row: asyncpg.Record | None) -> Written | None:
    """What IntaSend's final answer does to the item as it is now (locked), or None to leave it alone."""
    if row is None or row["rechecked"]:
        return None
    status, to = row["status"], answer.outcome.status.value
    if row["resolution_id"] is None:
        if status != ItemStatus.NEEDS_REVIEW:
            return None  # not in review (a person's SQL fallback wrote it): nothing to follow
        return Written(row["id"], row["payroll_id"], status, to, None, changed=True)
    return Written(row["id"], row["payroll_id"], status, to, agrees=status == to, changed=status != to)


@dataclass(frozen=True, slots=True)
class Scheduled:
    batch_id: int
    tracking_id: str
    item_ids: list[int]
    due_at: datetime
    checks: int
    last_checked_at: datetime | None
    last_result: str | None


async def due_now(
    pool: asyncpg.Pool, *, item_ids: Sequence[int] = (), payroll_id: uuid.UUID | None = None
) -> list[Scheduled]:
    """Make the batches of these items (or of every item of the payroll that has something to re-check) due
    now. Raises ItemNotFound, PayrollNotFound, NothingToRecheck (naming the item or payroll); all or none."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(Q.targets, list(item_ids), payroll_id)
        if payroll_id is not None:
            if not await conn.fetchval(Q.payroll_exists, payroll_id):
                raise errors.PayrollNotFound(f"no payroll has the id {payroll_id}")
            rows = [r for r in rows if r["recheckable"]]
            if not rows:
                raise errors.NothingToRecheck(
                    f"payroll {payroll_id} has no item to re-check (none in NEEDS_REVIEW or resolved by hand "
                    "without IntaSend's final answer)",
                    payroll_id=payroll_id,
                )
        found = {r["id"]: r for r in rows}
        for item_id in item_ids:
            row = found.get(item_id)
            if row is None:
                raise errors.ItemNotFound(f"no item has the id {item_id}", item_id=item_id)
            if not row["recheckable"]:
                raise errors.NothingToRecheck(
                    f"item {item_id} has nothing to re-check: it is {row['status']}, and IntaSend's final "
                    "answer is recorded or it was never in review; nothing was changed",
                    item_id=item_id,
                )
        by_batch: dict[int, list[int]] = {}
        for r in rows:
            by_batch.setdefault(r["batch_id"], []).append(r["id"])
        scheduled = await conn.fetch(Q.due_now, sorted(by_batch))
    return [
        Scheduled(
            r["batch_id"],
            r["tracking_id"],
            sorted(set(by_batch[r["batch_id"]])),
            r["due_at"],
            r["checks"],
            r["last_checked_at"],
            r["last_result"],
        )
        for r in sorted(scheduled, key=lambda r: r["batch_id"])
    ]
