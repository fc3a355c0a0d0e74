from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.integration import api_support as api


@pytest.fixture
async def client(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """The API app (its real lifespan) over ASGI, on this test's database. A module overrides it for other settings."""
    async with api.client(api.settings(database_url), pool) as c:
        yield c


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    """An employer's API key."""
    return (await api.employer(pool))["api_key"]
