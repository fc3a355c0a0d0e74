"""Provider batches and item outcomes: every write the dispatcher makes after a claim, each one fenced.

A fenced write runs in a transaction that first re-checks the row's lease token (`outbox.hold_lease`); if the
row was taken over by another dispatcher, nothing is written and the caller learns it lost the row. The two
single-statement writes (`record_poll`, `log_attempt`) carry the same check inside the statement.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec

from shared import db, events, metrics, outbox, sqlfiles
from shared.outbox import RowStatus
from shared.payrolls import ItemStatus, PayrollStatus

Q = sqlfiles.queries("batches")


class Stage(enum.StrEnum):
    """provider_batches.stage, as stored: how far IntaSend's two-step flow got for the batch."""

    INITIATED = "initiated"
    APPROVING = "approving"
    APPROVED = "approved"
    FINISHED = "finished"
    REJECTED = "rejected"
    ABANDONED = "abandoned"  # never approved: it carried a cancelled item (migration 0014)


class Item(msgspec.Struct, frozen=True, gc=False):
    """An item as the dispatcher sends it. A frozen msgspec Struct rather than a dataclass: 500 are made per
    batch read, and a Struct is several times cheaper to construct. ``gc=False``: its fields are numbers,
    strings and enums, so it can never be part of a reference cycle."""

    id: int
    position: int
    name: str
    account: str
    amount: Decimal
    provider: str
    bank_code: str | None
    narrative: str | None
    status: ItemStatus
    request_reference_id: str | None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    id: int
    tracking_id: str
    nonce: str | None
    stage: Stage
    # IntaSend's initiate answer: its batch-level fields as stored (docs/audit.md), enough to approve with.
    initiate_response: dict[str, Any]
    status_polls: int
    # The initiate answer's bytes as received (provider_batches.initiate_body): approve sends them back as
    # is. None only for a batch initiated before migration 0017 (then approve sends initiate_response).
    approve_body: bytes | None = None
    status_code: str | None = None  # the batch code of the last status answer recorded


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    # Its field names are the columns settle_items reads from the JSON it is sent as (json_to_recordset).
    item_id: int
    status: ItemStatus
    reason: str | None = None
    provider_reference: str | None = None


class LeaseLost(Exception):
    """Another dispatcher holds this outbox row now: write nothing more for it."""


class BatchCancelled(LeaseLost):
    """The batch carries an item its employer cancelled: it was abandoned unapproved, its row is done."""


@dataclass(frozen=True, slots=True)
class FundsCheck:
    """One comparison before approve: the batch's total estimate against its wallet's available balance."""

    required: Decimal
    available: Decimal
    wallet_id: str | None

    @property
    def short_by(self) -> Decimal:
        return max(Decimal(0), self.required - self.available)


async def items(pool: asyncpg.Pool, item_ids: Sequence[int]) -> list[Item]:
    return [_item_of(r) for r in await pool.fetch(Q.batch_items, list(item_ids))]


def _item_of(r: asyncpg.Record) -> Item:
    return Item(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], _ITEM_STATUS.get(r[8]) or ItemStatus(r[8]), r[9]
    )


# ItemStatus by value: a dict lookup, where ItemStatus(value) goes through the enum machinery.
_ITEM_STATUS: dict[str, ItemStatus] = {s.value: s for s in ItemStatus}


async def sent_items(pool: asyncpg.Pool, batch_id: int) -> list[Item] | None:
    """The items the batch was initiated with, each with IntaSend's reference for it (kept on the batch row,
    migration 0020). None for a batch initiated before that migration: its items carry their references."""
    rows = await pool.fetch(Q.batch_items_sent, batch_id)
    if not rows:  # no batch is initiated without items: this one has no arrays
        return None
    return [_item_of(r) for r in rows]


def with_references(items: Sequence[Item], refs: dict[int, str]) -> list[Item]:
    """The items as persisted with their request_reference_ids: the flow goes on without reading them again."""
    return [
        Item(
            i.id,
            i.position,
            i.name,
            i.account,
            i.amount,
            i.provider,
            i.bank_code,
            i.narrative,
            i.status,
            refs[i.id],
        )
        for i in items
    ]


