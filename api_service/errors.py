"""THE mapping of payrun errors to HTTP: one table, one RFC 9457 renderer, registered as exception handlers.

The lookup walks the exception's MRO, so a new subclass of a mapped error inherits its status. Handlers raise
`shared.errors.*` and never build HTTP errors themselves. The router's own 404/405 and the database being
unreachable are rendered here too, so every error a client sees is `application/problem+json`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from shared import errors
from shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE = "urn:payrun:problem:"

# error → (HTTP status, problem type slug, title)
TABLE: dict[type[errors.PayrunError], tuple[int, str, str]] = {
    errors.MalformedBody: (400, "malformed-body", "Malformed request body"),
    errors.Unauthenticated: (401, "unauthenticated", "Unauthenticated"),
    errors.NotFound: (404, "not-found", "Not found"),
    errors.PayrollNotFound: (404, "payroll-not-found", "Payroll not found"),
    errors.ItemNotFound: (404, "item-not-found", "Item not found"),
    errors.ItemNotInReview: (409, "item-not-in-review", "Item not awaiting review"),
    errors.NothingToRecheck: (409, "nothing-to-recheck", "Nothing to re-check"),
    errors.DuplicateReference: (409, "duplicate-reference", "Duplicate reference"),
    errors.PayrollFinal: (409, "payroll-final", "Payroll already finished"),
    errors.PayrollNotProcessing: (409, "payroll-not-processing", "Payroll not processing"),
    errors.PayrollNotDraft: (409, "payroll-not-draft", "Payroll not a draft"),
    errors.PayrollNotFinal: (409, "payroll-not-final", "Payroll not finished"),
    errors.NothingToRetry: (409, "nothing-to-retry", "Nothing to retry"),
    errors.AlreadyRetried: (409, "already-retried", "Payroll already retried"),
    errors.IdempotencyKeyInFlight: (409, "idempotency-key-in-flight", "Idempotency-Key in use"),
    errors.BodyTooLarge: (413, "body-too-large", "Request body too large"),
    errors.UnsupportedMediaType: (415, "unsupported-media-type", "Unsupported media type"),
    errors.InvalidRequest: (422, "validation-error", "Invalid request"),
    errors.IdempotencyKeyReused: (422, "idempotency-key-reused", "Idempotency-Key reused"),
    errors.Throttled: (429, "throttled", "Too many requests"),
    errors.SchemaNotCurrent: (503, "schema-not-current", "Database schema not current"),
    errors.DatabaseBusy: (503, "database-busy", "Database busy"),
    errors.DatabaseUnavailable: (503, "database-unavailable", "Database unavailable"),
    errors.PayrunError: (500, "internal-error", "Internal error"),
}

# Raised from the database driver when PostgreSQL cannot be reached or will not serve: a 503, not a 500.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,  # connection refused/reset, and TimeoutError (pool acquire, command timeout)
    asyncpg.InterfaceError,  # pool closing, connection lost
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.InsufficientResourcesError,  # 53xxx, too many connections
    asyncpg.OperatorInterventionError,  # 57xxx, shutdown, cannot connect now, query canceled
    # A pooled connection the server closed while it sat idle (restart, pg_terminate_backend): its next use
    # fails with "cannot switch to state …; another operation is in progress", and the pool replaces it.
    asyncpg.InternalClientError,
)

# Problem members a context entry (`PayrunError(..., payroll_id=...)`) may not overwrite.
_RESERVED = {"type", "title", "status", "detail", "errors"}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": _TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


def lookup(exc: errors.PayrunError) -> tuple[int, str, str]:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return TABLE[errors.PayrunError]


def render(exc: errors.PayrunError) -> JSONResponse:
    status, slug, title = lookup(exc)
    extra: dict[str, Any] = {k: str(v) for k, v in exc.context.items() if k not in _RESERVED}
    headers: dict[str, str] = {}
    if isinstance(exc, errors.InvalidRequest):
        extra["errors"] = exc.errors
    elif isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="payrun"'
    elif isinstance(exc, errors.Throttled):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    elif isinstance(exc, errors.DatabaseBusy):
        headers["Retry-After"] = "1"  # every connection was in use: a moment later one usually is free
    elif status == 503:
        headers["Retry-After"] = "5"
    if status >= 500:
        log.error("request_error", error=type(exc).__name__, detail=exc.message)
    return problem(status, slug, title, exc.message, extra=extra, headers=headers)


async def payrun_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.PayrunError)
    return render(exc)


async def http_error(_request: Request, exc: Exception) -> Response:
    """The router's own errors: no route (404), wrong method (405, with `Allow`)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, "not-found", "Not found", "there is no such route")
    slug = "method-not-allowed" if exc.status_code == 405 else "http-error"
    return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), headers=exc.headers)


async def database_down(_request: Request, exc: Exception) -> Response:
    log.warning("database_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
    return render(errors.DatabaseUnavailable())


async def client_gone(_request: Request, _exc: Exception) -> Response:
    return render(errors.MalformedBody("the client closed the connection before sending the whole body"))


async def server_error(_request: Request, exc: Exception) -> Response:
    """Last resort (a bug): the traceback goes to the log, the client gets a problem document."""
    log.error("unhandled_error", error=type(exc).__name__, exc_info=exc)
    return problem(500, "internal-error", "Internal error", "something went wrong on our side")


def handlers() -> dict[Any, Any]:
    table: dict[Any, Any] = {
        errors.PayrunError: payrun_error,
        HTTPException: http_error,
        ClientDisconnect: client_gone,
        Exception: server_error,
    }
    table.update(dict.fromkeys(DATABASE_DOWN, database_down))
    return table
