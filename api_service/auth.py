"""`Authorization: Bearer <api_key>`: who the employer is, then that key's throttle.

Every route but the open ones (health, readiness, metrics, the OpenAPI document, webhooks) is wrapped in
`protected` (an employer's key) or `operator_only` (an operator's key, the /ops/ routes): each looks the key
up in its own table, so neither kind of key opens the other's routes (401). A missing or unknown key is a 401, and too many unknown keys from one client a 429 (keys.py says
how unknown keys are kept from costing a query each); the key itself is never logged, only the employer's id.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from starlette.requests import Request
from starlette.responses import Response

from api_service import keys, state
from shared import employers, errors, operators

Endpoint = Callable[[Request], Awaitable[Response]]
_SCOPE_KEY = "payrun.employer"
_OPERATOR_SCOPE_KEY = "payrun.operator"
_MAX_KEY_LENGTH = 512


def _api_key(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise errors.Unauthenticated()
    if len(key) > _MAX_KEY_LENGTH:
        raise errors.Unauthenticated("the API key is not valid")
    return key


class _Holder(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


H = TypeVar("H", bound=_Holder)


async def _authenticated(request: Request, book: keys.Book[H], log_as: str) -> H:
    """Whoever the request's key belongs to in `book`, after that key's throttle lets it through."""
    key = _api_key(request)
    resources = state.of(request)
    client = request.client.host if request.client else "unknown"
    found = await book.holder(resources["pool"], key, client)
    structlog.contextvars.bind_contextvars(**{log_as: str(found.id)})
    await resources["throttle"].check(employers.hash_key(key))
    return found


def _guard(
    authenticate: Callable[[Request], Awaitable[object]], scope_key: str
) -> Callable[[Endpoint], Endpoint]:
    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            request.scope[scope_key] = await authenticate(request)
            return await endpoint(request)

        return wrapper

    return wrap


async def authenticate(request: Request) -> employers.Employer:
    """The employer whose key the request carries, after that key's throttle lets it through."""
    return await _authenticated(request, state.of(request)["keys"], "employer_id")


async def authenticate_operator(request: Request) -> operators.Operator:
    """The operator whose key the request carries, after that key's throttle lets it through."""
    return await _authenticated(request, state.of(request)["operator_keys"], "operator_id")


# Wrap a route's endpoint so it runs only for an authenticated, unthrottled employer (or operator).
protected = _guard(authenticate, _SCOPE_KEY)
operator_only = _guard(authenticate_operator, _OPERATOR_SCOPE_KEY)


def employer(request: Request) -> employers.Employer:
    """The employer `protected` authenticated for this request."""
    found: employers.Employer = request.scope[_SCOPE_KEY]
    return found


def operator(request: Request) -> operators.Operator:
    """The operator `operator_only` authenticated for this request."""
    found: operators.Operator = request.scope[_OPERATOR_SCOPE_KEY]
    return found