async def for_row(pool: asyncpg.Pool, outbox_id: int) -> StoredBatch | None:
    r = await pool.fetchrow(Q.batch_for_row, outbox_id)
    if r is None:
        return None
    return StoredBatch(
        r["id"],
        r["tracking_id"],
        r["nonce"],
        Stage(r["stage"]),
        r["initiate_response"],
        r["status_polls"],
        approve_body=r["initiate_body"],
        status_code=r["status_code"],
    )


async def log_attempt(
    pool: asyncpg.Pool, row: outbox.Claimed, worker: str, action: str, outcome: str, detail: str | None = None
) -> None:
    """Record one step of the row's flow for the audit trail; fenced in the statement itself."""
    written = await pool.fetchval(
        Q.log_attempt,
        row.id,
        row.attempts,
        worker,
        action,
        outcome,
        (detail or "")[:2000] or None,
        row.lease_token,
    )
    if written is None:
        raise LeaseLost(f"outbox row {row.id} is no longer ours (not recording {action} {outcome})")


@asynccontextmanager
async def _fenced(pool: asyncpg.Pool, row: outbox.Claimed) -> AsyncIterator[db.Connection]:
    """`async with _fenced(pool, row) as conn:` a transaction in which we provably still hold the row. The
    connection goes back to the pool (its transaction rolled back) on any exception, cancellation included."""
    async with pool.acquire() as conn, conn.transaction():
        if not await outbox.hold_lease(conn, row.id, row.lease_token):
            raise LeaseLost(f"outbox row {row.id} is no longer ours")
        yield conn


async def persist_initiated(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    *,
    tracking_id: str,
    nonce: str | None,
    response: dict[str, Any],
    refs: dict[int, str],
    approve_body: bytes | None = None,
) -> StoredBatch:
    """Persist the batch, with the items sent and IntaSend's request_reference_id of each (`refs`, in the
    order sent), before anyone may approve it: one row. The items themselves are linked to it and made
    SUBMITTED when it moves to `approving` (`set_stage`). `response` is what is stored of IntaSend's answer
    (its batch-level fields); `approve_body`, its bytes as received, is stored with it for whichever flow
    approves the batch."""
    # Its transactions are not stored with it: the references are, as two arrays (migration 0020).
    response = {k: v for k, v in response.items() if k != "transactions"}
    ids = list(refs)
    async with _fenced(pool, row) as conn:
        batch_id = await conn.fetchval(
            Q.insert_batch,
            row.id,
            row.payroll_id,
            tracking_id,
            nonce,
            response,
            approve_body,
            ids,
            [refs[i] for i in ids],
        )
        if batch_id is None:
            raise LeaseLost(f"outbox row {row.id} already has a batch")
    return StoredBatch(batch_id, tracking_id, nonce, Stage.INITIATED, response, 0, approve_body)


async def set_stage(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    batch_id: int,
    stage: Stage,
    carried: Sequence[outbox.Carried] = (),
) -> None:
    """Fenced. `approving` is written only for a batch none of whose items was cancelled: the lead row's lock
    (the fence) is the one a cancel takes too, so a cancel and this write are serialized. A batch found
    carrying a cancelled item is abandoned instead, in this transaction, and BatchCancelled raised. With
    `approving`, in the same transaction, the batch's items are linked to it and become SUBMITTED: from
    then on they are not cancellable (shared/cancellation.py reads the same)."""
    abandoned: str | None = None
    async with _fenced(pool, row) as conn:
        if stage == Stage.APPROVING and await conn.fetchval(Q.batch_cancelled_items, batch_id):
            reason = "abandoned unapproved: it carries an item its employer cancelled"
            # Only a batch still `initiated` is abandoned and its items sent again: one that may have been
            # approved before is never re-formed (its items would be paid twice); it is just not approved now.
            if await conn.fetchval(Q.abandon_batch, batch_id, reason) is not None:
                await reform(conn, row.id, reason)
            abandoned = reason
        else:
            await conn.execute(Q.set_stage, batch_id, stage)
            if stage == Stage.APPROVING:
                await conn.execute(Q.submit_items, batch_id)
                for payroll_id in _payrolls(row, carried):
                    await conn.execute(Q.touch_payroll, payroll_id)
    if abandoned is not None:
        raise BatchCancelled(f"outbox row {row.id}: batch {batch_id} {abandoned}")


