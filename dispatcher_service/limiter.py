"""The provider rate limit: at most INTASEND_MAX_RPS requests in any sliding one-second window, summed over
every dispatcher process that shares the database, every request counted (initiate, approve, status,
wallets, retries).

Three layers:
- an `aiolimiter.AsyncLimiter` in each process paces that process on its own, so one process never asks for
  more than the whole budget;
- a row in PostgreSQL (`provider_rate`) hands out send slots one interval apart to all processes (GCRA with a
  burst of one), `1 / (0.99 * max_rps)` apart: requests leave evenly spread;
- the hard guarantee: a log of requests (`provider_sends`) in which a request counts from the moment it is
  allowed to leave until one window after its answer came back (`payrun_take_send`, migration 0007). The
  provider stamps a request somewhere between those two moments, so however late a busy machine sends it
  or the provider reads it, the provider never sees more than max_rps in a second: every request it stamped
  in the second before a new one was still counted in the log when the new one was allowed to leave.
  A grant is used at once or not at all: a request that finds more than GRANT_BOUND_S between the log's grant
  and being handed to the HTTP client (its process was paused) gives the place back and asks again.
  One assumption remains: a request whose answer never came back (its process died or froze) was stamped by
  the provider within STAMP_BOUND_S of its grant.

A 429 pauses everyone: the pause is written to the same row, honouring `Retry-After` when the provider sends
one and backing off exponentially when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiolimiter import AsyncLimiter

from shared import db, sqlfiles
from shared.logging import get_logger

# The provider's one-second window, plus 5 ms for the drift between its clock and the database's.
WINDOW_S = 1.005
HEADROOM = 0.99
# A request whose answer never came back (its dispatcher died) stops counting this long after it left plus
# one window: the provider stamps requests when they arrive.
STAMP_BOUND_S = 1.0
# The most time allowed between the send log's grant and handing the request to the HTTP client.
# Well under STAMP_BOUND_S, so a request that leaves is still counted when it arrives.
GRANT_BOUND_S = 0.25
# How often to ask the log again while it is held by requests still waiting for their answer.
POLL_S = 0.005
MIN_PAUSE_S, MAX_PAUSE_S = 1.0, 60.0

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Send:
    """One request allowed to leave: its entry in the send log, when the log granted it (monotonic, at the
    latest) and how long the request waited for it."""

    id: int
    granted_at: float
    waited_s: float


Q = sqlfiles.queries("rate")


class _Turns:
    """One holder at a time, the waiters served by priority (lower first), then in arrival order."""

    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        if self._busy:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._arrivals), handed))
            try:
                await handed
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._next()  # the turn was ours already: pass it on
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        while self._waiting:
            _, _, handed = heapq.heappop(self._waiting)
            if not handed.done():
                handed.set_result(None)
                return
        self._busy = False


class ProviderRateLimiter:
    def __init__(self, pool: asyncpg.Pool, *, max_rps: float, name: str = "intasend") -> None:
        self._pool = pool
        self._name = name
        self.interval_s = 1.0 / (max_rps * HEADROOM)
        self.max_in_window = max(1, math.floor(max_rps))
        # This process alone never asks for more than the whole budget in a second, whatever the database
        # says. (One token per interval, tried before, added the round trips to every interval: 93 % at 50 rps.)
        self._local = AsyncLimiter(max_rps, 1.0)
        # One reservation at a time per process: the slots handed out never run more than one interval per
        # process ahead of the clock, so a pause after a 429 takes effect at once. Waiters go by priority
        # (the batches their employer has in flight here), then by arrival: one employer's 10,000-worker
        # payroll does not hold back the 10-worker payrolls that come after it.
        self._turns = _Turns()
        self._backoff_s = MIN_PAUSE_S
        self.waited_s_total = 0.0

    async def acquire(self, priority: int = 0) -> Send:
        """Wait for this process's and the shared slot, then for the send log: the request may leave now.
        Within this process, waiters with a lower `priority` go first. Call `answered` on the returned Send
        when its answer (or error) comes back."""
        started = time.monotonic()
        async with self._turns.turn(priority):
            await self._local.acquire()
            send_id, granted_at = await self._take_send()
        waited = time.monotonic() - started
        self.waited_s_total += waited
        return Send(send_id, granted_at, waited)

    @staticmethod
    def fresh(send: Send) -> bool:
        """May this grant still be used? Only if the request is handed on within GRANT_BOUND_S of it."""
        return time.monotonic() - send.granted_at <= GRANT_BOUND_S

    async def unused(self, send: Send) -> None:
        """The request never left (a stale grant, a lease that ran out): its place goes back to everyone. If
        this write is lost, the place counts until STAMP_BOUND_S after the grant (safe, a little slower)."""
        try:
            await self._pool.execute(Q.unused, send.id)
        except db.TRANSIENT_ERRORS as exc:
            log.warning("send_log_unused_not_recorded", send_id=send.id, error=str(exc))

    async def _take_send(self) -> tuple[int, float]:
        epoch = await self._wait_for_slot()
        while True:
            asked_at = time.monotonic()
            taken = await self._pool.fetchrow(
                Q.take_send, self._name, self.max_in_window, WINDOW_S, STAMP_BOUND_S, POLL_S
            )
            assert taken is not None  # payrun_take_send() returns one row
            if taken["sent"]:
                # The moment of the grant on our clock: the server waited granted_after_s for the rate row's
                # lock before granting; that wait is the database's, not a pause of ours.
                return taken["send_id"], asked_at + taken["granted_after_s"]
            await asyncio.sleep(max(taken["wait_s"], 0.001))
            if taken["pause_epoch"] != epoch:
                # A 429 paused everyone meanwhile: queue again behind the pause instead of rushing out with
                # every other waiting request the moment it ends.
                epoch = await self._wait_for_slot()

    async def _wait_for_slot(self) -> int:
        """Take the next shared send slot and sleep until it; returns the pause epoch it was taken in."""
        slot = await self._pool.fetchrow(Q.reserve_slot, self._name, self.interval_s)
        assert slot is not None  # the provider_rate row (migration 0001) is never deleted
        if slot["wait_s"] > 0:
            await asyncio.sleep(slot["wait_s"])
        return int(slot["pause_epoch"])

    async def answered(self, send: Send) -> None:
        """The request's answer came back (or it failed): it counts for one more window only. If this write
        is lost, the request counts until STAMP_BOUND_S after it left (still safe, a little slower)."""
        try:
            await self._pool.execute(Q.answered, send.id)
        except db.TRANSIENT_ERRORS as exc:
            log.warning("send_log_answer_not_recorded", send_id=send.id, error=str(exc))

    async def rate_limited(self, retry_after: float | None) -> float:
        """Record a 429 and pause every dispatcher; returns the pause in seconds."""
        if retry_after is not None and retry_after > 0:
            pause = min(retry_after, MAX_PAUSE_S * 5)
        else:
            pause = self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, MAX_PAUSE_S)
        await self._pool.fetchval(Q.pause, self._name, pause)
        log.warning("provider_rate_limited", pause_s=round(pause, 3), retry_after=retry_after)
        return pause

    def succeeded(self) -> None:
        self._backoff_s = MIN_PAUSE_S
