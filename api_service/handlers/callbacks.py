"""`GET /employer/callback`: the employer's own callback configuration, never its secret."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import auth, state
from shared import events

SIGNATURE = "Payrun-Signature: t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"


async def get_callback(request: Request) -> Response:
    config = await events.callback_config(state.of(request)["pool"], auth.employer(request).id)
    if config is None:
        return JSONResponse({"url": None, "signature": None, "created_at": None, "updated_at": None})
    return JSONResponse(
        {
            "url": config.url,
            "signature": SIGNATURE,
            "created_at": config.created_at.isoformat(),
            "updated_at": config.updated_at.isoformat(),
        }
    )
