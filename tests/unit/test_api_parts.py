"""Small parts of the API without a database: the error table, cursors, ETags, the throttle, the SQL blocks."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api_service import errors as http_errors
from api_service import export, keys, render, throttle
from shared import employers, errors, payrolls, sqlfiles


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.InvalidRequest(), 422), (errors.MalformedBody(), 400), (errors.BodyTooLarge(), 413),
        (errors.UnsupportedMediaType(), 415), (errors.Unauthenticated(), 401), (errors.PayrollNotFound(), 404),
        (errors.NotFound(), 404), (errors.DuplicateReference(), 409), (errors.PayrollFinal(), 409),
        (errors.IdempotencyKeyReused(), 422), (errors.IdempotencyKeyInFlight(), 409), (errors.Throttled(0.2), 429),
        (errors.SchemaNotCurrent(), 503), (errors.DatabaseUnavailable(), 503), (errors.ConfigError(), 500),
    ],
)  # fmt: skip
def test_every_error_has_its_status(exc: errors.PayrunError, status: int) -> None:
    response = http_errors.render(exc)
    assert response.status_code == status
    assert response.media_type == "application/problem+json"


def test_database_busy_is_a_503_that_says_retry_in_a_second() -> None:
    response = http_errors.render(errors.DatabaseBusy(waited_s=2.0))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert json.loads(response.body)["type"] == "urn:payrun:problem:database-busy"


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        ConnectionResetError(),
    ],
)
async def test_a_driver_error_about_the_connection_is_a_503_problem(exc: Exception) -> None:
    async def boom(_request: Request) -> Response:
        raise exc

    app = Starlette(routes=[Route("/", boom)], exception_handlers=http_errors.handlers())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "5"


def test_a_subclass_inherits_its_parents_status() -> None:
    class NoSuchItem(errors.NotFound):
        """No such item."""

    assert http_errors.render(NoSuchItem()).status_code == 404


def test_throttled_says_when_to_retry_in_whole_seconds() -> None:
    assert http_errors.render(errors.Throttled(0.01)).headers["retry-after"] == "1"
    assert http_errors.render(errors.Throttled(2.5)).headers["retry-after"] == "3"


def test_cursors_round_trip() -> None:
    at, payroll_id = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert render.decode_cursor(render.encode_cursor(at, payroll_id)) == (at, payroll_id)


@pytest.mark.parametrize(
    "cursor", ["", "!!", "bnVsbA", "WzEsMl0", "WyJ4IiwieSJd", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwieCJd"]
)
def test_bad_cursors_are_422_naming_cursor(cursor: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        render.decode_cursor(cursor)
    assert caught.value.errors[0]["field"] == "cursor"


def test_item_cursors_round_trip_and_refuse_anything_else() -> None:
    for position in (0, 1, 9_999, render.MAX_POSITION):
        assert render.decode_item_cursor(render.encode_item_cursor(position)) == position
    payroll_cursor = render.encode_cursor(datetime(2026, 11, 25, tzinfo=UTC), uuid.uuid4())
    for bad in (payroll_cursor, "", "!!", "W10", "Wy0xXQ", "W3RydWVd", "WzEuMF0", "WzIxNDc0ODM2NDhd"):
        with pytest.raises(errors.InvalidRequest) as caught:
            render.decode_item_cursor(bad)
        assert caught.value.errors == [{"field": "cursor", "message": "is not a valid cursor"}]
    with pytest.raises(errors.InvalidRequest):
        render.decode_cursor(render.encode_item_cursor(3))


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+254700000000", "'+254700000000"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("Jane = Doe", "Jane = Doe"),
        ("'quoted", "'quoted"),
        ("", ""),
    ],
)
def test_csv_cells_that_look_like_formulas_get_an_apostrophe(cell: str, shown: str) -> None:
    assert export.neutralise(cell) == shown


def test_the_csv_filename_is_quoted_safely() -> None:
    assert export.content_disposition("ACME-2026.11_a") == (
        "attachment; filename=\"payroll-ACME-2026.11_a.csv\"; filename*=UTF-8''payroll-ACME-2026.11_a.csv"
    )
    header = export.content_disposition('a"b\\c;d\r\n/é%')
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.startswith("attachment; filename=\"payroll-a_b_c_d_____.csv\"; filename*=UTF-8''")
    assert header.endswith("payroll-a%22b%5Cc%3Bd%0D%0A%2F%C3%A9%25.csv")


def test_etag_matching() -> None:
    assert render.etag_matches('"a"', '"a"')
    assert render.etag_matches('W/"a"', '"a"')
    assert render.etag_matches('"b", "a"', '"a"')
    assert render.etag_matches("*", '"a"')
    assert not render.etag_matches('"b"', '"a"')
    assert not render.etag_matches(None, '"a"')


async def test_the_throttle_allows_a_burst_then_refuses_with_a_wait() -> None:
    limits = throttle.KeyThrottle(rate=2.0, burst=3)
    for _ in range(3):
        await limits.check(b"k")
    with pytest.raises(errors.Throttled) as caught:
        await limits.check(b"k")
    assert caught.value.retry_after_s == pytest.approx(0.5, abs=0.05)
    await limits.check(b"other")
    await asyncio.sleep(0.55)
    await limits.check(b"k")


async def test_the_throttle_forgets_the_least_recently_used_keys() -> None:
    limits = throttle.KeyThrottle(rate=1.0, burst=1, max_keys=2)
    await limits.check(b"a")
    await limits.check(b"b")
    await limits.check(b"c")  # "a" is forgotten: a fresh bucket
    await limits.check(b"a")
    with pytest.raises(errors.Throttled):
        await limits.check(b"a")


def test_the_named_queries_exist() -> None:
    assert set(sqlfiles.load("payrolls")) == {
        "insert_payroll", "insert_items", "id_by_reference", "get_payroll", "get_items", "list_payrolls",
        "payroll_state", "status_summary", "lock_payroll", "delete_items", "delete_payroll", "retry_of_payroll",
        "failed_items", "items_page",
    }  # fmt: skip
    assert {
        "start_payroll",
        "claim_batch",
        "next_due",
        "next_due_of_kinds",
        "extend_leases",
        "hold_lease",
        "release",
        "finish",
        "carried_rows",
    } == set(sqlfiles.load("outbox"))
    assert {"reserve_slot", "pause", "take_send", "answered", "unused"} == set(sqlfiles.load("rate"))
    assert set(sqlfiles.load("idempotency_keys")) == {"claim_key", "stored_response", "store_response"}


def test_statuses_mirror_the_schema() -> None:
    assert len(payrolls.PayrollStatus) == 7 and len(payrolls.ItemStatus) == 6


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Employers:
    """A stand-in pool for `employers.by_api_key`: counts queries; `valid` maps keys to employers."""

    def __init__(self, **valid: str) -> None:
        self.valid = {employers.hash_key(k): {"id": uuid.uuid4(), "name": n} for k, n in valid.items()}
        self.queries = 0

    async def fetchrow(self, _sql: str, key_hash: bytes) -> dict[str, object] | None:
        self.queries += 1
        await asyncio.sleep(0)
        return self.valid.get(key_hash)


async def _outcome(book: keys.KeyBook, pool: _Employers, key: str, client: str = "10.0.0.1") -> int:
    try:
        await book.holder(pool, key, client)  # type: ignore[arg-type]
    except errors.PayrunError as exc:
        return http_errors.lookup(exc)[0]
    return 200


async def test_unknown_keys_cost_a_query_each_only_within_the_clients_share_then_429() -> None:
    clock, pool = _Clock(), _Employers()
    book = keys.KeyBook(failure_rate=10.0, failure_burst=30, clock=clock)  # a client: 3, then 1 a second
    assert [await _outcome(book, pool, f"bad-{n}") for n in range(5)] == [401, 401, 401, 429, 429]
    assert pool.queries == 3
    assert await _outcome(book, pool, "bad-x", client="10.0.0.2") == 401  # another client has its own share
    clock.now += 1.0
    assert [await _outcome(book, pool, f"late-{n}") for n in range(2)] == [401, 429]
    assert pool.queries == 5


async def test_the_process_budget_bounds_unknown_keys_from_many_clients() -> None:
    pool = _Employers()
    book = keys.KeyBook(failure_rate=10.0, failure_burst=30, clock=_Clock())
    outcomes = [await _outcome(book, pool, f"bad-{n}", client=f"10.0.{n}.1") for n in range(40)]
    assert outcomes == [401] * 30 + [429] * 10
    assert pool.queries == 30
    with pytest.raises(keys.TooManyUnknownKeys) as refused:
        await book.holder(pool, "bad-more", "10.9.9.9")  # type: ignore[arg-type]
    assert http_errors.render(refused.value).headers["retry-after"] == "1"


async def test_a_refused_key_is_refused_again_without_a_query_for_a_minute() -> None:
    clock, pool = _Clock(), _Employers()
    book = keys.KeyBook(failure_rate=1.0, failure_burst=10, clock=clock)
    assert [await _outcome(book, pool, "stale-key") for _ in range(50)] == [401] * 50
    assert pool.queries == 1
    clock.now += keys.REFUSED_TTL_S
    assert await _outcome(book, pool, "stale-key") == 401
    assert pool.queries == 2


async def test_a_valid_key_costs_one_query_per_five_seconds_and_is_dropped_within_five_of_its_revocation() -> (
    None
):
    clock, pool = _Clock(), _Employers(good="Acme")
    book = keys.KeyBook(failure_rate=1.0, failure_burst=10, clock=clock)
    assert [await _outcome(book, pool, "good") for _ in range(100)] == [200] * 100
    assert pool.queries == 1
    pool.valid.clear()  # the key is revoked
    clock.now += keys.VALID_TTL_S - 0.1
    assert await _outcome(book, pool, "good") == 200
    clock.now += 0.1
    assert await _outcome(book, pool, "good") == 401
    assert pool.queries == 2


async def test_a_key_seen_valid_passes_while_unknown_keys_from_its_address_are_throttled() -> None:
    clock, pool = _Clock(), _Employers(good="Acme")
    book = keys.KeyBook(failure_rate=0.1, failure_burst=30, clock=clock)  # a client: 3, then 1 in 100 s
    assert await _outcome(book, pool, "good") == 200
    assert [await _outcome(book, pool, f"bad-{n}") for n in range(4)] == [401, 401, 401, 429]
    clock.now += keys.VALID_TTL_S  # its cached answer ran out: looked up again, outside the budget
    assert [await _outcome(book, pool, "good") for _ in range(3)] == [200] * 3
    assert await _outcome(book, pool, "bad-new") == 429


async def test_concurrent_requests_with_one_key_share_one_query() -> None:
    pool = _Employers(good="Acme")
    book = keys.KeyBook(failure_rate=10.0, failure_burst=10, clock=_Clock())  # a client: 1 token
    outcomes = await asyncio.gather(*(_outcome(book, pool, "good") for _ in range(50)))
    assert outcomes == [200] * 50
    assert pool.queries == 1
    outcomes = await asyncio.gather(*(_outcome(book, pool, "bad") for _ in range(50)))
    assert outcomes == [401] * 50
    assert pool.queries == 2
