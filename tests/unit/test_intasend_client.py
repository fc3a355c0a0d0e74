"""IntaSendClient against mocked HTTP: parsing of both documented batch shapes, the exact wire format, and the
classification of every outcome (the dispatcher's retry decisions rest on it)."""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.test_utils import TestServer
from aioresponses import aioresponses
from aioresponses import core as aioresponses_core
from structlog.testing import capture_logs
from yarl import URL

from dispatcher_service.provider.intasend import (
    ENDPOINTS,
    IntaSendClient,
    classify_http,
    parse_batch,
    parse_retry_after,
)
from dispatcher_service.provider.protocol import (
    Batch,
    ProviderAmbiguous,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)

BASE = "https://sandbox.intasend.com"
SECRET = "ISSecretKey_test_9f8e7d6c5b4a-do-not-leak"
INITIATE = f"{BASE}/api/v1/send-money/initiate/"
APPROVE = f"{BASE}/api/v1/send-money/approve/"
STATUS = f"{BASE}/api/v1/send-money/status/"
WALLETS = f"{BASE}/api/v1/wallets/"
TRACKING = "c1acf08c-5cc1-4b3e-b4a8-e43bc068aa56"

# docs/intasend.md section 2.1, the documented 2020 initiate response (int account, JSON-number amounts).
BATCH_2020 = """{
  "tracking_id": "c1acf08c-5cc1-4b3e-b4a8-e43bc068aa56",
  "status": "Preview and approve", "status_code": "BP101", "nonce": "1aiw02",
  "transactions": [
    {"status": "Pending", "status_code": "TP101",
     "request_reference_id": "f6a5a8dc-e190-4707-8ea2-102919709a72",
     "name": null, "account": 254723890353, "amount": 10, "narrative": null}
  ],
  "charge_estimate": 50.0, "total_amount_estimate": 560.0,
  "created_at": "2020-07-31T14:00:56.563163+03:00", "updated_at": "2020-07-31T14:00:56.563163+03:00"
}"""

# docs/intasend.md section 2.1, the 2025 batch object (string amounts, provider_reference, embedded wallet).
BATCH_2025 = """{
  "file_id": "0VZ4MOK", "tracking_id": "f89r8b57-0000-4000-8000-000000000001", "batch_reference": null,
  "status": "Completed", "status_code": "BC100", "nonce": "a1b2c3",
  "transactions": [{
    "transaction_id": "YP3I6V4", "status": "Successful", "status_code": "TS100",
    "status_description": "The service request is processed successfully.",
    "request_reference_id": "cik94566-9c1c-4db0-94f7-a1b344d99fd4", "provider": "MPESA-B2C",
    "bank_code": null, "name": "Jane Doe", "account": "254712345678",
    "account_type": null, "account_reference": null,
    "provider_reference": "TJRHC8IET4", "provider_account_name": " Jane Doe",
    "amount": "38.00", "charge": "10.00", "narrative": "Salary Nov", "file_id": "08Z4GOK",
    "idempotency_key": null, "currency": "KES", "created_at": "x", "updated_at": "x"}],
  "actual_charges": "10.00", "paid_amount": "38.00", "failed_amount": 0.0,
  "wallet": {"wallet_id": "0XDLWNK", "label": "default", "can_disburse": false, "currency": "KES",
             "wallet_type": "SETTLEMENT", "current_balance": "0.50", "available_balance": "0.50",
             "updated_at": "x"},
  "charge_estimate": "10.00", "total_amount_estimate": "48.00", "total_amount": "38.00",
  "transactions_count": 1, "created_at": "x", "updated_at": "x"
}"""

TRANSACTIONS = [{"name": "Jane Doe", "account": "254712345678", "amount": 2500, "narrative": "Salary Nov"}]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(session: aiohttp.ClientSession) -> IntaSendClient:
    return IntaSendClient(session, base_url=BASE, secret_key=SECRET, timeout_s=5)


