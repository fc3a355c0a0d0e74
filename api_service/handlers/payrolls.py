"""Payroll endpoints: parse and validate, call one repository function, render. No business rule lives here."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from api_service import auth, body, export, idempotency, render, schemas, state
from shared import cancellation, db, errors, funds, payrolls


def _payroll_id(request: Request) -> uuid.UUID:
    """The `{payroll_id}` path segment; a malformed one is a payroll that does not exist (404)."""
    try:
        return uuid.UUID(request.path_params["payroll_id"])
    except ValueError:
        raise errors.PayrollNotFound() from None


async def create_payroll(request: Request) -> Response:
    employer, key = auth.employer(request), idempotency.key_of(request)
    data = schemas.validate(schemas.CreatePayrollIn, await body.read_json(request))
    command = data.to_command()
    # Only a request with an Idempotency-Key is compared with an earlier one: a 10,000-item body is not
    # serialised again for nothing.
    request_hash = (
        idempotency.fingerprint("POST", "/payrolls", idempotency.canonical(data.model_dump(mode="json")))
        if key is not None
        else b""
    )

    async def work(conn: db.Connection) -> idempotency.Reply:
        payroll, items = await payrolls.create(conn, employer.id, command)
        headers = {"Location": render.payroll_path(payroll.id)}
        return idempotency.Reply(201, render.payroll_detail(payroll, items), headers)

    return await idempotency.run(state.of(request)["pool"], employer.id, key, request_hash, work)


async def delete_payroll(request: Request) -> Response:
    """`DELETE /payrolls/{id}`: a DRAFT and its items; 404 once it is gone, 409 when it is not a DRAFT."""
    employer, payroll_id = auth.employer(request), _payroll_id(request)
    async with state.of(request)["pool"].acquire() as conn:
        await payrolls.delete_draft(conn, employer.id, payroll_id)
    return Response(status_code=204)


async def retry_payroll(request: Request) -> Response:
    """`POST /payrolls/{id}/retry`: a new DRAFT of a final payroll's FAILED items (body optional)."""
    employer, key = auth.employer(request), idempotency.key_of(request)
    payroll_id = _payroll_id(request)
    raw = await body.read_optional_json(request)
    data = schemas.validate(schemas.RetryPayrollIn, {} if raw is None else raw)
    request_hash = idempotency.fingerprint(
        "POST", f"/payrolls/{payroll_id}/retry", idempotency.canonical(data.model_dump(mode="json"))
    )

    async def work(conn: db.Connection) -> idempotency.Reply:
        payroll, items = await payrolls.retry_failed(conn, employer.id, payroll_id, data.reference)
        headers = {"Location": render.payroll_path(payroll.id)}
        return idempotency.Reply(201, render.payroll_detail(payroll, items), headers)

    return await idempotency.run(state.of(request)["pool"], employer.id, key, request_hash, work)


async def _process(request: Request, payroll_id: uuid.UUID, request_hash: bytes, key: str | None) -> Response:
    employer, resources = auth.employer(request), state.of(request)
    batch_size = resources["settings"].intasend_batch_size

    async def work(conn: db.Connection) -> idempotency.Reply:
        await payrolls.start_processing(conn, employer.id, payroll_id, batch_size=batch_size)
        headers = {"Location": render.status_path(payroll_id)}
        return idempotency.Reply(202, render.processing_accepted(payroll_id), headers)

    return await idempotency.run(resources["pool"], employer.id, key, request_hash, work)


async def process_payroll(request: Request) -> Response:
    """`POST /payrolls/{id}/process`: its body, if any, is not read."""
    key = idempotency.key_of(request)
    payroll_id = _payroll_id(request)
    request_hash = idempotency.fingerprint(
        "POST", f"/payrolls/{payroll_id}/process"
    )  # the id's canonical form
    return await _process(request, payroll_id, request_hash, key)


async def process_payroll_seed(request: Request) -> Response:
    """`POST /payroll/process` with `{"payroll_id": ...}`: the seed UI's route, exactly as process_payroll."""
    key = idempotency.key_of(request)
    data = schemas.validate(schemas.ProcessPayrollIn, await body.read_json(request))
    request_hash = idempotency.fingerprint("POST", "/payroll/process", str(data.payroll_id))
    return await _process(request, data.payroll_id, request_hash, key)


