"""Operators' endpoints (an operator's key, never an employer's): settling and re-checking NEEDS_REVIEW items."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import auth, body, render, schemas, state
from shared import rechecks, resolutions


async def resolve_items(request: Request) -> Response:
    """`POST /ops/items/resolve`: every item of the body resolved in one transaction, or none."""
    operator = auth.operator(request)
    data = schemas.validate(schemas.ResolveItemsIn, await body.read_json(request))
    outcome = await resolutions.resolve(
        state.of(request)["pool"], operator.id, [i.to_resolution() for i in data.items], data.note
    )
    return JSONResponse(render.resolved(outcome))


async def recheck_items(request: Request) -> Response:
    """`POST /ops/items/recheck`: the items' (or the payroll's) batches asked of IntaSend now, all or none."""
    auth.operator(request)
    data = schemas.validate(schemas.RecheckItemsIn, await body.read_json(request))
    scheduled = await rechecks.due_now(
        state.of(request)["pool"], item_ids=data.item_ids or (), payroll_id=data.payroll_id
    )
    return JSONResponse(render.rechecks_due(scheduled))