class _Aiohttp314Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds ClientResponse without the ``stream_writer`` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289, open, no release yet). With ``writer=None`` aiohttp only reads its
    ``output_size``, so a stand-in is enough. Remove once aioresponses ships a fix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses_core, "ClientResponse", _Aiohttp314Response)
    with aioresponses() as m:
        yield m


def sent(http: aioresponses, method: str, url: str, index: int = 0) -> dict[str, Any]:
    """The keyword arguments of one recorded request."""
    return http.requests[(method, URL(url))][index].kwargs


def sent_json(http: aioresponses, method: str, url: str, index: int = 0) -> Any:
    return json.loads(sent(http, method, url, index)["data"], parse_float=Decimal)


async def initiate(client: IntaSendClient) -> Batch:
    return await client.initiate(provider="MPESA-B2C", currency="KES", transactions=TRANSACTIONS)


# --- parsing -------------------------------------------------------------------------------------------


async def test_initiate_parses_2020_shape(client: IntaSendClient, http: aioresponses) -> None:
    http.post(INITIATE, body=BATCH_2020)
    batch = await initiate(client)
    assert (batch.tracking_id, batch.status_code, batch.status, batch.nonce) == (
        TRACKING,
        "BP101",
        "Preview and approve",
        "1aiw02",
    )
    (tx,) = batch.transactions
    assert tx.account == "254723890353"
    assert tx.amount == Decimal("10") and isinstance(tx.amount, Decimal)
    assert tx.request_reference_id == "f6a5a8dc-e190-4707-8ea2-102919709a72"
    assert (tx.status_code, tx.status, tx.name, tx.provider_reference, tx.failure_reason) == (
        "TP101",
        "Pending",
        None,
        None,
        None,
    )
    assert batch.raw["charge_estimate"] == Decimal("50.0")
    assert isinstance(batch.raw["total_amount_estimate"], Decimal)


async def test_status_parses_2025_shape(client: IntaSendClient, http: aioresponses) -> None:
    http.post(STATUS, body=BATCH_2025)
    batch = await client.status("f89r8b57-0000-4000-8000-000000000001")
    assert sent_json(http, "POST", STATUS) == {"tracking_id": "f89r8b57-0000-4000-8000-000000000001"}
    assert (batch.status_code, batch.status, batch.nonce) == ("BC100", "Completed", "a1b2c3")
    (tx,) = batch.transactions
    assert tx.amount == Decimal("38.00") and str(tx.amount) == "38.00"
    assert (tx.account, tx.name, tx.provider_reference) == ("254712345678", "Jane Doe", "TJRHC8IET4")
    assert tx.status_code == "TS100" and tx.failure_reason is None  # a success description is not a reason
    assert batch.raw["wallet"]["available_balance"] == "0.50"


def test_mixed_amounts_accounts_and_failure_reasons() -> None:
    raw = json.loads(
        """{"tracking_id": "t", "transactions": [
        {"account": 254700000001, "amount": 50, "status_code": "TF106", "status_description": "Insufficient"},
        {"account": "254700000002", "amount": "50.00", "status_code": "TF103", "failed_reason": "Bad MSISDN",
         "status_description": "ignored when failed_reason is set"},
        {"account": 254700000003, "amount": 12.5, "status_code": "TF104", "status_description": "In progress"},
        {"phone_number": "254700000004", "amount": " 7 ", "status_code": "TS100", "mno_reference": "OLD123"},
        {"account": "254700000005", "amount": 0.1, "status_code": "TC108", "status_description": "Canceled"},
        {"account": "254700000006", "amount": "1", "status_code": "TF105", "failed_reason": ""}
        ]}""",
        parse_float=Decimal,
    )
    txs = parse_batch(raw).transactions
    assert [t.amount for t in txs] == [Decimal("50"), Decimal("50.00"), Decimal("12.5"), 7, Decimal("0.1"), 1]
    assert all(type(t.amount) is Decimal for t in txs)
    assert [t.account for t in txs] == [f"25470000000{i}" for i in range(1, 7)]
    assert [t.failure_reason for t in txs] == ["Insufficient", "Bad MSISDN", None, None, "Canceled", None]
    assert txs[3].provider_reference == "OLD123"
    # A float that slipped through (payload parsed without parse_float) still becomes the decimal it printed as.
    assert parse_batch({"tracking_id": "t", "transactions": [{"account": 1, "amount": 0.1}]}).transactions[
        0
    ].amount == Decimal("0.1")


