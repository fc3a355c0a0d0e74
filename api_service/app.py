"""The composition root of the API: `create_app(settings)` builds the app; its lifespan builds the pool.

The lifespan refuses to start on a database whose schema is behind this code (`payrun migrate` first).
Resources reach handlers through the lifespan state (api_service/state.py), never module globals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware

from api_service import errors, keys, middleware, routes, state, throttle
from shared import db, migrate
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

POOL_MIN, POOL_MAX = 2, 20


async def open_pool(
    settings: Settings, *, min_size: int = POOL_MIN, max_size: int = POOL_MAX
) -> asyncpg.Pool:
    """The API's pool. A request waits at most API_DB_ACQUIRE_TIMEOUT_S for a connection, then gets a 503
    with Retry-After: a client retrying later beats a queue of requests that all time out at the client."""
    return await db.create_pool(
        settings.require_database_url(),
        min_size=min_size,
        max_size=max_size,
        acquire_timeout_s=settings.api_db_acquire_timeout_s,
    )


def create_app(settings: Settings, *, pool: asyncpg.Pool | None = None) -> Starlette:
    """The API app. With `pool` (tests; `open_pool` makes one as the API would), the app uses it and leaves
    closing it to the caller."""
    key_throttle = throttle.KeyThrottle(settings.api_key_rate, settings.api_key_burst)
    key_book = keys.KeyBook(
        failure_rate=settings.api_auth_failure_rate, failure_burst=settings.api_auth_failure_burst
    )
    operator_book = keys.OperatorBook(
        failure_rate=settings.api_auth_failure_rate, failure_burst=settings.api_auth_failure_burst
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[state.State]:
        owned = pool is None
        the_pool = pool or await open_pool(settings)
        try:
            async with the_pool.acquire() as conn:
                await migrate.ensure_current(conn)
            log.info("api_started", host=settings.api_host, port=settings.api_port)
            yield {
                "settings": settings,
                "pool": the_pool,
                "throttle": key_throttle,
                "keys": key_book,
                "operator_keys": operator_book,
            }
        finally:
            if owned:
                await the_pool.close()
            log.info("api_stopped")

    return Starlette(
        routes=routes.ROUTES,
        middleware=[Middleware(middleware.RequestContext)],
        exception_handlers=errors.handlers(),
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """For API_WORKERS > 1: uvicorn starts each worker process from this factory."""
    from shared.logging import configure

    settings = Settings.from_env()
    configure(settings.log_level, settings.log_format)
    return create_app(settings)
