"""What a payroll waiting for funds shows: its batches the wallet could not cover at their last check.

The dispatcher checks each batch's total estimate (charges included) against its wallet's available balance
right before approving (dispatcher_service/batch_flow.py); a short batch stays `initiated`, its shortfall
recorded (`batches.record_funds`), and is checked again later. These reads turn that record into the
payroll's status detail (docs/api.md) and the metrics.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared import db, sqlfiles

Q = sqlfiles.queries("funds")


@dataclass(frozen=True, slots=True)
class FundsWait:
    wallet_id: str | None
    batches: int
    required: Decimal  # the waiting batches' total estimates, charges included
    available: Decimal  # the wallet's available balance at the latest check
    checked_at: datetime
    next_check_at: datetime

    @property
    def short_by(self) -> Decimal:
        return max(Decimal(0), self.required - self.available)


async def payroll_wait(conn: db.Executor, payroll_id: uuid.UUID) -> FundsWait | None:
    """None unless some batch carrying the payroll waits for funds."""
    r = await conn.fetchrow(Q.payroll_funds_wait, payroll_id)
    if r is None:
        return None
    return FundsWait(
        r["wallet_id"], r["batches"], r["required"], r["available"], r["checked_at"], r["next_check_at"]
    )