@pytest.mark.parametrize("bad", [None, "abc", True, "NaN", "Infinity"])
def test_unreadable_amount_is_not_a_batch(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_batch({"tracking_id": "t", "transactions": [{"account": "1", "amount": bad}]})


# --- wire format ---------------------------------------------------------------------------------------


async def test_initiate_sends_exact_body_and_headers(client: IntaSendClient, http: aioresponses) -> None:
    http.post(INITIATE, body=BATCH_2020)
    items = [{"account": "254712345678", "amount": Decimal("2500.50"), "narrative": "Nov"}]
    await client.initiate(
        provider="MPESA-B2C",
        currency="KES",
        transactions=items,
        callback_url="https://payrun.example/hooks/intasend",
        wallet_id="0XDLWNK",
    )
    call = sent(http, "POST", INITIATE)
    assert json.loads(call["data"], parse_float=Decimal) == {
        "provider": "MPESA-B2C",
        "currency": "KES",
        "requires_approval": "YES",
        "wallet_id": "0XDLWNK",
        "transactions": [{"account": "254712345678", "amount": Decimal("2500.50"), "narrative": "Nov"}],
        "callback_url": "https://payrun.example/hooks/intasend",
    }
    assert call["headers"] == {
        "Authorization": f"Bearer {SECRET}",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    assert call["timeout"] == aiohttp.ClientTimeout(total=5)
    assert call["allow_redirects"] is False


async def test_initiate_without_callback_sends_null_wallet_and_no_callback(
    client: IntaSendClient, http: aioresponses
) -> None:
    http.post(INITIATE, body=BATCH_2020)
    await client.initiate(
        provider="MPESA-B2C", currency="KES", transactions=TRANSACTIONS, requires_approval="NO"
    )
    assert sent_json(http, "POST", INITIATE) == {
        "provider": "MPESA-B2C",
        "currency": "KES",
        "requires_approval": "NO",
        "wallet_id": None,
        "transactions": TRANSACTIONS,
    }


async def test_base_url_with_api_prefix_is_accepted(
    session: aiohttp.ClientSession, http: aioresponses
) -> None:
    http.post(STATUS, body=BATCH_2020)
    c = IntaSendClient(session, base_url=f"{BASE}/api/v1/", secret_key=SECRET, timeout_s=1)
    assert (await c.status(TRACKING)).tracking_id == TRACKING


async def test_approve_posts_the_initiate_response_back_as_is(
    client: IntaSendClient, http: aioresponses
) -> None:
    http.post(INITIATE, body=BATCH_2020)
    http.post(APPROVE, body=BATCH_2025)
    batch = await initiate(client)
    approved = await client.approve(batch)
    assert sent_json(http, "POST", APPROVE) == json.loads(BATCH_2020, parse_float=Decimal)
    assert sent_json(http, "POST", APPROVE)["nonce"] == "1aiw02"
    assert sent(http, "POST", APPROVE)["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert approved is not None and approved.status_code == "BC100"


@pytest.mark.parametrize("body", ["", "  ", "{}", "null"])
async def test_empty_approve_response_is_none(client: IntaSendClient, http: aioresponses, body: str) -> None:
    http.post(APPROVE, body=body)
    assert await client.approve(parse_batch(json.loads(BATCH_2020))) is None


# --- HTTP status classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Retry-After": "7"}, 7.0), ({}, None), ({"Retry-After": "soon"}, None), ({"Retry-After": "-3"}, None)],
)
async def test_429_is_rate_limited(
    client: IntaSendClient, http: aioresponses, headers: dict[str, str], expected: float | None
) -> None:
    http.post(INITIATE, status=429, body="Too Many Requests", headers=headers)
    with pytest.raises(ProviderRateLimited) as info:
        await initiate(client)
    assert isinstance(info.value, ProviderUnavailable)
    assert (info.value.status, info.value.body, info.value.retry_after) == (
        429,
        "Too Many Requests",
        expected,
    )


async def test_429_with_http_date(client: IntaSendClient, http: aioresponses) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    http.post(STATUS, status=429, headers={"Retry-After": when})
    with pytest.raises(ProviderRateLimited) as info:
        await client.status(TRACKING)
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


def test_parse_retry_after() -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(" 30 ") == 30.0
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000") == 0.0
    for bad in (None, "", "1.5", "٣", "tomorrow"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_5xx_and_408_are_unavailable(client: IntaSendClient, http: aioresponses, status: int) -> None:
    http.post(APPROVE, status=status, body="<html>Bad Gateway</html>")
    with pytest.raises(ProviderUnavailable) as info:
        await client.approve(parse_batch(json.loads(BATCH_2020)))
    assert type(info.value) is ProviderUnavailable
    assert (info.value.status, info.value.body) == (status, "<html>Bad Gateway</html>")


async def test_400_new_error_shape_names_the_fields(client: IntaSendClient, http: aioresponses) -> None:
    body = {
        "type": "validation_error",
        "errors": [
            {"code": "invalid", "detail": "Invalid phone number", "attr": "transactions.0.account"},
            {"code": "min_value", "detail": "Ensure this value is >= 10", "attr": "transactions.1.amount"},
        ],
    }
    http.post(INITIATE, status=400, payload=body)
    with pytest.raises(ProviderRejected) as info:
        await initiate(client)
    assert str(info.value) == (
        "IntaSend initiate: HTTP 400: transactions.0.account: Invalid phone number; "
        "transactions.1.amount: Ensure this value is >= 10"
    )
    assert (info.value.status, info.value.body) == (400, body)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"detail": "Authentication credentials were not provided."}, "provided."),
        (400, {"details": "Device id not found"}, ": Device id not found"),
        (
            403,
            {
                "type": "client_error",
                "errors": [{"code": "authentication_failed", "detail": "Invalid api token", "attr": None}],
            },
            "HTTP 403: Invalid api token",
        ),
        (404, {"detail": "Not found."}, "HTTP 404: Not found."),
        (418, {"unexpected": "shape"}, '{"unexpected": "shape"}'),
    ],
)
async def test_other_4xx_are_rejected(
    client: IntaSendClient, http: aioresponses, status: int, body: Any, message: str
) -> None:
    http.post(INITIATE, status=status, payload=body)
    with pytest.raises(ProviderRejected) as info:
        await initiate(client)
    assert str(info.value).endswith(message)
    assert (info.value.status, info.value.body) == (status, body)


