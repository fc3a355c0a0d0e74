"""GET /metrics for one dispatcher on DISPATCHER_METRICS_PORT (off when unset)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from shared import metrics


@asynccontextmanager
async def serving(pool: asyncpg.Pool, host: str, port: int | None) -> AsyncIterator[None]:
    if port is None:
        yield
        return

    async def handle(_request: web.Request) -> web.Response:
        body, content_type = await metrics.exposition(pool)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield
    finally:
        await runner.cleanup()
