"""Real PostgreSQL for the tests: TEST_DATABASE_URL or DATABASE_URL when set, an embedded server otherwise.

The schema is migrated once into a template database; each test that asks for a database gets a fresh copy
(CREATE DATABASE ... TEMPLATE) and it is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared import db, migrate

ROOT = Path(__file__).resolve().parent.parent


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin_dsn() -> tuple[str, object | None]:
    """The DSN of a maintenance database on the test server, and the embedded server's handle if we started one."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from shared import embedded_pg

    server = embedded_pg.start(ROOT / ".data" / "test-pg")
    return embedded_pg.dsn_for(server, "postgres"), server


async def create_template(admin: str) -> str:
    name = f"payrun_tpl_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await db.connect(with_database(admin, name))
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return name


async def create_from_template(admin: str, template: str) -> str:
    name = f"payrun_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return name


async def drop(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