async def record_funds(pool: asyncpg.Pool, row: outbox.Claimed, batch_id: int, check: FundsCheck) -> int:
    """Record a funds check (fenced); returns how many checks of this batch have found it short."""
    async with _fenced(pool, row) as conn:
        short: int = await conn.fetchval(
            Q.record_funds, batch_id, check.required, check.available, check.wallet_id
        )
    return short


async def reform(conn: db.Connection, lead_id: int, reason: str) -> list[int]:
    """Take a lead row and the rows it carries off the provider batch they formed (abandoned, or not yet
    initiated): each ends `done` with `reason`, and its items still PENDING go into a new row of the same
    payroll, due now. The caller holds the lead row's lock (its fence, or a cancel's lock) and has abandoned the
    batch, if there was one. Each payroll whose last row this was is closed. Returns the new rows' ids."""
    rows = await conn.fetch(Q.reform_rows, lead_id)
    pending = [i for r in rows for i in r["pending"]]
    await conn.execute(Q.unlink_items, pending)
    await conn.execute(Q.finish_reformed, lead_id, reason)
    new_ids = [
        await conn.fetchval(
            Q.insert_reformed, r["payroll_id"], r["id"], r["kind"], r["payload"], r["pending"]
        )
        for r in rows
        if r["pending"]
    ]
    await conn.execute(Q.lock_payrolls, sorted({r["payroll_id"] for r in rows}))
    for payroll_id in sorted({r["payroll_id"] for r in rows}):
        await _close_if_last(conn, payroll_id)
    if new_ids:
        await conn.execute(Q.notify_outbox, str(lead_id))
    return new_ids


async def record_poll(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    batch_id: int,
    status: dict[str, Any] | bytes | None,
    status_code: str | None,
) -> None:
    """Record a status answer: its code, and its body when given (the flow gives it when the batch's code
    changed; the final answer is kept by `settle`). Fenced in the statement, so a stale flow cannot undo a
    callback's wake-up."""
    written = await pool.fetchval(Q.record_poll, batch_id, status, status_code, row.id, row.lease_token)
    if written is None:
        raise LeaseLost(f"outbox row {row.id} is no longer ours (not recording a status poll)")


async def approved_age_s(pool: asyncpg.Pool, batch_id: int) -> float | None:
    """Seconds since the batch was approved, None while it is not."""
    age: float | None = await pool.fetchval(Q.approved_age, batch_id)
    return age


async def close_payroll(
    conn: db.Connection, payroll_id: uuid.UUID, from_status: PayrollStatus
) -> asyncpg.Record | None:
    """Give a payroll in `from_status` its state from its items' (THE rule: close_payroll); the caller holds
    its lock. None when the payroll is not in `from_status`. A new final status queues the employer's event
    (events.emit) in the same transaction."""
    closed: asyncpg.Record | None = await conn.fetchrow(Q.close_payroll, payroll_id, from_status.value)
    if closed is not None and closed["status"] != from_status:
        await events.emit(conn, payroll_id)
    return closed


async def _close_if_last(conn: db.Connection, payroll_id: uuid.UUID) -> str | None:
    await conn.fetchval(Q.lock_payroll, payroll_id)
    if await conn.fetchval(Q.payroll_open_rows, payroll_id):
        await conn.execute(Q.touch_payroll, payroll_id)
        return None
    closed = await close_payroll(conn, payroll_id, PayrollStatus.PROCESSING)
    if closed is None:
        return None
    metrics.PAYROLL_DURATION.observe(max(0.0, closed["duration_s"] or 0.0))
    return str(closed["status"])


async def gather(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    *,
    provider: str,
    currency: str,
    wallet_id: str | None,
    room: int,
) -> list[outbox.Carried]:
    """Take other due rows of the same provider, currency and wallet into the lead row's batch (fenced),
    as many as fit in `room` more items, round-robin across employers."""
    if room <= 0:
        return []
    async with _fenced(pool, row) as conn:
        rows = await conn.fetch(Q.gather_rows, row.id, provider, currency, wallet_id or "", room)
    return [outbox.Carried.from_record(r) for r in rows]


