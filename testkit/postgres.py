"""Real PostgreSQL for tests and benchmarks: a server (a DSN from the environment, or an embedded server
started from pip), a migrated template database, fresh databases (copies of the template, or migrated from
scratch) and dropping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared import db, embedded_pg, migrate

ROOT = Path(__file__).resolve().parent.parent
TEST_ENV = ("TEST_DATABASE_URL", "DATABASE_URL")


def with_database(dsn: str, name: str) -> str:
    """`dsn` with its database replaced by `name` (query, e.g. an embedded server's ?host=, kept)."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin_dsn(
    env: Sequence[str] = TEST_ENV, embedded_dir: Path = ROOT / ".data" / "test-pg"
) -> tuple[str, Any | None]:
    """The DSN of a maintenance database: the first of the `env` variables that is set, else an embedded
    server's under `embedded_dir`. Returns (dsn, the embedded server's handle or None); whoever gets a handle
    calls its cleanup() when done."""
    for name in env:
        url = os.environ.get(name)
        if url:
            return url, None
    server = embedded_pg.start(embedded_dir)
    return embedded_pg.dsn_for(server, "postgres"), server


async def _admin(admin: str, sql: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def migrate_database(dsn: str) -> None:
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()


async def create_template(admin: str) -> str:
    """A new database with every migration applied, to copy fresh databases from; returns its name."""
    name = f"payrun_tpl_{uuid.uuid4().hex[:10]}"
    await _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        await migrate_database(with_database(admin, name))
    except BaseException:
        await drop(admin, name)
        raise
    return name


async def create_from_template(admin: str, template: str, prefix: str = "payrun_t") -> str:
    """A new database copied from `template` (CREATE DATABASE ... TEMPLATE); returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(admin, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name


async def drop(admin: str, name: str) -> None:
    await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def fresh_database(
    admin: str, template: str | None = None, prefix: str = "payrun_t"
) -> AsyncIterator[str]:
    """A new, migrated database (a copy of `template`, or migrated from scratch without one); yields its DSN
    and drops it afterwards, whatever happens."""
    if template is not None:
        name = await create_from_template(admin, template, prefix)
    else:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        await _admin(admin, f'CREATE DATABASE "{name}"')
    dsn = with_database(admin, name)
    try:
        if template is None:
            await migrate_database(dsn)
        yield dsn
    finally:
        with contextlib.suppress(Exception):
            await drop(admin, name)


@contextlib.contextmanager
def own_server(data_dir: Path | None = None) -> Iterator[tuple[Any, Path]]:
    """An embedded PostgreSQL server of the caller's own (to restart or freeze without touching others'),
    stopped and deleted afterwards: yields (handle, data directory)."""
    data_dir = data_dir or ROOT / ".data" / f"restart-{uuid.uuid4().hex[:8]}"
    server = embedded_pg.start(data_dir)
    try:
        yield server, data_dir
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
