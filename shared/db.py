"""The asyncpg pool, and the one place where database errors become payrun errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from shared import errors, jsonvalues

# Named constraints whose violation is a domain fact, not a bug.
_CONSTRAINT_ERRORS: dict[str, type[errors.PayrunError]] = {
    "payrolls_employer_reference_key": errors.DuplicateReference,
}


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonvalues.dumps: provider responses (stored as received) carry Decimals where IntaSend sent numbers.
    await conn.set_type_codec("jsonb", encoder=jsonvalues.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=jsonvalues.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_session_reset(_conn: asyncpg.Connection) -> None:
    """payrun leaves no session state on pooled connections (LISTEN and advisory locks use their own
    connections), so the default reset query, a round trip on every release, buys nothing. asyncpg still
    rolls back a transaction left open."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_no_session_reset,
        command_timeout=60,
        **kwargs,
    )
    assert pool is not None
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
