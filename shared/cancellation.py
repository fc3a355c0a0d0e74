"""Cancel a processing payroll: its items no approved batch carries yet become CANCELLED, the rest finish.

Race-free against a dispatcher about to approve. A flow writes stage `approving` in a transaction fenced by
its lead outbox row's lock (`batches.set_stage`) before the approve request leaves. A cancel takes the same
locks first (the lead rows of every live row of the payroll, in id order, then the payroll), so exactly one
of the two comes first:
- the batch reached `approving` first: its items are not cancellable (the answer counts them in `in_flight`);
- the cancel came first: it cancels the items, abandons the batch unapproved (stage `abandoned`; an
  unapproved IntaSend batch moves no money) and finishes the lead row and the rows it carries; their other
  items (of other payrolls coalesced into the batch) go into new rows, initiated again in a new batch. The
  flow that held the lead row loses its fence and writes, and approves, nothing.

Locks are taken in the order the dispatcher takes them (lead outbox rows, then payrolls), so a cancel and a
flow settling a batch wait for each other instead of deadlocking.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shared import batches, db, errors, sqlfiles
from shared.logging import get_logger
from shared.payrolls import PayrollStatus

Q = sqlfiles.queries("cancellation")
log = get_logger(__name__)

REASON = "cancelled by the employer"
OPERATOR_REASON = "cancelled by an operator on the employer's behalf"
ABANDON_REASON = "abandoned unapproved: the employer cancelled items in it"


@dataclass(frozen=True, slots=True)
class Cancelled:
    payroll_id: uuid.UUID
    status: PayrollStatus
    cancelled_now: int  # by this call
    cancelled: int  # the payroll's CANCELLED items, this call's included
    in_flight: int  # items not cancellable: in a batch already being approved, not yet final
    cancel_requested_at: datetime | None


async def cancel(
    conn: db.Connection,
    employer_id: uuid.UUID,
    payroll_id: uuid.UUID,
    *,
    operator_id: uuid.UUID | None = None,
    note: str | None = None,
) -> Cancelled:
    """Cancel what can still be cancelled, in one transaction (a savepoint of the caller's, if any).

    Naturally idempotent: a second call cancels nothing more and answers the same counts. Raises
    `PayrollNotFound`, `PayrollNotProcessing` for a DRAFT (delete it instead), and `PayrollFinal` for a
    payroll that ended without any cancelled item (nothing was left to cancel). Every answered request is
    recorded in payroll_cancel_requests, in the same transaction: by the employer, or by `operator_id` on
    the employer's behalf (with the operator's `note`)."""
    async with conn.transaction():
        status = await conn.fetchval(Q.payroll_state, payroll_id, employer_id)
        if status is None:
            raise errors.PayrollNotFound()
        if status == PayrollStatus.DRAFT:
            raise errors.PayrollNotProcessing(
                "the payroll is a DRAFT: nothing is being paid; delete it with DELETE /payrolls/{id}",
                payroll_status=status,
            )
        await _lock_leads(conn, payroll_id)
        status = PayrollStatus(await conn.fetchval(Q.lock_payroll, payroll_id))
        cancelled_now = 0
        if status == PayrollStatus.PROCESSING:
            reason = REASON if operator_id is None else OPERATOR_REASON
            cancelled_now = await _cancel_items(conn, payroll_id, reason)
        result = await _counts(conn, payroll_id, cancelled_now)
        if result.status != PayrollStatus.PROCESSING and result.cancelled == 0:
            raise errors.PayrollFinal(
                f"the payroll is already {result.status}: nothing is left to cancel",
                payroll_status=str(result.status),
            )
        await conn.execute(
            Q.record_request, payroll_id, operator_id, result.cancelled_now, result.in_flight, note
        )
    log.info(
        "payroll_cancel",
        payroll_id=str(payroll_id),
        operator_id=str(operator_id) if operator_id else None,
        cancelled_now=result.cancelled_now,
        cancelled=result.cancelled,
        in_flight=result.in_flight,
        payroll_status=str(result.status),
    )
    return result


async def _lock_leads(conn: db.Connection, payroll_id: uuid.UUID) -> None:
    """Lock the lead row of every live row of the payroll. A pending row can be gathered into another
    row's batch until it is locked: then its new lead is locked on the next round. Held rows cannot change
    lead any more, so the rounds end."""
    locked: set[int] = set()
    while True:
        leads = {r["lead"] for r in await conn.fetch(Q.payroll_leads, payroll_id)}
        missing = sorted(leads - locked)
        if not missing:
            return
        locked.update(r["id"] for r in await conn.fetch(Q.lock_leads, missing))
        locked.update(missing)  # a lead no longer live or no longer a lead: its rows are read again anyway


async def _cancel_items(conn: db.Connection, payroll_id: uuid.UUID, reason: str) -> int:
    rows = await conn.fetch(Q.cancellable_items, payroll_id, reason)
    if not rows:
        return 0
    await conn.execute(Q.mark_cancel_requested, payroll_id)
    for lead in [r["lead"] for r in await conn.fetch(Q.reformable_leads, payroll_id)]:
        batch_id = await conn.fetchval(Q.initiated_batch_of_row, lead)
        if batch_id is not None:
            tracking_id = await conn.fetchval(batches.Q.abandon_batch, batch_id, ABANDON_REASON)
            log.warning(
                "batch_abandoned",
                outbox_id=lead,
                tracking_id=tracking_id,
                reason=ABANDON_REASON,
                payroll_id=str(payroll_id),
            )
        new_rows = await batches.reform(conn, lead, reason if batch_id is None else ABANDON_REASON)
        if new_rows:
            log.info("rows_reformed", outbox_id=lead, new_rows=new_rows)
    return len(rows)


async def _counts(conn: db.Connection, payroll_id: uuid.UUID, cancelled_now: int) -> Cancelled:
    r = await conn.fetchrow(Q.cancel_counts, payroll_id)
    assert r is not None  # the payroll is locked in this transaction
    return Cancelled(
        payroll_id,
        PayrollStatus(r["status"]),
        cancelled_now,
        r["cancelled"],
        r["in_flight"],
        r["cancel_requested_at"],
    )
