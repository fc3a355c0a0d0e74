"""An operator settles NEEDS_REVIEW items: PAID with the provider's reference, or FAILED with a reason.

All the items of one request in one transaction, or none: every item must be NEEDS_REVIEW, or already resolved
exactly the same way (then what was recorded is answered again: a retry is harmless). Each resolution is kept
in `item_resolutions` (append-only, migration 0013) and each touched payroll that waited on review gets its
final state by THE rule (`batches.close_payroll`), in the same transaction.

Locks: the items' payrolls first (by id), then the items (by id), the dispatcher's order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared import batches, errors, sqlfiles
from shared.payrolls import ItemStatus, PayrollStatus

Q = sqlfiles.queries("operators")
RESOLVED_STATES = (ItemStatus.PAID, ItemStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an operator says about one item: PAID with `provider_reference`, or FAILED with `reason`."""

    item_id: int
    status: ItemStatus
    provider_reference: str | None = None
    reason: str | None = None

    def evidence(self) -> tuple[str | None, str | None]:
        if self.status == ItemStatus.PAID:
            return self.provider_reference, None
        return None, self.reason


@dataclass(frozen=True, slots=True)
class Recorded:
    id: int
    item_id: int
    payroll_id: uuid.UUID
    operator_id: uuid.UUID
    operator_name: str
    from_status: str
    to_status: str
    provider_reference: str | None
    reason: str | None
    note: str | None
    created_at: datetime
    replayed: bool  # recorded by an earlier request


@dataclass(frozen=True, slots=True)
class Outcome:
    resolutions: list[Recorded]
    payrolls: list[tuple[uuid.UUID, PayrollStatus]]


def _check(asked: Sequence[Resolution]) -> None:
    for resolution in asked:
        if resolution.status not in RESOLVED_STATES:
            raise ValueError(f"an item is resolved PAID or FAILED, not {resolution.status}")
        if not any(resolution.evidence()):
            raise ValueError(f"item {resolution.item_id}: PAID needs a provider_reference, FAILED a reason")


def _same(resolution: Resolution, row: asyncpg.Record) -> bool:
    return row["resolution_id"] is not None and (
        row["to_status"],
        row["provider_reference"],
        row["reason"],
    ) == (
        resolution.status.value,
        *resolution.evidence(),
    )


async def resolve(
    pool: asyncpg.Pool, operator_id: uuid.UUID, asked: Sequence[Resolution], note: str | None
) -> Outcome:
    """Resolve every item of `asked` or none. Raises `ItemNotFound` (an id names no item), `ItemNotInReview`
    (an item neither NEEDS_REVIEW nor already resolved the same way, or listed twice in two different ways).
    An item listed twice the same way is one resolution, as a repeated request is."""
    _check(asked)
    first: dict[int, Resolution] = {}
    for resolution in asked:
        if first.setdefault(resolution.item_id, resolution) != resolution:
            raise errors.ItemNotInReview(
                f"item {resolution.item_id} is listed twice, resolved two different ways; nothing was changed",
                item_id=resolution.item_id,
            )
    asked = list(first.values())
    ids = [r.item_id for r in asked]
    async with pool.acquire() as conn, conn.transaction():
        payroll_ids = [r["payroll_id"] for r in await conn.fetch(Q.items_payrolls, ids)]
        await conn.execute(Q.lock_payrolls, payroll_ids)
        rows = {r["id"]: r for r in await conn.fetch(Q.lock_items, ids)}
        for resolution in asked:
            if resolution.item_id not in rows:
                raise errors.ItemNotFound(
                    f"no item has the id {resolution.item_id}", item_id=resolution.item_id
                )
        to_do: list[Resolution] = []
        for resolution in asked:
            row = rows[resolution.item_id]
            if row["status"] == ItemStatus.NEEDS_REVIEW:
                to_do.append(resolution)
            elif not _same(resolution, row):
                how = f"resolved {row['to_status']} already" if row["resolution_id"] else row["status"]
                raise errors.ItemNotInReview(
                    f"item {resolution.item_id} is not NEEDS_REVIEW: it is {how}; nothing was changed",
                    item_id=resolution.item_id,
                )
        if to_do:
            written = await conn.fetch(
                Q.resolve_items,
                [r.item_id for r in to_do],
                [r.status.value for r in to_do],
                [r.evidence()[0] for r in to_do],
                [r.evidence()[1] for r in to_do],
                operator_id,
                note,
            )
            assert len(written) == len(to_do), "the items were locked NEEDS_REVIEW"
            for payroll_id in sorted({rows[r.item_id]["payroll_id"] for r in to_do}):
                await batches.close_payroll(conn, payroll_id, PayrollStatus.NEEDS_REVIEW)
        new = {r.item_id for r in to_do}
        recorded = await conn.fetch(Q.resolutions_of_items, ids)
        statuses = await conn.fetch(Q.payroll_statuses, payroll_ids)
    by_item: dict[int, Any] = {r["item_id"]: r for r in recorded}
    return Outcome(
        [Recorded(**dict(by_item[i]), replayed=i not in new) for i in ids],
        [(r["id"], PayrollStatus(r["status"])) for r in statuses],
    )
