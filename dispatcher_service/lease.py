"""A claimed row's lease as this process knows it: "nobody else acts on this row until T".

The database keeps `locked_until`; this process keeps its own deadline on the monotonic clock, counted from
the moment the claim (or the heartbeat that extended it) was *sent*, less a safety margin. The statement
that set `locked_until` ran after that moment, so the local deadline always ends first, whatever the
database's clock says, and it needs no database to be read.

Whoever acts on the provider checks the deadline immediately before the request leaves (retry.ProviderCaller),
after every wait: a process that was paused past its lease (GC, VM steal, SIGSTOP, a database outage while
its heartbeats failed) finds out before it acts, not at its next write. A failed heartbeat moves the
deadline no further.
"""

from __future__ import annotations

import time
import uuid

from shared.batches import LeaseLost

# The part of a lease never used: covers the time between the last check and the request reaching the
# provider, and clock-rate differences between this machine and the database's.
MARGIN_SHARE = 0.2
MARGIN_MAX_S = 2.0


class LeaseExpired(LeaseLost):
    """This process's lease on the row may have run out: send nothing more for it."""


def margin_s(lease_s: float) -> float:
    return min(MARGIN_MAX_S, lease_s * MARGIN_SHARE)


class Lease:
    def __init__(self, row_id: int, token: uuid.UUID, *, lease_s: float, asked_at: float) -> None:
        self.row_id, self.token, self.lease_s = row_id, token, lease_s
        self.deadline = asked_at + lease_s - margin_s(lease_s)
        self.lost = False

    @classmethod
    def starting_now(cls, row_id: int, token: uuid.UUID, lease_s: float) -> Lease:
        return cls(row_id, token, lease_s=lease_s, asked_at=time.monotonic())

    def extended(self, asked_at: float) -> None:
        """A heartbeat sent at `asked_at` (monotonic) extended the lease in the database."""
        self.deadline = max(self.deadline, asked_at + self.lease_s - margin_s(self.lease_s))

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, before: str) -> None:
        """Raise LeaseExpired unless the lease still holds now; `before` names what was about to happen."""
        if self.lost:
            raise LeaseExpired(f"outbox row {self.row_id} was taken over; not sending {before}")
        late = -self.remaining_s()
        if late >= 0:
            raise LeaseExpired(
                f"the lease on outbox row {self.row_id} ran out {late:.3f} s ago; not sending {before}"
            )
