"""Operators' endpoints (an operator's key, never an employer's): settling NEEDS_REVIEW items."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import auth, body, render, schemas, state
from shared import resolutions


async def resolve_items(request: Request) -> Response:
    """`POST /ops/items/resolve`: every item of the body resolved in one transaction, or none."""
    operator = auth.operator(request)
    data = schemas.validate(schemas.ResolveItemsIn, await body.read_json(request))
    outcome = await resolutions.resolve(
        state.of(request)["pool"], operator.id, [i.to_resolution() for i in data.items], data.note
    )
    return JSONResponse(render.resolved(outcome))
