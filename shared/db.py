"""The asyncpg pool, and the one place where database errors become payrun errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import asyncpg.pool

from shared import errors, jsonvalues

# A connection of its own (connect()) or one borrowed from a pool (pool.acquire()); asyncpg's types tell them
# apart, the queries do not. An Executor also takes the pool itself (pool.fetch() and friends).
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = Connection | asyncpg.Pool

# Named constraints whose violation is a domain fact, not a bug.
_CONSTRAINT_ERRORS: dict[str, type[errors.PayrunError]] = {
    "payrolls_employer_reference_key": errors.DuplicateReference,
    "payrolls_retry_of_key": errors.AlreadyRetried,
}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonvalues: amounts stay Decimal both ways, and a provider body kept as received (bytes) is written as is.
    await conn.set_type_codec(
        "jsonb", encoder=jsonvalues.dumps, decoder=jsonvalues.loads, schema="pg_catalog"
    )
    await conn.set_type_codec("json", encoder=jsonvalues.dumps, decoder=jsonvalues.loads, schema="pg_catalog")


async def _no_session_reset(_conn: asyncpg.Connection) -> None:
    """payrun leaves no session state on pooled connections (LISTEN and advisory locks use their own
    connections), so the default reset query, a round trip on every release, buys nothing. asyncpg still
    rolls back a transaction left open."""


# What a database outage, restart or overload looks like to a caller: retry later, it is not a bug.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.PostgresError,
    errors.DatabaseUnavailable,
)

# How long any caller waits for a pooled connection before giving up with DatabaseBusy. Without it a
# pool whose connections are all stuck (a slow database, a leak) makes every caller wait for ever while the
# process looks alive.
ACQUIRE_TIMEOUT_S = 10.0


class _AcquireTimeoutPool(asyncpg.Pool):
    """An asyncpg pool in which every acquire, including the one inside `pool.fetch()` and friends, has a
    timeout (asyncpg's own default is to wait for ever)."""

    def __init__(self, *args: Any, acquire_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout_s = acquire_timeout_s

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - asyncpg's signature
        try:
            # asyncpg's private acquire (the stubs leave it out): every public way to a connection goes through it.
            return await super()._acquire(  # type: ignore[misc]
                self.acquire_timeout_s if timeout is None else timeout
            )
        except TimeoutError:
            raise errors.DatabaseBusy(waited_s=timeout or self.acquire_timeout_s) from None


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    acquire_timeout_s: float = ACQUIRE_TIMEOUT_S,
    **kwargs: Any,
) -> asyncpg.Pool:
    pool = _AcquireTimeoutPool(
        dsn,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        init=_init_connection,
        reset=_no_session_reset,
        command_timeout=60,
        acquire_timeout_s=acquire_timeout_s,
        **kwargs,
    )
    await pool
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map violations of named constraints to their domain errors; leave everything else alone."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        domain = _CONSTRAINT_ERRORS.get(getattr(exc, "constraint_name", None) or "")
        if domain is None:
            raise
        raise domain() from exc
