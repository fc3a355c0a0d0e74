"""The per-API-key request throttle (`API_KEY_RATE` sustained requests per second, `API_KEY_BURST`).

One `aiolimiter.AsyncLimiter` per key hash: a bucket of `burst` that drains at `rate` per second. It lives in
this process's memory, so with N API processes a key gets N times the rate; the dict is bounded (least
recently used keys are forgotten, which only ever gives a key a fresh bucket). `Bucket` is the plain token
bucket that keys.py spends on unknown keys.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from aiolimiter import AsyncLimiter

from shared import errors

MAX_KEYS = 10_000


class KeyThrottle:
    def __init__(self, rate: float, burst: int, *, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[bytes, AsyncLimiter] = OrderedDict()

    def _bucket(self, key_hash: bytes) -> AsyncLimiter:
        bucket = self._buckets.get(key_hash)
        if bucket is None:
            bucket = self._buckets[key_hash] = AsyncLimiter(
                max_rate=self.burst, time_period=self.burst / self.rate
            )
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_hash)
        return bucket

    async def check(self, key_hash: bytes) -> None:
        """Take one request from the key's bucket, or raise `Throttled` with the seconds until one is free."""
        bucket = self._bucket(key_hash)
        if not bucket.has_capacity():
            # has_capacity() just leaked the bucket, so its level is current; aiolimiter has no public
            # "time until capacity", hence the private attribute (with a one-token fallback).
            level = getattr(bucket, "_level", float(self.burst))
            raise errors.Throttled(retry_after_s=max(level + 1 - self.burst, 1.0) / self.rate)
        await bucket.acquire()  # never waits: there is capacity


class Bucket:
    """A token bucket that never waits: `take()` spends a token (0.0) or says how many seconds until one is
    free; `wait_s()` says it without spending; `charge()` spends one for work already done."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at = burst, clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def take(self) -> float:
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def wait_s(self) -> float:
        """Seconds until a token is free (0.0: one is free now), without spending it."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def charge(self) -> None:
        """Spend a token for work already done, into debt if none is left (at most one burst deep)."""
        self._refill()
        self._tokens = max(-self.burst, self._tokens - 1)
