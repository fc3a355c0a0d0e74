"""Whose an API key is (an employer's, or with `OperatorBook` an operator's), with a bounded number of queries
whatever keys arrive. Each kind of key has a book of its own (its own memory and failure budget), and each
book looks keys up in its own table only: an employer's key is unknown to the operators' book.

- A key found in the last `VALID_TTL_S` seconds is answered from memory: valid keys cost no query, and a key
  deleted or changed in `employers` is still accepted for at most `VALID_TTL_S` by each API process. A key
  found in the last `KNOWN_TTL_S` is looked up again without touching the failure budget below, so unknown
  keys from others never slow down a key this process has seen.
- A key refused in the last `REFUSED_TTL_S` seconds is refused again (401) without a query. Keys are random
  256-bit tokens, so a refused key does not become valid unless an operator stores that very hash.
- Any other key costs one query, allowed only while its client address's bucket and the process's bucket
  both have a token; a key that turns out unknown then spends a token from each (a valid key spends none,
  so a hundred clerks' first requests of the month from one payroll backend all go through). So unknown
  keys cost at most `API_AUTH_FAILURE_RATE` queries per second (burst `API_AUTH_FAILURE_BURST`, plus the
  lookups already under way) per process, one address at most a tenth of that, and past it the answer is
  429 with Retry-After. Concurrent lookups of one key share one query.

All of it lives in this process's memory, bounded in size (least recently used entries are forgotten).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import asyncpg

from api_service.throttle import Bucket
from shared import db, employers, errors, operators

VALID_TTL_S = 5.0
KNOWN_TTL_S = 600.0
REFUSED_TTL_S = 60.0
MAX_ENTRIES = 10_000
CLIENT_SHARE = 10  # one client address gets 1/CLIENT_SHARE of the process's failure budget

V = TypeVar("V")
H = TypeVar("H")  # who holds a key: an Employer, an Operator


class TooManyUnknownKeys(errors.Throttled):
    """Too many unknown API keys from this client: slow down."""


class _Recent(Generic[V]):
    """An LRU map whose entries expire `ttl_s` after they were put."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self._ttl_s, self._clock = ttl_s, clock
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def get(self, key: bytes) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return found[1]

    def pop(self, key: bytes) -> None:
        self._entries.pop(key, None)

    def put(self, key: bytes, value: V) -> None:
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)


class Book(Generic[H]):
    def __init__(
        self,
        *,
        failure_rate: float,
        failure_burst: int,
        look_up: Callable[[db.Executor, str], Awaitable[H | None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock, self._fetch = clock, look_up
        # key hash -> (valid until, holder), remembered for KNOWN_TTL_S
        self._known: _Recent[tuple[float, H]] = _Recent(KNOWN_TTL_S, clock)
        self._refused: _Recent[bool] = _Recent(REFUSED_TTL_S, clock)
        self._process = Bucket(failure_rate, failure_burst, clock=clock)
        self._client_rate = failure_rate / CLIENT_SHARE
        self._client_burst = max(1.0, failure_burst / CLIENT_SHARE)
        self._clients: OrderedDict[str, Bucket] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future[H | None]] = {}

    def _client(self, address: str) -> Bucket:
        bucket = self._clients.get(address)
        if bucket is None:
            bucket = self._clients[address] = Bucket(self._client_rate, self._client_burst, clock=self._clock)
            if len(self._clients) > MAX_ENTRIES:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(address)
        return bucket

    async def holder(self, pool: asyncpg.Pool, api_key: str, client: str) -> H:
        """Whose the key is, or `Unauthenticated` (401) / `TooManyUnknownKeys` (429)."""
        key_hash = employers.hash_key(api_key)
        known = self._known.get(key_hash)
        if known is not None and known[0] > self._clock():
            return known[1]
        if self._refused.get(key_hash):
            raise errors.Unauthenticated("the API key is not valid")
        found = await self._shared_look_up(pool, api_key, key_hash, None if known else client)
        if found is None:
            raise errors.Unauthenticated("the API key is not valid")
        return found

    async def _shared_look_up(
        self, pool: asyncpg.Pool, api_key: str, key_hash: bytes, client: str | None
    ) -> H | None:
        pending = self._in_flight.get(key_hash)
        if pending is not None:
            await asyncio.wait([pending])  # cancels only this wait, never the shared lookup
            if not pending.cancelled():
                return pending.result()
        return await self._look_up(pool, api_key, key_hash, client)  # alone, or the shared one failed

    def _budget(self, client: str | None) -> list[Bucket]:
        """The buckets an unknown key will be charged to (none for a key known to be valid a moment ago), or
        TooManyUnknownKeys when either is empty."""
        if client is None:
            return []
        buckets = [self._client(client), self._process]
        wait = max(bucket.wait_s() for bucket in buckets)
        if wait:
            raise TooManyUnknownKeys(retry_after_s=wait)
        return buckets

    async def _look_up(
        self, pool: asyncpg.Pool, api_key: str, key_hash: bytes, client: str | None
    ) -> H | None:
        """One query (the key's client address None: a key known to be valid a moment ago, no budget)."""
        budget = self._budget(client)
        future: asyncio.Future[H | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key_hash] = future
        try:
            found = await self._fetch(pool, api_key)
        except BaseException:
            future.cancel()  # the database failed (or the request went away), not the key: nothing spent
            raise
        finally:
            del self._in_flight[key_hash]
        if found is None:
            for bucket in budget:  # only unknown keys spend the budget
                bucket.charge()
            self._known.pop(key_hash)
            self._refused.put(key_hash, True)
        else:
            self._known.put(key_hash, (self._clock() + VALID_TTL_S, found))
        future.set_result(found)
        return found


class KeyBook(Book[employers.Employer]):
    """Employers' API keys."""

    def __init__(
        self, *, failure_rate: float, failure_burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(
            failure_rate=failure_rate, failure_burst=failure_burst, look_up=employers.by_api_key, clock=clock
        )


class OperatorBook(Book[operators.Operator]):
    """Operators' keys (POST /ops/...): the same memory and budget rules, kept apart from employers' keys."""

    def __init__(
        self, *, failure_rate: float, failure_burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(
            failure_rate=failure_rate, failure_burst=failure_burst, look_up=operators.by_api_key, clock=clock
        )