async def test_rejection_with_text_body_is_truncated(client: IntaSendClient, http: aioresponses) -> None:
    http.get(WALLETS, status=404, body="<html>" + "x" * 1000)
    with pytest.raises(ProviderRejected) as info:
        await client.wallets()
    assert len(str(info.value)) < 360 and str(info.value).startswith("IntaSend wallets: HTTP 404: <html>xxx")
    assert len(info.value.body) == 1006  # the exception keeps the whole body


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (201, None),
        (204, None),
        (301, ProviderUnavailable),
        (400, ProviderRejected),
        (401, ProviderRejected),
        (403, ProviderRejected),
        (404, ProviderRejected),
        (408, ProviderUnavailable),
        (409, ProviderRejected),
        (422, ProviderRejected),
        (429, ProviderRateLimited),
        (500, ProviderUnavailable),
        (503, ProviderUnavailable),
        (599, ProviderUnavailable),
    ],
)
def test_classify_http_table(status: int, expected: type | None) -> None:
    error = classify_http(status, None, {"retry-after": "2"})
    assert (type(error) if error else None) is expected
    if isinstance(error, ProviderRateLimited):
        assert error.retry_after == 2.0  # header names are case-insensitive even in a plain dict


# --- transport failures -------------------------------------------------------------------------------


