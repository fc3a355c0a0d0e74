"""The provider rate limit: at most INTASEND_MAX_RPS requests in any sliding one-second window, summed over
every dispatcher process that shares the database, every request counted (initiate, approve, status,
wallets, retries).

Two layers:
- an `aiolimiter.AsyncLimiter` in each process paces that process on its own, so one process never asks for
  more than the whole budget;
- a row in PostgreSQL (`provider_rate`) hands out send slots one interval apart to all processes (GCRA with a
  burst of one). Slots are spaced `1 / (0.97 * max_rps)` apart, so any one-second window holds at most
  max_rps of them with 3 % to spare for jitter between our clock and the provider's;
- the hard guarantee: a log of when requests really left (`provider_sends`). Right before a request goes out,
  `payrun_take_send` logs it only if fewer than max_rps requests left in the last WINDOW_S seconds. A request
  that a busy machine wakes late for its slot therefore waits again instead of bunching with the next ones.

A 429 pauses everyone: the pause is written to the same row, honouring `Retry-After` when the provider sends
one and backing off exponentially when it does not.
"""

from __future__ import annotations

import asyncio
import math
import time

import asyncpg
from aiolimiter import AsyncLimiter

from shared import sqlfiles
from shared.logging import get_logger

# The send log's window: one second plus a margin for the time between logging a request and the provider
# stamping its arrival. A wider margin (50 ms) did not remove the rare 429 at the start of a burst on a
# saturated 2-core machine (that lag was measured above 70 ms) and cost 5 % of the rate: see
# docs/performance.md.
WINDOW_S = 1.02
HEADROOM = 0.97
MIN_PAUSE_S, MAX_PAUSE_S = 1.0, 60.0

log = get_logger(__name__)


def _q(name: str) -> str:
    return sqlfiles.load("rate")[name]


class ProviderRateLimiter:
    def __init__(self, pool: asyncpg.Pool, *, max_rps: float, name: str = "intasend") -> None:
        self._pool = pool
        self._name = name
        self.interval_s = 1.0 / (max_rps * HEADROOM)
        self.max_in_window = max(1, math.floor(max_rps))
        # One token per interval: this process alone never sends faster than the shared pace, whatever the
        # database says. (A bucket of max_rps a second measured more 429s: see docs/performance.md.)
        self._local = AsyncLimiter(1, self.interval_s)
        # One reservation at a time per process: the slots handed out never run more than one interval per
        # process ahead of the clock, so a pause after a 429 takes effect at once.
        self._serial = asyncio.Lock()
        self._backoff_s = MIN_PAUSE_S
        self.waited_s_total = 0.0

    async def acquire(self) -> float:
        """Wait for this process's and the shared slot; returns the seconds waited."""
        started = time.monotonic()
        async with self._serial:
            await self._local.acquire()
            while True:
                row = await self._pool.fetchrow(_q("reserve_slot"), self._name, self.interval_s)
                if row["wait_s"] > 0:
                    await asyncio.sleep(row["wait_s"])
                taken = await self._pool.fetchrow(_q("take_send"), self._name, self.max_in_window, WINDOW_S)
                if taken["sent"]:
                    break
                # Woken late, or a 429 paused everyone meanwhile: wait as told, then take a new slot (the
                # slack this leaves measured fewer 429s than asking the log again at once).
                await asyncio.sleep(max(taken["wait_s"], 0.001))
        waited = time.monotonic() - started
        self.waited_s_total += waited
        return waited

    async def rate_limited(self, retry_after: float | None) -> float:
        """Record a 429 and pause every dispatcher; returns the pause in seconds."""
        if retry_after is not None and retry_after > 0:
            pause = min(retry_after, MAX_PAUSE_S * 5)
        else:
            pause = self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, MAX_PAUSE_S)
        await self._pool.fetchval(_q("pause"), self._name, pause)
        log.warning("provider_rate_limited", pause_s=round(pause, 3), retry_after=retry_after)
        return pause

    def succeeded(self) -> None:
        self._backoff_s = MIN_PAUSE_S
