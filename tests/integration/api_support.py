"""Helpers for the API tests: run the app's lifespan, talk to it over ASGI with httpx, make employers/payrolls.

`httpx.ASGITransport` neither runs the lifespan nor passes its state to requests; `running` does both, as
uvicorn would (a shallow copy of the lifespan state in every request's scope).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api_service.app import create_app
from shared import employers
from shared.settings import Settings


class LifespanFailed(Exception):
    pass


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    """Start `app`'s lifespan, yield an ASGI app that hands each request the lifespan state, then shut down."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.create_task(app(scope, receive, send), name="lifespan")
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        await asyncio.gather(task, return_exceptions=True)
        raise LifespanFailed(started.get("message", ""))

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    try:
        yield with_state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@asynccontextmanager
async def client(settings: Settings, pool: asyncpg.Pool | None = None) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings, pool=pool)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://payrun.test", timeout=60) as c:
            yield c


def settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_key_rate": 10_000.0, "api_key_burst": 10_000, "intasend_batch_size": 500}
    values.update(overrides)
    return Settings(database_url=database_url, **values)


async def employer(pool: asyncpg.Pool, name: str = "Acme Ltd") -> dict[str, str]:
    async with pool.acquire() as conn:
        return await employers.create(conn, name)


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def item(n: int = 0, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": f"Payee {n}", "account": f"07{12000000 + n:08d}", "amount": "1500.00"}
    base.update(overrides)
    return base


def payroll_body(items: int = 2, reference: str = "ACME-2026-11", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reference": reference,
        "currency": "KES",
        "items": [item(n) for n in range(items)],
    }
    body.update(overrides)
    return body


async def create_payroll(
    c: httpx.AsyncClient, api_key: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await c.post("/payrolls", json=body or payroll_body(), headers=auth(api_key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def count(pool: asyncpg.Pool, table: str) -> int:
    assert table in {"payrolls", "payroll_items", "outbox", "idempotency_keys"}
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))  # a fixed set of names, above
