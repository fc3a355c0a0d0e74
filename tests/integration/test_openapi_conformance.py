"""The OpenAPI document tells the truth: schemathesis generates requests from `GET /openapi.json` and sends
them to the ASGI app (on a fresh database, with a valid employer key; the /ops/ routes get an operator's key), and every one of its checks holds:
no 5xx, every status code and content type and header documented, every body as its schema says, and a
request the schema allows is accepted (so the schema states the API's real constraints: patterns, lengths,
enums). Deterministic (derandomize) and bounded (max_examples per operation) so CI is stable."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig

from api_service import idempotency, openapi, render
from api_service.app import create_app
from shared import employers, operators, payrolls
from tests.integration import api_support as api

load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())

# A cursor is opaque (openapi.py says so with a format of its own): generate ones this API could give out.
schemathesis.openapi.format(
    openapi.CURSOR_FORMAT,
    st.builds(render.encode_cursor, st.datetimes(timezones=st.just(UTC)), st.uuids()),
)
schemathesis.openapi.format(
    openapi.ITEM_CURSOR_FORMAT,
    st.builds(render.encode_item_cursor, st.integers(min_value=0, max_value=render.MAX_POSITION)),
)
schemathesis.openapi.format(
    openapi.ID_CURSOR_FORMAT,
    st.builds(render.encode_id_cursor, st.integers(min_value=0, max_value=render.MAX_ID)),
)


# A random payroll id is only ever a 404: on these routes, about half the valid (positive) examples ask for
# a payroll that exists (the employer's, see `employer_key`), so their 200 answers are checked against the
# document too. A hook rather than a line in the test below: hypothesis derives its (derandomized) examples
# from the test function's source, and the other operations' examples are left as they were.
EXISTING_PAYROLL_ROUTES = {"/payrolls/{payroll_id}/items", "/payrolls/{payroll_id}/items.csv"}
EXISTING_PAYROLL: dict[str, str] = {}


@schemathesis.hook
def before_call(_ctx: Any, case: Any, _kwargs: dict[str, Any]) -> None:
    meta = case.meta
    positive = meta is None or meta.generation.mode.is_positive
    if (
        positive
        and case.path in EXISTING_PAYROLL_ROUTES
        and zlib.crc32(repr(case.path_parameters).encode()) % 2
    ):
        case.path_parameters = {**case.path_parameters, "payroll_id": EXISTING_PAYROLL["id"]}


@pytest.fixture
async def employer_key(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        employer = await employers.create(conn, "Schema Ltd")
        items = tuple(
            payrolls.NewItem(name, f"25471200000{n}", Decimal(amount), payrolls.Provider.MPESA_B2C)
            for n, (name, amount) in enumerate([('Jane, "JJ"', "15000"), ("=1+1", "10"), ("John", "20")])
        )
        payroll, _ = await payrolls.create(
            conn, uuid.UUID(employer["id"]), payrolls.NewPayroll("SCHEMA-1", "KES", items)
        )
        EXISTING_PAYROLL["id"] = str(payroll.id)
        return employer["api_key"]
    finally:
        await conn.close()


@pytest.fixture
async def operator_key(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return (await operators.create(conn, "schema.operator"))["api_key"]
    finally:
        await conn.close()


class _TheApp:
    """The ASGI app schemathesis sends every request to (its checks' own probes too): the current test's.

    The /ops/ routes take an operator's key (their `security` says so), the others an employer's: a request to
    /ops/ carrying the test's employer key carries the test's operator key instead (any other Authorization,
    or none, is left as schemathesis made it). Done here rather than in the test function, whose source seeds
    the derandomized examples of every operation."""

    app: Any = None
    swap: tuple[bytes, bytes] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ops/") and self.swap:
            employer, operator = self.swap
            scope = {
                **scope,
                "headers": [
                    (name, operator if name == b"authorization" and value == employer else value)
                    for name, value in scope["headers"]
                ],
            }
        await self.app(scope, receive, send)


THE_APP = _TheApp()


@pytest.fixture
def app(database_url: str, employer_key: str, operator_key: str) -> Iterator[Any]:
    # schemathesis runs the app (and its lifespan, which opens the pool) on an event loop of its own, and
    # ends the lifespan when the test ends.
    THE_APP.app = create_app(api.settings(database_url))
    THE_APP.swap = (f"Bearer {employer_key}".encode(), f"Bearer {operator_key}".encode())
    yield THE_APP
    THE_APP.app, THE_APP.swap = None, None


# The document the app serves at GET /openapi.json (handlers/ops.py serves openapi.document() as it is),
# loaded at collection; the requests go to the current test's app. (schemathesis.pytest.from_fixture would
# load it from the app, but fails on pytest 9: it reads `request.node._nodeid`.)
# A cursor is opaque: only the fuzzing phase generates it from its format (above); the coverage phase, which
# walks the schema's boundaries, would send strings that merely match its pattern.
schema = schemathesis.openapi.from_dict(
    openapi.document(),
    config=SchemathesisConfig.from_dict(
        {
            "operations": [
                {
                    "include-path": path,
                    "include-method": "GET",
                    "phases": {"coverage": {"enabled": False}},
                }
                for path in (
                    "/payrolls",
                    "/payrolls/{payroll_id}/items",
                    "/ops/payrolls",
                    "/ops/items",
                    "/ops/outbox",
                )
            ]
        }
    ),
)
schema.app = THE_APP


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_does_what_its_openapi_document_says(case: Any, app: Any, employer_key: str) -> None:
    key = (case.headers or {}).get(idempotency.HEADER)
    if key is not None:
        # A key is single-use: reused with another request it is a 422, by design, and "not used before" is
        # not something a schema can state. Every example gets a key of its own, still of the schema's form.
        case.headers[idempotency.HEADER] = f"{key[:200]}-{uuid.uuid4().hex}"
    case.call_and_validate(headers=api.auth(employer_key), checks=ALL_CHECKS)