def connector_error() -> aiohttp.ClientConnectorError:
    fields = dict.fromkeys(ConnectionKey._fields) | {"host": "sandbox.intasend.com", "port": 443, "ssl": True}
    return aiohttp.ClientConnectorError(
        ConnectionKey(**fields), ConnectionRefusedError(111, "Connection refused")
    )


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        aiohttp.ServerTimeoutError("read timeout"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ClientConnectionError("Connection closed"),
        aiohttp.ClientError("anything else aiohttp raises once the request is under way"),
    ],
    ids=lambda e: type(e).__name__,
)
@pytest.mark.parametrize("endpoint", ["initiate", "approve", "status"])
async def test_failure_after_sending_is_ambiguous(
    client: IntaSendClient, http: aioresponses, exc: Exception, endpoint: str
) -> None:
    url = {"initiate": INITIATE, "approve": APPROVE, "status": STATUS}[endpoint]
    http.post(url, exception=exc)
    with pytest.raises(ProviderAmbiguous) as info:
        if endpoint == "initiate":
            await initiate(client)
        elif endpoint == "approve":
            await client.approve(parse_batch(json.loads(BATCH_2020)))
        else:
            await client.status(TRACKING)
    assert info.value.__cause__ is exc and info.value.status is None


async def test_connection_refused_is_unavailable(client: IntaSendClient, http: aioresponses) -> None:
    http.post(INITIATE, exception=connector_error())
    with pytest.raises(ProviderUnavailable) as info:
        await initiate(client)
    assert "Cannot connect to host sandbox.intasend.com:443" in str(info.value)


async def test_real_refused_connection_is_unavailable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = IntaSendClient(session, base_url=f"http://127.0.0.1:{port}", secret_key=SECRET, timeout_s=2)
    with pytest.raises(ProviderUnavailable) as info:
        await initiate(c)
    assert type(info.value) is ProviderUnavailable and isinstance(
        info.value.__cause__, aiohttp.ClientConnectorError
    )


