"""Payrolls and their items: every payroll query, behind typed functions (SQL in sql/queries/payrolls.sql).

Design rules:
- Every read and write is scoped to one employer: another employer's payroll is `PayrollNotFound`, exactly
  like a payroll that does not exist.
- Functions run in the caller's connection and transaction (the API also stores the Idempotency-Key response
  in it); `create` and `start_processing` must be called inside one.
- A payroll is PROCESSING if and only if its outbox rows exist: `start_processing` changes the status and
  writes the rows in the same transaction, and only from DRAFT.
- Only a DRAFT is deleted (`delete_draft`), under the payroll's row lock, which `start_processing` takes too:
  a payroll is processed or deleted, never both.
- A retry (`retry_failed`) is a new DRAFT made of a final payroll's FAILED items, linked by `retry_of`; a
  payroll has at most one retry, so its FAILED items are never in two payrolls that may both be paid.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared import db, errors, outbox, sqlfiles

Executor = db.Executor


class PayrollStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    PARTIALLY_FAILED = "PARTIALLY_FAILED"
    FAILED = "FAILED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    CANCELLED = "CANCELLED"  # final: some items cancelled by the employer, none NEEDS_REVIEW (migration 0014)


FINAL_STATUSES = frozenset(
    {
        PayrollStatus.COMPLETED,
        PayrollStatus.PARTIALLY_FAILED,
        PayrollStatus.FAILED,
        PayrollStatus.NEEDS_REVIEW,
        PayrollStatus.CANCELLED,
    }
)


class ItemStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    PAID = "PAID"
    FAILED = "FAILED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    CANCELLED = "CANCELLED"


class Provider(enum.StrEnum):
    MPESA_B2C = "MPESA-B2C"
    PESALINK = "PESALINK"
    INTASEND = "INTASEND"


Q = sqlfiles.queries("payrolls")


@dataclass(frozen=True, slots=True)
class NewItem:
    name: str
    account: str
    amount: Decimal
    provider: Provider
    bank_code: str | None = None
    narrative: str | None = None


@dataclass(frozen=True, slots=True)
class NewPayroll:
    reference: str
    currency: str
    items: tuple[NewItem, ...]
    retry_of: uuid.UUID | None = None

    @property
    def total_amount(self) -> Decimal:
        return sum((item.amount for item in self.items), Decimal("0.00"))


@dataclass(frozen=True, slots=True)
class Payroll:
    id: uuid.UUID
    reference: str
    currency: str
    status: PayrollStatus
    item_count: int
    total_amount: Decimal
    paid_amount: Decimal
    created_at: datetime
    updated_at: datetime
    retry_of: uuid.UUID | None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Payroll:
        return cls(
            r["id"], r["reference"], r["currency"], PayrollStatus(r["status"]), r["item_count"],
            r["total_amount"], r["paid_amount"], r["created_at"], r["updated_at"], r["retry_of"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    position: int
    name: str
    account: str
    amount: Decimal
    provider: Provider
    status: ItemStatus
    failure_reason: str | None
    provider_reference: str | None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> Item:
        return cls(
            r["id"], r["position"], r["name"], r["account"], r["amount"], Provider(r["provider"]),
            ItemStatus(r["status"]), r["failure_reason"], r["provider_reference"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class TrackedItem(Item):
    """An item as `GET /payrolls/{id}/items` and the CSV export show it: with IntaSend's references."""

    request_reference_id: str | None
    tracking_id: str | None  # of the IntaSend batch that carries it; None until one does
    updated_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> TrackedItem:
        item = Item.from_record(r)
        return cls(
            item.id, item.position, item.name, item.account, item.amount, item.provider, item.status,
            item.failure_reason, item.provider_reference, r["request_reference_id"], r["tracking_id"],
            r["updated_at"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ItemPage:
    reference: str  # the payroll's
    items: list[TrackedItem]
    # The position of the last item when another page follows, else None.
    next_after: int | None


@dataclass(frozen=True, slots=True)
class StatusSummary:
    id: uuid.UUID
    status: PayrollStatus
    item_count: int
    counts: dict[ItemStatus, int]
    total_amount: Decimal
    paid_amount: Decimal
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Page:
    payrolls: list[Payroll]
    # (created_at, id) of the last payroll when another page follows, else None.
    next_after: tuple[datetime, uuid.UUID] | None


async def create(conn: db.Connection, employer_id: uuid.UUID, new: NewPayroll) -> tuple[Payroll, list[Item]]:
    """Insert a DRAFT payroll and all its items (one statement for the items) in one transaction (a
    savepoint of the caller's, if it has one).

    A reference the employer already used raises `DuplicateReference` naming the existing payroll's id.
    """
    async with conn.transaction():
        return await _create(conn, employer_id, new)


async def _create(conn: db.Connection, employer_id: uuid.UUID, new: NewPayroll) -> tuple[Payroll, list[Item]]:
    payroll_id = uuid.uuid4()
    try:
        # A savepoint: the unique violation aborts only it, so the existing id can still be read below.
        async with conn.transaction(), db.translate_errors():
            row = await conn.fetchrow(
                Q.insert_payroll, payroll_id, employer_id, new.reference, new.currency, len(new.items),
                new.total_amount, new.retry_of,
            )  # fmt: skip
    except errors.DuplicateReference:
        existing = await conn.fetchval(Q.id_by_reference, employer_id, new.reference)
        raise errors.DuplicateReference(
            f"a payroll with reference {new.reference!r} already exists: {existing}",
            payroll_id=str(existing),
        ) from None
    assert row is not None  # INSERT … RETURNING: one row
    items = new.items
    rows = await conn.fetch(
        Q.insert_items,
        payroll_id,
        [i.name for i in items],
        [i.account for i in items],
        [i.amount for i in items],
        [str(i.provider) for i in items],
        [i.bank_code for i in items],
        [i.narrative for i in items],
    )
    created = sorted((Item.from_record(r) for r in rows), key=lambda item: item.position)
    return Payroll.from_record(row), created


RETRY_SUFFIX = "-retry-"
MAX_REFERENCE_LENGTH = 100


async def delete_draft(conn: db.Connection, employer_id: uuid.UUID, payroll_id: uuid.UUID) -> None:
    """Delete a DRAFT payroll and its items in one transaction (a savepoint of the caller's, if any); its
    reference is free again.

    Raises `PayrollNotFound` (also for a payroll already deleted), or `PayrollNotDraft` naming its status.
    The payroll's row is locked first: a concurrent `start_processing` either committed before (the payroll
    is PROCESSING: not deleted) or waits and then finds no payroll (not processed).
    """
    async with conn.transaction():
        row = await conn.fetchrow(Q.lock_payroll, payroll_id, employer_id)
        if row is None:
            raise errors.PayrollNotFound()
        status = PayrollStatus(row["status"])
        if status != PayrollStatus.DRAFT:
            raise errors.PayrollNotDraft(
                f"the payroll is {status}: only a DRAFT payroll can be deleted", payroll_status=str(status)
            )
        await conn.execute(Q.delete_items, payroll_id)
        await conn.execute(Q.delete_payroll, payroll_id)


async def retry_failed(
    conn: db.Connection, employer_id: uuid.UUID, payroll_id: uuid.UUID, reference: str | None = None
) -> tuple[Payroll, list[Item]]:
    """A new DRAFT payroll of the FAILED items of a payroll in a final state, linked to it by `retry_of`.

    Same name, account, amount, provider, bank_code and narrative per item, positions from 0 in the old
    order. `reference` defaults to `<old reference>-retry-<n>`, the smallest n the employer has not used (the
    old reference shortened when the whole would exceed 100 characters). Raises `PayrollNotFound`,
    `PayrollNotFinal` (DRAFT or PROCESSING), `AlreadyRetried` (naming the retry: retry that one instead),
    `NothingToRetry` (no FAILED item) or `DuplicateReference`.
    """
    async with conn.transaction():
        old = await conn.fetchrow(Q.lock_payroll, payroll_id, employer_id)
        if old is None:
            raise errors.PayrollNotFound()
        status = PayrollStatus(old["status"])
        if status not in FINAL_STATUSES:
            raise errors.PayrollNotFinal(
                f"the payroll is {status}: only a payroll in a final state can be retried",
                payroll_status=str(status),
            )
        existing = await conn.fetchval(Q.retry_of_payroll, payroll_id)
        if existing is not None:
            raise errors.AlreadyRetried(
                f"the payroll's FAILED items are already in payroll {existing}: retry that one instead",
                retry_id=str(existing),
            )
        rows = await conn.fetch(Q.failed_items, payroll_id)
        if not rows:
            raise errors.NothingToRetry(f"the payroll is {status} and has no FAILED item to pay again")
        items = tuple(
            NewItem(
                r["name"], r["account"], r["amount"], Provider(r["provider"]), r["bank_code"], r["narrative"]
            )
            for r in rows
        )
        if reference is None:
            reference = await _retry_reference(conn, employer_id, old["reference"])
        return await _create(conn, employer_id, NewPayroll(reference, old["currency"], items, payroll_id))


async def _retry_reference(conn: db.Connection, employer_id: uuid.UUID, old_reference: str) -> str:
    """`<old reference>-retry-<n>` with the smallest n ≥ 1 the employer has not used."""
    n = 1
    while True:
        suffix = f"{RETRY_SUFFIX}{n}"
        candidate = old_reference[: MAX_REFERENCE_LENGTH - len(suffix)] + suffix
        if await conn.fetchval(Q.id_by_reference, employer_id, candidate) is None:
            return candidate
        n += 1


async def get(conn: Executor, employer_id: uuid.UUID, payroll_id: uuid.UUID) -> Payroll:
    row = await conn.fetchrow(Q.get_payroll, payroll_id, employer_id)
    if row is None:
        raise errors.PayrollNotFound()
    return Payroll.from_record(row)


async def get_with_items(
    conn: db.Connection, employer_id: uuid.UUID, payroll_id: uuid.UUID
) -> tuple[Payroll, list[Item]]:
    """The payroll and its items ordered by position, read from one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        payroll = await get(conn, employer_id, payroll_id)
        rows = await conn.fetch(Q.get_items, payroll_id)
    return payroll, [Item.from_record(r) for r in rows]


async def list_page(
    conn: Executor,
    employer_id: uuid.UUID,
    *,
    status: PayrollStatus | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> Page:
    """One page of the employer's payrolls, newest first, after the (created_at, id) of the previous page."""
    after_at, after_id = after if after else (None, None)
    rows = await conn.fetch(
        Q.list_payrolls, employer_id, str(status) if status else None, after_at, after_id, limit + 1
    )
    payrolls = [Payroll.from_record(r) for r in rows[:limit]]
    more = len(rows) > limit
    return Page(payrolls, (payrolls[-1].created_at, payrolls[-1].id) if more else None)


async def items_page(
    conn: Executor,
    employer_id: uuid.UUID,
    payroll_id: uuid.UUID,
    *,
    status: ItemStatus | None,
    limit: int,
    after: int | None,
) -> ItemPage:
    """One page of a payroll's items in position order, after position `after` (None: from the first), in one
    indexed query. Raises `PayrollNotFound` for a payroll this employer does not have.

    Pages are read one statement each: paging through a payroll that is being paid gives every item exactly
    once (the position never changes), each as it was when its page was read.
    """
    rows = await conn.fetch(
        Q.items_page, payroll_id, employer_id, str(status) if status else None,
        -1 if after is None else after, limit + 1,
    )  # fmt: skip
    if not rows:
        raise errors.PayrollNotFound()
    found = [TrackedItem.from_record(r) for r in rows[:limit] if r["id"] is not None]
    more = len(rows) > limit
    return ItemPage(rows[0]["reference"], found, found[-1].position if more else None)


async def start_processing(
    conn: db.Connection, employer_id: uuid.UUID, payroll_id: uuid.UUID, *, batch_size: int
) -> bool:
    """DRAFT → PROCESSING with its outbox rows, in one statement (inside the caller's transaction, if any).

    Returns True when this call started the payroll, False when it was already PROCESSING (nothing written).
    Raises `PayrollNotFound`, or `PayrollFinal` for a payroll in a final state.
    """
    if await outbox.start_payroll(conn, payroll_id, employer_id, batch_size):
        return True
    status = await conn.fetchval(Q.payroll_state, payroll_id, employer_id)
    if status is None:
        raise errors.PayrollNotFound()
    if status == PayrollStatus.PROCESSING:
        return False
    if status in FINAL_STATUSES:
        raise errors.PayrollFinal(
            f"the payroll is already {status}: it cannot be processed again", payroll_status=str(status)
        )
    # Still DRAFT although the guarded UPDATE matched nothing: impossible under the row lock.
    raise errors.PayrunError(f"payroll {payroll_id} is {status} but could not be started")


async def status_summary(conn: Executor, employer_id: uuid.UUID, payroll_id: uuid.UUID) -> StatusSummary:
    """The polling view: status, item counts per status (zeros included) and amounts, in one query."""
    row = await conn.fetchrow(Q.status_summary, payroll_id, employer_id)
    if row is None:
        raise errors.PayrollNotFound()
    found: dict[str, Any] = row["counts"]
    counts = {status: int(found.get(status, 0)) for status in ItemStatus}
    return StatusSummary(
        row["id"], PayrollStatus(row["status"]), row["item_count"], counts, row["total_amount"],
        row["paid_amount"], row["updated_at"],
    )  # fmt: skip
