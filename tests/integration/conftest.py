from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from dispatcher_service.dispatcher import Dispatcher
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.retry import ProviderCaller
from shared.settings import Settings
from tests.fakes import FakeIntaSend
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


def settings(database_url: str, **overrides: object) -> Settings:
    base = dict(
        database_url=database_url,
        intasend_secret_key="k",
        intasend_max_rps=500.0,
        dispatcher_lease_s=5.0,
        dispatcher_concurrency=8,
        dispatcher_grace_s=2.0,
    )
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


class Running:
    def __init__(
        self, pool: asyncpg.Pool, dsn: str, provider: FakeIntaSend, s: Settings, worker: str
    ) -> None:
        self.stop = asyncio.Event()
        limiter = ProviderRateLimiter(pool, max_rps=s.intasend_max_rps)
        self.dispatcher = Dispatcher(
            pool=pool, dsn=dsn, provider=provider, caller=ProviderCaller(limiter), settings=s, worker=worker
        )
        self.task = asyncio.create_task(self.dispatcher.run(self.stop))

    async def crash(self) -> None:
        """Like SIGKILL: no drain, no release, no heartbeat; its rows stay in_progress until their lease ends."""

        async def no_drain() -> None:
            for task in list(self.dispatcher._tasks.values()):
                task.cancel()

        self.dispatcher._drain = no_drain  # type: ignore[method-assign]
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(asyncio.wait_for(self.task, 10), return_exceptions=True)


@pytest.fixture
async def run_dispatchers(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[object]:
    running: list[Running] = []

    def start(provider: FakeIntaSend, count: int = 1, **overrides: object) -> list[Running]:
        s = settings(database_url, **overrides)
        new = [Running(pool, database_url, provider, s, f"d{len(running) + n}") for n in range(count)]
        running.extend(new)
        return new

    yield start
    for r in running:
        await r.close()
