"""IntaSend's callbacks: authenticated by the configured challenge, idempotent, and never trusted alone.

A callback does not set any state. It is kept for audit and makes the dispatcher ask IntaSend for the batch's
status sooner; the status response decides, so a forged, repeated or out-of-order callback changes nothing.
"""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import body, state
from shared import batches, errors

log = structlog.get_logger(__name__)


class CallbackRefused(errors.Unauthenticated):
    """The callback does not carry the configured challenge."""


def _check_challenge(expected: str | None, payload: Any) -> None:
    if not expected:
        raise CallbackRefused("callbacks are refused: INTASEND_WEBHOOK_CHALLENGE is not configured")
    given = payload.get("challenge") if isinstance(payload, dict) else None
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CallbackRefused()


async def intasend(request: Request) -> Response:
    resources = state.of(request)
    payload = await body.read_json(request)
    _check_challenge(resources["settings"].intasend_webhook_challenge, payload)
    tracking_id = payload.get("tracking_id")
    if not isinstance(tracking_id, str) or not tracking_id.strip():
        raise errors.InvalidRequest(
            "the callback has no tracking_id", errors=[{"field": "tracking_id", "message": "required"}]
        )
    status_code = str(payload.get("status_code") or "")[:20]
    stored = {k: v for k, v in payload.items() if k != "challenge"}
    noted = await batches.note_callback(resources["pool"], tracking_id.strip(), status_code, stored)
    log.info("provider_callback", tracking_id=tracking_id, status_code=status_code, **noted)
    return JSONResponse({"received": True})
