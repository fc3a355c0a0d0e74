"""The route table, and nothing else: which path and method runs which endpoint, and which need which key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api_service import dashboard
from api_service.auth import operator_only, protected
from api_service.handlers import callbacks, console, ops, payrolls, review, webhooks

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**endpoints: Endpoint) -> Endpoint:
    """One path, several methods: so a wrong method gets a 405 whose `Allow` lists them all."""
    if "GET" in endpoints:
        endpoints.setdefault("HEAD", endpoints["GET"])

    async def endpoint(request: Request) -> Response:
        return await endpoints[request.method](request)

    return endpoint


ROUTES = [
    # Open: no API key.
    Route("/healthz", ops.healthz, methods=["GET"], name="healthz"),
    Route("/readyz", ops.readyz, methods=["GET"], name="readyz"),
    Route("/openapi.json", ops.openapi_json, methods=["GET"], name="openapi"),
    Route("/metrics", ops.metrics_text, methods=["GET"], name="metrics"),
    # The dashboard (an HTML page, not part of the JSON API): the page asks for a key and sends it itself.
    Route("/", dashboard.page, methods=["GET"], name="dashboard", include_in_schema=False),
    Route("/ops", dashboard.console_page, methods=["GET"], name="console", include_in_schema=False),
    Route(
        "/dashboard/{name}", dashboard.asset, methods=["GET"], name="dashboard_asset", include_in_schema=False
    ),
    # IntaSend's callbacks: authenticated by the configured challenge, not by an API key.
    Route("/webhooks/intasend", webhooks.intasend, methods=["POST"], name="intasend_webhook"),
    # An employer's API key.
    Route(
        "/payrolls",
        protected(by_method(GET=payrolls.list_payrolls, POST=payrolls.create_payroll)),
        methods=["GET", "POST"],
        name="payrolls",
    ),
    Route(
        "/payrolls/{payroll_id}",
        protected(by_method(GET=payrolls.get_payroll, DELETE=payrolls.delete_payroll)),
        methods=["GET", "DELETE"],
        name="payroll",
    ),
    Route(
        "/payrolls/{payroll_id}/retry",
        protected(payrolls.retry_payroll),
        methods=["POST"],
        name="retry_payroll",
    ),
    Route(
        "/payrolls/{payroll_id}/cancel",
        protected(payrolls.cancel_payroll),
        methods=["POST"],
        name="cancel_payroll",
    ),
    Route(
        "/payrolls/{payroll_id}/items", protected(payrolls.list_items), methods=["GET"], name="payroll_items"
    ),
    Route(
        "/payrolls/{payroll_id}/items.csv",
        protected(payrolls.items_csv),
        methods=["GET"],
        name="payroll_items_csv",
    ),
    Route(
        "/payrolls/{payroll_id}/process",
        protected(payrolls.process_payroll),
        methods=["POST"],
        name="process_payroll",
    ),
    Route(
        "/payrolls/{payroll_id}/status",
        protected(payrolls.payroll_status),
        methods=["GET"],
        name="payroll_status",
    ),
    # The seed's routes, kept for the existing payroll UI (docs/api.md section 4).
    Route(
        "/payroll/process",
        protected(payrolls.process_payroll_seed),
        methods=["POST"],
        name="process_payroll_seed",
    ),
    Route(
        "/payroll/status/{payroll_id}",
        protected(payrolls.payroll_status),
        methods=["GET"],
        name="payroll_status_seed",
    ),
    Route("/employer/callback", protected(callbacks.get_callback), methods=["GET"], name="employer_callback"),
    # An operator's key (`payrun operator create`), never an employer's.
    Route(
        "/ops/items/resolve",
        operator_only(review.resolve_items),
        methods=["POST"],
        name="resolve_items",
    ),
    # The operator console's data (read-only), and a retry and a cancel on behalf of the payroll's employer.
    Route("/ops/overview", operator_only(console.overview), methods=["GET"], name="ops_overview"),
    Route("/ops/payrolls", operator_only(console.list_payrolls), methods=["GET"], name="ops_payrolls"),
    Route("/ops/items", operator_only(console.list_items), methods=["GET"], name="ops_items"),
    Route("/ops/outbox", operator_only(console.list_outbox), methods=["GET"], name="ops_outbox"),
    Route("/ops/actions", operator_only(console.list_actions), methods=["GET"], name="ops_actions"),
    Route(
        "/ops/payrolls/{payroll_id}/retry",
        operator_only(console.retry_payroll),
        methods=["POST"],
        name="ops_retry_payroll",
    ),
    Route(
        "/ops/payrolls/{payroll_id}/cancel",
        operator_only(console.cancel_payroll),
        methods=["POST"],
        name="ops_cancel_payroll",
    ),
    Route(
        "/ops/items/recheck",
        operator_only(review.recheck_items),
        methods=["POST"],
        name="recheck_items",
    ),
]