async def test_real_timeout_and_truncated_body_are_ambiguous(session: aiohttp.ClientSession) -> None:
    """Against a real server, so the exception types are aiohttp's own rather than the ones we mock."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b'{"tracking_id"')
        assert request.transport is not None
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_post("/api/v1/send-money/initiate/", slow)
    app.router.add_post("/api/v1/send-money/status/", cut)
    async with TestServer(app) as server:
        c = IntaSendClient(session, base_url=str(server.make_url("/")), secret_key=SECRET, timeout_s=0.2)
        with pytest.raises(ProviderAmbiguous) as timed_out:
            await initiate(c)
        assert isinstance(timed_out.value.__cause__, TimeoutError)
        with pytest.raises(ProviderAmbiguous) as truncated:
            await c.status(TRACKING)
        assert isinstance(truncated.value.__cause__, aiohttp.ClientPayloadError)


# --- 2xx bodies we cannot read ------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["<html>ok</html>", '{"detail": "ok"}', "[1, 2]", '{"tracking_id": ""}'])
async def test_unreadable_2xx_is_ambiguous_for_writes_unavailable_for_reads(
    client: IntaSendClient, http: aioresponses, body: str
) -> None:
    http.post(INITIATE, body=body)
    http.post(APPROVE, body=body)
    http.post(STATUS, body=body)
    with pytest.raises(ProviderAmbiguous) as info:
        await initiate(client)
    assert info.value.status == 200
    with pytest.raises(ProviderAmbiguous):
        await client.approve(parse_batch(json.loads(BATCH_2020)))
    with pytest.raises(ProviderUnavailable) as read_info:
        await client.status(TRACKING)
    assert read_info.value.status == 200 and read_info.value.body is not None


# --- wallets --------------------------------------------------------------------------------------------

WALLET = {"wallet_id": "0XDLWNK", "label": "default", "currency": "KES", "available_balance": "0.50"}


@pytest.mark.parametrize(
    "body",
    [[WALLET], {"count": 1, "next": None, "previous": None, "results": [WALLET]}],
    ids=["list", "page"],
)
async def test_wallets_both_shapes(client: IntaSendClient, http: aioresponses, body: Any) -> None:
    http.get(WALLETS, payload=body)
    assert await client.wallets() == [WALLET]
    call = sent(http, "GET", WALLETS)
    assert call["data"] is None and "Content-Type" not in call["headers"]
    assert call["headers"]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("body", ['{"detail": "x"}', "oops", "[1]"])
async def test_unreadable_wallets_is_unavailable(
    client: IntaSendClient, http: aioresponses, body: str
) -> None:
    http.get(WALLETS, body=body)
    with pytest.raises(ProviderUnavailable):
        await client.wallets()


# --- secrets and logs ---------------------------------------------------------------------------------


async def test_secret_never_appears_in_exception_messages(client: IntaSendClient, http: aioresponses) -> None:
    echo = {"detail": f"Invalid token Bearer {SECRET}"}
    http.post(INITIATE, status=401, payload=echo)
    http.post(INITIATE, status=503, body=f"upstream said {SECRET}")
    http.post(INITIATE, status=429)
    http.post(INITIATE, body=f"<html>{SECRET}</html>")
    http.post(INITIATE, exception=TimeoutError())
    http.post(INITIATE, exception=connector_error())
    http.post(INITIATE, exception=aiohttp.ServerDisconnectedError())
    errors = []
    for _ in range(7):
        with pytest.raises(Exception) as info:  # noqa: B017 - every class is checked below
            await initiate(client)
        errors.append(info.value)
    assert [type(e).__name__ for e in errors] == [
        "ProviderRejected",
        "ProviderUnavailable",
        "ProviderRateLimited",
        "ProviderAmbiguous",
        "ProviderAmbiguous",
        "ProviderUnavailable",
        "ProviderAmbiguous",
    ]
    for e in errors:
        assert SECRET not in str(e) and SECRET not in repr(e.args)
    assert "[redacted]" in str(errors[0])


async def test_one_debug_log_per_request_without_secrets_or_phones(
    client: IntaSendClient, http: aioresponses
) -> None:
    http.post(INITIATE, body=BATCH_2025)
    http.post(
        STATUS, status=400, payload={"errors": [{"detail": "Invalid phone 254712345678", "attr": "account"}]}
    )
    with capture_logs() as logs:
        await initiate(client)
        with pytest.raises(ProviderRejected):
            await client.status(TRACKING)
    assert [(e["event"], e["log_level"], e["endpoint"], e["http_status"], e["outcome"]) for e in logs] == [
        ("provider_request", "debug", "initiate", 200, "success"),
        ("provider_request", "debug", "status", 400, "ProviderRejected"),
    ]
    assert all(isinstance(e["duration_ms"], float) for e in logs)
    assert SECRET not in repr(logs) and "254712345678" not in repr(logs)


def test_endpoints_and_constructor_checks(session: aiohttp.ClientSession) -> None:
    assert ENDPOINTS == ("initiate", "approve", "status", "wallets")
    with pytest.raises(ValueError):
        IntaSendClient(session, base_url=BASE, secret_key="", timeout_s=1)
    with pytest.raises(ValueError):
        IntaSendClient(session, base_url=BASE, secret_key=SECRET, timeout_s=0)
