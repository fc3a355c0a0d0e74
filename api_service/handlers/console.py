"""The operator console's JSON (an operator's key, never an employer's): read-only views of every employer's
payrolls, items and outbox rows, and a retry or a cancel of a payroll on its employer's behalf. The page
itself is api_service/dashboard (`GET /ops`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_service import auth, body, ops_render, ops_schemas, render, schemas, state
from api_service.handlers.payrolls import _payroll_id
from shared import console, funds
from shared.logging import get_logger
from shared.payrolls import PayrollStatus

log = get_logger(__name__)

_OUTBOX_VIEWS: dict[str, tuple[tuple[str, ...], bool]] = {
    "stuck": (("pending", "in_progress"), True),
    "dead": (("dead",), False),
    "pending": (("pending",), False),
    "in_progress": (("in_progress",), False),
    "all": (console.OUTBOX_STATES, False),
}


async def overview(request: Request) -> Response:
    """`GET /ops/overview`: counts, the rate limit and any 429 pause, the last hour per minute, employers."""
    resources = state.of(request)
    async with resources["pool"].acquire() as conn:
        head = await console.overview(conn)
        rate = await console.rate(conn)
        minutes = await console.per_minute(conn)
        employers = await console.employers(conn)
    max_rps = resources["settings"].intasend_max_rps
    return JSONResponse(ops_render.overview(head, rate, minutes, employers, max_rps))


async def list_payrolls(request: Request) -> Response:
    """`GET /ops/payrolls`: every employer's payrolls, newest first; employer, status and reference filters."""
    query = schemas.validate(ops_schemas.OpsPayrollsQuery, dict(request.query_params))
    after = render.decode_cursor(query.cursor) if query.cursor else None
    filters = console.Filters(query.employer_id, query.status, query.q)
    async with state.of(request)["pool"].acquire() as conn:
        page = await console.payroll_page(conn, filters, limit=query.limit, after=after)
        waits = {
            r["id"]: await funds.payroll_wait(conn, r["id"])
            for r in page.rows
            if r["status"] == PayrollStatus.PROCESSING
        }
    return JSONResponse(ops_render.payroll_page(page, waits))


async def list_items(request: Request) -> Response:
    """`GET /ops/items`: every employer's items, newest first; search by phone, name, references."""
    query = schemas.validate(ops_schemas.OpsItemsQuery, dict(request.query_params))
    after = render.decode_id_cursor(query.cursor) if query.cursor else None
    filters = console.Filters(query.employer_id, query.status, query.q)
    page = await console.item_page(state.of(request)["pool"], filters, limit=query.limit, after=after)
    return JSONResponse(ops_render.id_page(page))


async def list_outbox(request: Request) -> Response:
    """`GET /ops/outbox?view=stuck|dead|pending|in_progress|all`: outbox rows, oldest first."""
    query = schemas.validate(ops_schemas.OpsOutboxQuery, dict(request.query_params))
    after = render.decode_id_cursor(query.cursor) if query.cursor else None
    states, stuck_only = _OUTBOX_VIEWS[query.view]
    page = await console.outbox_page(
        state.of(request)["pool"],
        states,
        stuck_only=stuck_only,
        employer_id=query.employer_id,
        limit=query.limit,
        after=after,
    )
    return JSONResponse(ops_render.id_page(page))


async def list_actions(request: Request) -> Response:
    """`GET /ops/actions`: the latest resolutions and retries, newest first."""
    query = schemas.validate(ops_schemas.OpsActionsQuery, dict(request.query_params))
    rows = await console.actions(state.of(request)["pool"], query.limit)
    return JSONResponse(ops_render.actions(rows))


async def retry_payroll(request: Request) -> Response:
    """`POST /ops/payrolls/{id}/retry`: POST /payrolls/{id}/retry on behalf of the payroll's own employer.

    Idempotent without a key: a payroll is retried at most once, and asking again is a 409 naming the retry."""
    operator, payroll_id = auth.operator(request), _payroll_id(request)
    raw = await body.read_optional_json(request)
    data = schemas.validate(schemas.RetryPayrollIn, {} if raw is None else raw)
    async with state.of(request)["pool"].acquire() as conn:
        payroll, items = await console.retry_for_employer(conn, payroll_id, data.reference)
    log.info("operator_retried_payroll", payroll_id=str(payroll_id), retry_id=str(payroll.id),
             operator=operator.name, items=len(items))  # fmt: skip
    headers = {"Location": render.payroll_path(payroll.id)}
    return JSONResponse(render.payroll_detail(payroll, items), status_code=201, headers=headers)


async def cancel_payroll(request: Request) -> Response:
    """`POST /ops/payrolls/{id}/cancel`: POST /payrolls/{id}/cancel on behalf of the payroll's own employer,
    the operator (and an optional note) recorded with the request. Naturally idempotent, as that route."""
    operator, payroll_id = auth.operator(request), _payroll_id(request)
    raw = await body.read_optional_json(request)
    data = schemas.validate(ops_schemas.OpsCancelPayrollIn, {} if raw is None else raw)
    async with state.of(request)["pool"].acquire() as conn:
        result = await console.cancel_for_employer(conn, payroll_id, operator.id, data.note)
    log.info("operator_cancelled_payroll", payroll_id=str(payroll_id), operator=operator.name,
             cancelled_now=result.cancelled_now, payroll_status=str(result.status))  # fmt: skip
    headers = {"Location": render.status_path(payroll_id)}
    return JSONResponse(render.cancelled(result), headers=headers)
