"""Operations endpoints, open to all: liveness, readiness, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import errors as http_errors
from api_service import openapi, state
from shared import errors, metrics, migrate

READY_TIMEOUT_S = 2.0
# Not ready: the database is down (what the API answers 503 for), or answers with any error at all.
_NOT_READY: tuple[type[BaseException], ...] = (*http_errors.DATABASE_DOWN, asyncpg.PostgresError)


async def healthz(_request: Request) -> Response:
    """The process is up (it does not touch the database)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The database answers and its schema is current: 200, else 503."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), state.of(request)["pool"].acquire() as conn:
            await migrate.ensure_current(conn)
    except errors.SchemaNotCurrent:
        raise
    except _NOT_READY as exc:
        raise errors.DatabaseUnavailable(f"the database cannot be reached: {type(exc).__name__}") from None
    return JSONResponse({"status": "ok"})


async def metrics_text(request: Request) -> Response:
    """Prometheus metrics: this process's, and the outbox backlog read from the database."""
    body, content_type = await metrics.exposition(state.of(request)["pool"])
    return Response(body, media_type=content_type)


async def openapi_json(_request: Request) -> Response:
    return JSONResponse(openapi.document())
