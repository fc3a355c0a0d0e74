"""IntaSend's callbacks: authenticated by the configured challenge, idempotent, and never trusted alone.

A callback does not set any state. It is kept for audit and makes the dispatcher ask IntaSend for the batch's
status sooner; the status response decides, so a forged, repeated or out-of-order callback changes nothing.

IntaSend sends the challenge inside the JSON body (no header, no signature), so the body is read up to a cap
sized for the batches payrun sends, and the challenge is found in the raw bytes before anything is parsed:
a sender without it costs one bounded read and one regular-expression scan, never a JSON parse.
"""

from __future__ import annotations

import functools
import hmac
import json
import re

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import body, state
from shared import batches, errors

log = structlog.get_logger(__name__)

# Each callback is the whole batch object, every transaction included. The largest transaction object of
# IntaSend's 2025 example, with every text at its longest, is 921 bytes (1,048 pretty-printed): 2 KiB each
# is twice that, and 64 KiB covers the batch's own fields and wallet. 500 items: 1,064 KiB (was 8 MiB).
CALLBACK_BASE_BYTES = 64 * 1024
CALLBACK_BYTES_PER_TRANSACTION = 2 * 1024
# How many "challenge" members a body may offer before it is refused unparsed.
_MAX_CANDIDATES = 4


class CallbackRefused(errors.Unauthenticated):
    """The callback does not carry the configured challenge."""


def max_callback_bytes(batch_size: int) -> int:
    return CALLBACK_BASE_BYTES + CALLBACK_BYTES_PER_TRANSACTION * batch_size


@functools.lru_cache(maxsize=4)
def _challenge_member(expected: str) -> re.Pattern[bytes]:
    # A JSON string no longer than the challenge written with every character escaped (\uXXXX, 6 bytes).
    return re.compile(rb'"challenge"\s*:\s*("(?:[^"\\]|\\.){0,%d}")' % (6 * len(expected)))


def _same(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _carries_challenge(raw: bytes, expected: str) -> bool:
    """Whether some `"challenge": "..."` member of the unparsed body holds the challenge (a pre-check: the
    parsed body's top-level member decides)."""
    for n, found in enumerate(_challenge_member(expected).finditer(raw)):
        if n == _MAX_CANDIDATES:
            return False
        try:
            if _same(json.loads(found.group(1)), expected):
                return True
        except ValueError:
            continue
    return False


async def intasend(request: Request) -> Response:
    resources = state.of(request)
    settings = resources["settings"]
    expected = settings.intasend_webhook_challenge
    if not expected:
        raise CallbackRefused("callbacks are refused: INTASEND_WEBHOOK_CHALLENGE is not configured")
    raw = await body.read_bytes(request, max_callback_bytes(settings.intasend_batch_size))
    if not _carries_challenge(raw, expected):
        raise CallbackRefused()
    payload = body.parse_json(raw)
    if not isinstance(payload, dict) or not _same(payload.get("challenge"), expected):
        raise CallbackRefused()
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
