"""Per-request context: a request id on every log line and in `X-Request-ID`, one `request_finished` line.

A plain ASGI middleware (not BaseHTTPMiddleware), so the handler runs in this task and the structlog
contextvars bound here (and the employer_id bound by auth) are on every line it logs. Bodies are never logged.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.logging import get_logger

log = get_logger("api_service.request")

_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


def request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            employer_id = structlog.contextvars.get_contextvars().get("employer_id")
            log.info(
                "request_finished", method=scope["method"], path=scope["path"], route=route, status=status,
                duration_ms=round(seconds * 1000, 1), employer_id=employer_id,
            )  # fmt: skip
            metrics.HTTP_DURATION.labels(route, scope["method"], str(status)).observe(seconds)
            structlog.contextvars.clear_contextvars()