def _payrolls(row: outbox.Claimed, carried: Sequence[outbox.Carried]) -> list[uuid.UUID]:
    return sorted({row.payroll_id, *(c.payroll_id for c in carried)})


async def _finish_rows(
    conn: db.Connection,
    row: outbox.Claimed,
    carried: Sequence[outbox.Carried],
    *,
    status: RowStatus,
    error: str | None,
) -> str | None:
    """Finish the lead row and the rows its batch carried, then close each payroll whose last row this was.
    Returns the lead payroll's final status when this closed it."""
    await outbox.finish(conn, row.id, row.lease_token, status=status, error=error)
    await conn.execute(Q.finish_carried, row.id, status, error)  # by carried_by: none is left behind
    closed = {pid: await _close_if_last(conn, pid) for pid in _payrolls(row, carried)}
    return closed[row.payroll_id]


async def settle(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    outcomes: Sequence[ItemOutcome],
    *,
    batch_id: int | None,
    carried: Sequence[outbox.Carried] = (),
    batch_stage: Stage = Stage.FINISHED,
    row_status: RowStatus = RowStatus.DONE,
    error: str | None = None,
    final_status: tuple[dict[str, Any] | bytes, str | None] | None = None,
) -> str | None:
    """Record the items' final states (one statement for all of them), finish the outbox row (and the rows
    its batch carried) and each payroll whose last row this was: all in one transaction. `final_status`:
    the status answer that made the batch final (its body as received, and its code), recorded as the
    batch's one kept status. Returns the lead payroll's final status when this closed it."""
    async with _fenced(pool, row) as conn:
        # The batch's own row first: the payroll locks below are held until commit, and every batch of the
        # payroll settling at the same moment waits for them (the final answer is the largest write).
        if batch_id is not None and final_status is not None:
            await conn.execute(Q.record_final_status, batch_id, batch_stage, *final_status)
        elif batch_id is not None:
            await conn.execute(Q.set_stage, batch_id, batch_stage)
        await conn.execute(Q.lock_payrolls, _payrolls(row, carried))
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        for status, n in counts.items():
            metrics.ITEMS_FINAL.labels(status).inc(n)
        await _write_outcomes(conn, outcomes)
        return await _finish_rows(conn, row, carried, status=row_status, error=error)


async def fail_items(pool: asyncpg.Pool, row: outbox.Claimed, outcomes: Sequence[ItemOutcome]) -> None:
    """Some items of a row failed before any batch was made of them; the row goes on with the others."""
    async with _fenced(pool, row) as conn:
        await _write_outcomes(conn, outcomes)
    for o in outcomes:
        metrics.ITEMS_FINAL.labels(o.status).inc()


async def _write_outcomes(conn: db.Connection, outcomes: Sequence[ItemOutcome]) -> None:
    if outcomes:
        await conn.execute(Q.settle_items, list(outcomes))


async def settle_all(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    item_ids: Sequence[int],
    *,
    status: ItemStatus,
    reason: str,
    batch_id: int | None,
    batch_stage: Stage,
    row_status: RowStatus,
    carried: Sequence[outbox.Carried] = (),
    error: str | None = None,
) -> str | None:
    """Give every unsettled item of the row (and of the rows its batch carried) one state: a batch-level
    failure, or a row that died."""
    async with _fenced(pool, row) as conn:
        await conn.execute(Q.lock_payrolls, _payrolls(row, carried))
        unsettled = await conn.fetch(Q.fail_unsettled, list(item_ids), status, reason, batch_id)
        metrics.ITEMS_FINAL.labels(status).inc(len(unsettled))
        if batch_id is not None:
            await conn.execute(Q.set_stage, batch_id, batch_stage)
        return await _finish_rows(conn, row, carried, status=row_status, error=error or reason)


async def note_callback(
    pool: asyncpg.Pool, tracking_id: str, status_code: str, body: dict[str, Any]
) -> dict[str, int]:
    """Record a provider callback and wake the batch's row; returns deliveries, known and woken counts."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q.note_callback, tracking_id, status_code, body)
        assert row is not None  # one row of counts, always
        if row["woken"]:
            await conn.execute("SELECT pg_notify($1, $2)", outbox.NOTIFY_CHANNEL, tracking_id)
    return {"deliveries": row["deliveries"], "known": row["known"], "woken": row["woken"]}