async def cancel_payroll(request: Request) -> Response:
    """`POST /payrolls/{id}/cancel`: its body, if any, is not read. Naturally idempotent; Idempotency-Key
    replays the first answer."""
    employer, key = auth.employer(request), idempotency.key_of(request)
    payroll_id = _payroll_id(request)
    request_hash = idempotency.fingerprint("POST", f"/payrolls/{payroll_id}/cancel")

    async def work(conn: db.Connection) -> idempotency.Reply:
        result = await cancellation.cancel(conn, employer.id, payroll_id)
        return idempotency.Reply(200, render.cancelled(result), {"Location": render.status_path(payroll_id)})

    return await idempotency.run(state.of(request)["pool"], employer.id, key, request_hash, work)


async def get_payroll(request: Request) -> Response:
    employer, payroll_id = auth.employer(request), _payroll_id(request)
    async with state.of(request)["pool"].acquire() as conn:
        payroll, items = await payrolls.get_with_items(conn, employer.id, payroll_id)
        wait = await _funds_wait(conn, payroll)
    return JSONResponse(render.payroll_detail(payroll, items, wait))


async def _funds_wait(conn: db.Executor, payroll: payrolls.Payroll) -> funds.FundsWait | None:
    if payroll.status != payrolls.PayrollStatus.PROCESSING:
        return None
    return await funds.payroll_wait(conn, payroll.id)


async def list_payrolls(request: Request) -> Response:
    """`GET /payrolls`: one page, newest first. The ETag is the page's body's (as for items), so a page that
    refreshes its list every few seconds gets a 304 without the body while nothing changed."""
    employer = auth.employer(request)
    query = schemas.validate(schemas.ListPayrollsQuery, dict(request.query_params))
    after = render.decode_cursor(query.cursor) if query.cursor else None
    status = payrolls.PayrollStatus(query.status) if query.status else None
    found = await payrolls.list_page(
        state.of(request)["pool"], employer.id, status=status, limit=query.limit, after=after
    )
    return _with_body_etag(request, JSONResponse(render.page(found)))


def _with_body_etag(request: Request, response: JSONResponse) -> Response:
    """The response with its body's ETag, or a 304 without the body when `If-None-Match` names it."""
    headers = {"ETag": render.body_etag(response.body), "Cache-Control": "no-cache"}
    if render.etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return response


async def list_items(request: Request) -> Response:
    """`GET /payrolls/{id}/items`: one page of items in position order. The ETag is the page's body's, so a
    client re-reading a page that has not changed gets a 304 without the body."""
    employer, payroll_id = auth.employer(request), _payroll_id(request)
    query = schemas.validate(schemas.ListItemsQuery, dict(request.query_params))
    after = render.decode_item_cursor(query.cursor) if query.cursor else None
    status = payrolls.ItemStatus(query.status) if query.status else None
    found = await payrolls.items_page(
        state.of(request)["pool"], employer.id, payroll_id, status=status, limit=query.limit, after=after
    )
    return _with_body_etag(request, JSONResponse(render.item_page(found)))


async def items_csv(request: Request) -> Response:
    """`GET /payrolls/{id}/items.csv`: every item, streamed in pages of export.PAGE_SIZE. The first page is
    read before the response starts, so an unknown payroll is still a 404."""
    employer, payroll_id = auth.employer(request), _payroll_id(request)
    pool = state.of(request)["pool"]

    async def page_after(after: int | None) -> payrolls.ItemPage:
        return await payrolls.items_page(
            pool, employer.id, payroll_id, status=None, limit=export.PAGE_SIZE, after=after
        )

    first = await page_after(None)
    headers = {
        "Content-Disposition": export.content_disposition(first.reference),
        "Cache-Control": "no-store",
    }
    # HEAD: the same headers (no Content-Length, as GET sends none), and no page read after the first.
    content = export.nothing() if request.method == "HEAD" else export.stream(first, page_after)
    return StreamingResponse(content, media_type=export.MEDIA_TYPE, headers=headers)


async def payroll_status(request: Request) -> Response:
    """The polling endpoint: ETag / If-None-Match → 304, and Retry-After while PROCESSING."""
    employer, payroll_id = auth.employer(request), _payroll_id(request)
    pool = state.of(request)["pool"]
    summary = await payrolls.status_summary(pool, employer.id, payroll_id)
    wait = None
    if summary.status == payrolls.PayrollStatus.PROCESSING:
        wait = await funds.payroll_wait(pool, payroll_id)
    etag = render.status_etag(summary, wait)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if summary.status == payrolls.PayrollStatus.PROCESSING:
        headers["Retry-After"] = "2"
    if render.etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(render.status(summary, wait), headers=headers)
