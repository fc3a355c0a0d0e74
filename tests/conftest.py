from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import structlog

from shared import db
from testkit import postgres as pg

# Settings come from the environment in the services; tests build their own and must not inherit stray ones.
for _name in ("INTASEND_SECRET_KEY", "INTASEND_BASE_URL", "API_PORT", "SIM_PORT", "LOG_FORMAT"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    dsn, server = pg.admin_dsn()
    yield dsn
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def pg_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    name = await pg.create_template(pg_admin_dsn)
    yield name
    await pg.drop(pg_admin_dsn, name)


@pytest.fixture
async def database_url(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    async with pg.fresh_database(pg_admin_dsn, pg_template) as dsn:
        yield dsn


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
