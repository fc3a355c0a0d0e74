"""The bundled IntaSend simulator (`payrun sim`): wire format, ledger, rate limit and faults."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from simulator.__main__ import build_parser
from simulator.app import make_app
from simulator.config import ENV_VARS, SimConfig, SimConfigError
from simulator.ratelimit import SlidingWindow
from simulator.validation import MAX_TRANSACTIONS

AUTH = {"Authorization": "Bearer ISSecretKey_test_sim"}
INITIATE = "/api/v1/send-money/initiate/"
APPROVE = "/api/v1/send-money/approve/"
STATUS = "/api/v1/send-money/status/"
WALLETS = "/api/v1/wallets/"

MakeClient = Callable[..., Awaitable[TestClient]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """A simulator per call, from a config object (no env); no rate limit unless a test asks for one."""
    clients: list[TestClient] = []

    async def make(clock: Callable[[], float] | None = None, **overrides: Any) -> TestClient:
        config = SimConfig(**{"max_rps": 0, "processing_s": 0.05, "seed": 7, **overrides})
        kwargs: dict[str, Any] = {"log": lambda record: None}
        if clock is not None:
            kwargs["clock"] = clock
        client = TestClient(TestServer(make_app(config, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def payload(
    *items: dict[str, Any], provider: str = "MPESA-B2C", approval: str = "YES", wallet_id: str | None = None
) -> dict[str, Any]:
    return {
        "provider": provider,
        "currency": "KES",
        "requires_approval": approval,
        "callback_url": None,
        "wallet_id": wallet_id,
        "transactions": list(items)
        or [{"name": "Jane Doe", "account": "254712345678", "amount": 38, "narrative": "Salary Nov"}],
    }


async def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body, headers=AUTH)
    return resp.status, await resp.json()


async def initiate(client: TestClient, *items: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    status, body = await post(client, INITIATE, payload(*items, **kwargs))
    assert status == 200, body
    return body


async def wait_final(client: TestClient, tracking_id: str) -> dict[str, Any]:
    for _ in range(100):
        status, body = await post(client, STATUS, {"tracking_id": tracking_id})
        assert status == 200
        if body["status_code"] in ("BC100", "BF105"):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("batch never completed")


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200
    return await resp.json()


# --- the happy path -------------------------------------------------------------------------------------------
async def test_initiate_approve_status_completes_and_pays(make_client: MakeClient) -> None:
    client = await make_client()
    batch = await initiate(
        client,
        {"name": "Jane Doe", "account": "254712345678", "amount": 38, "narrative": "Nov"},
        {"name": "John", "account": 254101234567, "amount": "12.5"},
    )
    assert batch["status"] == "Preview and approve" and batch["status_code"] == "BP103"
    uuid.UUID(batch["tracking_id"], version=4)
    assert batch["nonce"] and batch["file_id"]
    assert (
        batch["total_amount"] == "50.50" and "charge_estimate" in batch and "total_amount_estimate" in batch
    )
    assert batch["wallet"]["currency"] == "KES"
    # Numbers, as in docs/intasend.md's examples ("charge_estimate": 50.0, "failed_amount": 0.0).
    assert isinstance(batch["charge_estimate"], float) and isinstance(batch["failed_amount"], float)
    first, second = batch["transactions"]
    assert first["status"] == "Pending" and first["status_code"] == "TP101"
    assert first["account"] == "254712345678" and first["amount"] == "38.00" and first["narrative"] == "Nov"
    assert (
        first["provider"] == "MPESA-B2C"
        and first["currency"] == "KES"
        and first["provider_reference"] is None
    )
    assert second["account"] == "254101234567" and second["amount"] == "12.50"
    uuid.UUID(first["request_reference_id"], version=4)

    status, approved = await post(client, APPROVE, batch)  # the whole initiate response, as the SDKs send it
    assert status == 200
    assert (approved["status"], approved["status_code"]) == ("Sending payment", "BP110")

    done = await wait_final(client, batch["tracking_id"])
    assert (done["status"], done["status_code"]) == ("Completed", "BC100")
    for item in done["transactions"]:
        assert (item["status"], item["status_code"]) == ("Successful", "TS100")
        assert re.fullmatch(r"[A-Z0-9]{10}", item["provider_reference"])

    ledger = await get_json(client, "/sim/ledger")
    assert ledger["total_paid"] == "50.50"
    assert {(p["account"], p["amount"], p["paid"], p["determined"]) for p in ledger["payments"]} == {
        ("254712345678", "38.00", True, True),
        ("254101234567", "12.50", True, True),
    }
    refs = {p["request_reference_id"]: p["provider_reference"] for p in ledger["payments"]}
    assert refs == {t["request_reference_id"]: t["provider_reference"] for t in done["transactions"]}
    assert all(p["paid_at"] for p in ledger["payments"])

    resp = await client.get(WALLETS, headers=AUTH)
    (wallet,) = await resp.json()
    assert wallet["label"] == "default" and wallet["can_disburse"] is True
    assert Decimal(wallet["current_balance"]) == SimConfig().balance - Decimal("50.50")
    assert wallet["available_balance"] == wallet["current_balance"]


async def test_requires_approval_no_is_approved_at_initiate(make_client: MakeClient) -> None:
    client = await make_client()
    batch = await initiate(client, approval="NO")
    assert (batch["status"], batch["status_code"]) == ("Confirming balance", "BP104")
    done = await wait_final(client, batch["tracking_id"])
    assert done["status_code"] == "BC100"
    assert (await get_json(client, "/sim/ledger"))["total_paid"] == "38.00"


async def test_approving_twice_pays_once(make_client: MakeClient) -> None:
    """Concurrent approves: one is accepted, the others refused; a late one too. One payment."""
    client = await make_client()
    batch = await initiate(client)
    results = await asyncio.gather(*(post(client, APPROVE, batch) for _ in range(3)))
    assert sorted(s for s, _ in results) == [200, 400, 400]
    refused = [body for s, body in results if s == 400]
    assert all(b["errors"][0]["detail"] == "Batch is not awaiting approval." for b in refused)
    await wait_final(client, batch["tracking_id"])
    status, _ = await post(client, APPROVE, {"tracking_id": batch["tracking_id"], "nonce": batch["nonce"]})
    assert status == 400
    await asyncio.sleep(0.1)
    ledger = await get_json(client, "/sim/ledger")
    assert len(ledger["payments"]) == 1 and ledger["total_paid"] == "38.00"


async def test_a_second_approve_is_refused_by_default_and_counted(make_client: MakeClient) -> None:
    client = await make_client()
    batch = await initiate(client)
    assert (await post(client, APPROVE, batch))[0] == 200
    status, body = await post(client, APPROVE, batch)  # still processing
    assert status == 400 and body["errors"][0]["detail"] == "Batch is not awaiting approval."
    await wait_final(client, batch["tracking_id"])
    assert (await post(client, APPROVE, batch))[0] == 400  # completed
    await asyncio.sleep(0.1)
    assert (await get_json(client, "/sim/stats"))["second_approves"] == 2
    assert len((await get_json(client, "/sim/ledger"))["payments"]) == 1


async def test_second_approve_pays_makes_a_second_approve_pay_the_batch_again(
    make_client: MakeClient,
) -> None:
    client = await make_client(second_approve_pays=True, fail_accounts=frozenset({"254700000001"}))
    batch = await initiate(
        client, {"account": "254712345678", "amount": 38}, {"account": "254700000001", "amount": 5}
    )
    assert (await post(client, APPROVE, batch))[0] == 200
    first = await wait_final(client, batch["tracking_id"])
    status, again = await post(client, APPROVE, batch)
    assert status == 200 and again["tracking_id"] == batch["tracking_id"]
    await asyncio.sleep(0.1)  # the repeat settles processing_s after the second approve
    ledger = await get_json(client, "/sim/ledger")
    paid = Counter(p["request_reference_id"] for p in ledger["payments"] if p["paid"])
    good_ref = first["transactions"][0]["request_reference_id"]
    assert paid == {good_ref: 2}  # what tests/e2e's assert_ledger_agrees reports as "paid twice"
    assert len({p["provider_reference"] for p in ledger["payments"] if p["paid"]}) == 2
    assert ledger["total_paid"] == "76.00" and len(ledger["payments"]) == 4
    assert (await get_json(client, "/sim/stats"))["second_approves"] == 1
    _, shown = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert shown["status_code"] == "BC100" and shown["transactions"] == first["transactions"]
    resp = await client.get(WALLETS, headers=AUTH)
    assert Decimal((await resp.json())[0]["current_balance"]) == SimConfig().balance - Decimal("76.00")


async def test_a_repeat_the_wallet_cannot_cover_pays_nothing(make_client: MakeClient) -> None:
    client = await make_client(second_approve_pays=True, balance=Decimal("50.00"))
    batch = await initiate(client)
    await post(client, APPROVE, batch)
    await wait_final(client, batch["tracking_id"])
    assert (await post(client, APPROVE, batch))[0] == 200  # 12.00 left for a 38.00 batch
    await asyncio.sleep(0.1)
    assert (await get_json(client, "/sim/ledger"))["total_paid"] == "38.00"


async def test_approve_rejects_wrong_or_missing_nonce_and_unknown_batch(make_client: MakeClient) -> None:
    client = await make_client()
    batch = await initiate(client)
    status, body = await post(client, APPROVE, {**batch, "nonce": "wrong"})
    assert status == 400 and body["type"] == "validation_error" and body["errors"][0]["attr"] == "nonce"
    status, body = await post(client, APPROVE, {"tracking_id": batch["tracking_id"]})
    assert status == 400 and body["errors"][0] == {
        "code": "required",
        "detail": "This field is required.",
        "attr": "nonce",
    }
    status, body = await post(client, APPROVE, {"tracking_id": str(uuid.uuid4()), "nonce": batch["nonce"]})
    assert status == 404 and body == {"detail": "Not found."}
    status, body = await post(client, STATUS, {"tracking_id": str(uuid.uuid4())})
    assert status == 404 and body == {"detail": "Not found."}
    status, body = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert body["status_code"] == "BP103"  # nothing above approved it
    assert (await get_json(client, "/sim/ledger"))["payments"] == []


# --- validation and auth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "attr"),
    [
        ({"provider": "MPESA"}, "provider"),
        ({"currency": "USD"}, "currency"),
        ({"requires_approval": True}, "requires_approval"),
        ({"requires_approval": "yes"}, "requires_approval"),
        ({"transactions": []}, "transactions"),
        ({"transactions": {"account": "254712345678"}}, "transactions"),
        ({"transactions": [{"account": "0712345678", "amount": 10}]}, "transactions.0.account"),
        ({"transactions": [{"account": "+254712345678", "amount": 10}]}, "transactions.0.account"),
        ({"transactions": [{"amount": 10}]}, "transactions.0.account"),
        ({"transactions": [{"account": True, "amount": 10}]}, "transactions.0.account"),
        ({"transactions": [{"account": "254712345678", "amount": 0}]}, "transactions.0.amount"),
        ({"transactions": [{"account": "254712345678", "amount": "ten"}]}, "transactions.0.amount"),
        ({"transactions": [{"account": "254712345678", "amount": 10.005}]}, "transactions.0.amount"),
        (
            {"transactions": [{"account": "254712345678", "amount": 1}, {"account": "254712345678"}]},
            "transactions.1.amount",
        ),
        (
            {"provider": "PESALINK", "transactions": [{"account": "0011223344", "amount": 10}]},
            "transactions.0.bank_code",
        ),
        ({"wallet_id": "NOTMINE"}, "wallet_id"),
    ],
)
async def test_initiate_validation_errors_name_the_field(
    make_client: MakeClient, change: dict[str, Any], attr: str
) -> None:
    client = await make_client()
    status, body = await post(client, INITIATE, {**payload(), **change})
    assert status == 400, body
    assert body["type"] == "validation_error"
    assert attr in [e["attr"] for e in body["errors"]]
    assert all(set(e) == {"code", "detail", "attr"} for e in body["errors"])
    assert (await get_json(client, "/sim/stats"))["batches"] == 0


async def test_a_batch_of_5000_transactions_is_accepted_approved_and_paid(make_client: MakeClient) -> None:
    client = await make_client()
    items = [{"name": "Jane Doe", "account": f"2547{n:08d}", "amount": 1} for n in range(MAX_TRANSACTIONS)]
    batch = await initiate(client, *items)
    assert batch["transactions_count"] == 5000
    status, _ = await post(client, APPROVE, batch)  # the whole initiate response, some 3 MB, sent back
    assert status == 200
    assert (await wait_final(client, batch["tracking_id"]))["status_code"] == "BC100"
    assert (await get_json(client, "/sim/ledger"))["total_paid"] == "5000.00"


async def test_more_than_5000_transactions_are_refused_as_a_validation_error(make_client: MakeClient) -> None:
    client = await make_client()
    items = [{"account": f"2547{n:08d}", "amount": 1} for n in range(MAX_TRANSACTIONS + 1)]
    status, body = await post(client, INITIATE, payload(*items))
    assert status == 400
    assert body == {
        "type": "validation_error",
        "errors": [
            {
                "code": "max_length",
                "detail": "Ensure this field has no more than 5000 elements.",
                "attr": "transactions",
            }
        ],
    }
    assert (await get_json(client, "/sim/stats"))["batches"] == 0


async def test_other_providers_accept_their_accounts(make_client: MakeClient) -> None:
    client = await make_client()
    await initiate(client, {"account": "0011223344", "amount": 10, "bank_code": "2"}, provider="PESALINK")
    await initiate(client, {"account": 888880, "amount": 10, "account_type": "PayBill"}, provider="MPESA-B2B")
    await initiate(client, {"account": "254712345678", "amount": "10.00"}, provider="INTASEND")


async def test_bad_json_and_missing_auth(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.post(INITIATE, data=b"{not json", headers=AUTH)
    assert resp.status == 400 and (await resp.json())["errors"][0]["code"] == "parse_error"
    resp = await client.post(INITIATE, json=payload())
    assert resp.status == 401 and await resp.json() == {
        "detail": "Authentication credentials were not provided."
    }
    resp = await client.get(WALLETS, headers={"Authorization": "Bearer "})
    assert resp.status == 401
    resp = await client.get("/api/v1/no-such-thing/", headers=AUTH)
    assert resp.status == 404 and await resp.json() == {"detail": "Not found."}


# --- settlement outcomes --------------------------------------------------------------------------------------
async def test_failing_account_ends_tf106_and_is_not_paid(make_client: MakeClient) -> None:
    client = await make_client(fail_accounts=frozenset({"254700000001"}))
    batch = await initiate(
        client, {"account": "254700000001", "amount": 10}, {"account": "254712345678", "amount": 5}
    )
    await post(client, APPROVE, batch)
    done = await wait_final(client, batch["tracking_id"])
    failed, ok = done["transactions"]
    assert (failed["status"], failed["status_code"]) == ("Unsuccessful", "TF106")
    assert failed["failed_reason"] and failed["status_description"] and failed["provider_reference"] is None
    assert ok["status_code"] == "TS100"
    ledger = await get_json(client, "/sim/ledger")
    assert ledger["total_paid"] == "5.00"
    assert {p["account"]: p["paid"] for p in ledger["payments"]} == {
        "254700000001": False,
        "254712345678": True,
    }


async def test_undetermined_account_ends_tf105_and_ledger_knows_the_truth(make_client: MakeClient) -> None:
    accounts = [f"2547000000{i:02d}" for i in range(12)]
    client = await make_client(undetermined_accounts=frozenset(accounts))
    batch = await initiate(client, *({"account": a, "amount": 1} for a in accounts))
    await post(client, APPROVE, batch)
    done = await wait_final(client, batch["tracking_id"])
    assert done["status_code"] == "BC100"
    assert {t["status_code"] for t in done["transactions"]} == {"TF105"}
    assert all(t["provider_reference"] is None for t in done["transactions"])
    ledger = await get_json(client, "/sim/ledger")
    assert len(ledger["payments"]) == 12 and all(p["determined"] is False for p in ledger["payments"])
    paid = [p for p in ledger["payments"] if p["paid"]]
    assert 0 < len(paid) < 12  # seed 7: some moved, some did not
    assert Decimal(ledger["total_paid"]) == len(paid)


async def test_undetermined_transactions_settle_late_as_the_ledger_says(make_client: MakeClient) -> None:
    """SIM_UNDETERMINED_SETTLE_S: a TF105 transaction later shows TS100 (with its reference) if the ledger
    paid it, TF106 if not."""
    clock = FakeClock()
    accounts = [f"2547000000{i:02d}" for i in range(12)]
    client = await make_client(clock, undetermined_accounts=frozenset(accounts), undetermined_settle_s=60.0)
    batch = await initiate(client, *({"account": a, "amount": 1} for a in accounts))
    await post(client, APPROVE, batch)
    clock.now += 1
    _, done = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert {t["status_code"] for t in done["transactions"]} == {"TF105"}
    clock.now += 60
    _, late = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    ledger = {p["request_reference_id"]: p for p in (await get_json(client, "/sim/ledger"))["payments"]}
    for t in late["transactions"]:
        paid = ledger[t["request_reference_id"]]
        if paid["paid"]:
            assert (t["status_code"], t["provider_reference"]) == ("TS100", paid["provider_reference"])
        else:
            assert (t["status_code"], t["provider_reference"]) == ("TF106", None)
    assert {t["status_code"] for t in late["transactions"]} == {"TS100", "TF106"}  # seed 7: both


async def test_insufficient_balance_fails_bf105_and_pays_nothing(make_client: MakeClient) -> None:
    client = await make_client(balance=Decimal("100.00"))
    first = await initiate(client, {"account": "254712345678", "amount": 60})
    second = await initiate(client, {"account": "254712345679", "amount": 60})
    await post(client, APPROVE, first)
    _, approved = await post(client, APPROVE, second)  # 60 already reserved by the first: only 40 available
    assert approved["status_code"] == "BP104"
    assert (await wait_final(client, first["tracking_id"]))["status_code"] == "BC100"
    failed = await wait_final(client, second["tracking_id"])
    assert (failed["status"], failed["status_code"]) == ("Failed Processing", "BF105")
    assert all(t["status_code"] != "TS100" for t in failed["transactions"])
    ledger = await get_json(client, "/sim/ledger")
    assert ledger["total_paid"] == "60.00" and [p["account"] for p in ledger["payments"]] == ["254712345678"]
    resp = await client.get(WALLETS, headers=AUTH)
    assert (await resp.json())[0]["current_balance"] == "40.00"


async def test_charges_are_estimated_and_taken_with_each_payment(make_client: MakeClient) -> None:
    client = await make_client(balance=Decimal("1000.00"), charge=Decimal("15.00"))
    batch = await initiate(
        client, {"account": "254712345678", "amount": 100}, {"account": "254712345679", "amount": 200}
    )
    assert batch["charge_estimate"] == 30.0 and batch["total_amount_estimate"] == "330.00"
    assert batch["wallet"]["available_balance"] == "1000.00"
    await post(client, APPROVE, batch)
    await wait_final(client, batch["tracking_id"])
    resp = await client.get(WALLETS, headers=AUTH)
    wallet = (await resp.json())[0]
    assert wallet["current_balance"] == wallet["available_balance"] == "670.00"
    assert (await get_json(client, "/sim/ledger"))["total_paid"] == "300.00"


async def test_a_batch_short_only_by_its_charges_is_not_funded(make_client: MakeClient) -> None:
    client = await make_client(balance=Decimal("100.00"), charge=Decimal("1.00"))
    batch = await initiate(client, {"account": "254712345678", "amount": 100})
    assert batch["total_amount_estimate"] == "101.00"
    await post(client, APPROVE, batch)
    assert (await wait_final(client, batch["tracking_id"]))["status_code"] == "BF105"
    assert (await get_json(client, "/sim/ledger"))["payments"] == []


async def test_funding_a_wallet_raises_its_balance_and_the_next_initiate_shows_it(
    make_client: MakeClient,
) -> None:
    client = await make_client(balance=Decimal("50.00"), wallets=frozenset({"EMP1"}))
    resp = await client.post("/sim/wallets/EMP1/fund", json={"amount": "150.25"})
    assert resp.status == 200
    assert (await resp.json())["available_balance"] == "200.25"
    batch = await initiate(client, {"account": "254712345678", "amount": 60}, wallet_id="EMP1")
    assert batch["wallet"]["wallet_id"] == "EMP1" and batch["wallet"]["available_balance"] == "200.25"
    default = await initiate(client, {"account": "254712345678", "amount": 60})
    assert default["wallet"]["available_balance"] == "50.00"  # each wallet has a balance of its own


async def test_funding_refuses_bad_amounts_and_unknown_wallets(make_client: MakeClient) -> None:
    client = await make_client()
    for amount in (None, 0, -5, "1.234", "abc", True):
        resp = await client.post("/sim/wallets/SIMWLT1/fund", json={"amount": amount})
        assert resp.status == 400, amount
        assert (await resp.json())["errors"][0]["attr"] == "amount"
    assert (await client.post("/sim/wallets/NOPE/fund", json={"amount": 5})).status == 404


# --- rate limit ---------------------------------------------------------------------------------------------
async def test_burst_gets_exactly_max_rps_accepted(make_client: MakeClient) -> None:
    client = await make_client(max_rps=5)
    responses = await asyncio.gather(*(client.get(WALLETS, headers=AUTH) for _ in range(8)))
    assert sorted(r.status for r in responses) == [200] * 5 + [429] * 3
    throttled = [r for r in responses if r.status == 429]
    for r in throttled:
        assert await r.json() == {"detail": "Request was throttled."}
        assert r.headers["Retry-After"] == "1"
    stats = await get_json(client, "/sim/stats")
    assert stats["requests"] == 8 and stats["accepted"] == 5 and stats["rejected_429_pace"] == 3
    assert stats["rejected_429_storm"] == 0 and stats["max_in_any_window"] == 5
    assert stats["by_endpoint"] == {"wallets": 8}


async def test_retry_after_can_be_omitted(make_client: MakeClient) -> None:
    client = await make_client(max_rps=1, retry_after=False)
    assert (await client.get(WALLETS, headers=AUTH)).status == 200
    resp = await client.get(WALLETS, headers=AUTH)
    assert resp.status == 429 and "Retry-After" not in resp.headers


async def test_window_slides_rather_than_resetting(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(clock=clock, max_rps=2)

    async def hit(at: float) -> aiohttp.ClientResponse:
        clock.now = 1000.0 + at
        return await client.get(WALLETS, headers=AUTH)

    assert (await hit(0.0)).status == 200
    assert (await hit(0.6)).status == 200
    refused = await hit(0.9)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"  # ceil(0.1)
    assert (await hit(1.0)).status == 200  # the 0.0 request left the window (t-1, t]
    assert (await hit(1.5)).status == 429  # 0.6 and 1.0 are still inside
    assert (await hit(1.6)).status == 200
    stats = await get_json(client, "/sim/stats")
    assert stats["accepted"] == 4 and stats["rejected_429_pace"] == 2 and stats["max_in_any_window"] == 2


async def test_max_in_any_window_without_a_limit(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(clock=clock, max_rps=0)
    for at in (0.0, 0.2, 0.4, 1.3, 1.35, 1.39, 1.399, 3.0):
        clock.now = 1000.0 + at
        assert (await client.get(WALLETS, headers=AUTH)).status == 200
    stats = await get_json(client, "/sim/stats")
    assert stats["max_in_any_window"] == 5  # 0.4, 1.3, 1.35, 1.39, 1.399 all lie in (0.399, 1.399]
    assert stats["rejected_429_pace"] == 0 and stats["accepted"] == 8


def test_sliding_window_unit() -> None:
    window = SlidingWindow(3)
    for t in (0.0, 0.1, 0.2):
        assert window.try_acquire(t) is None
    assert window.try_acquire(0.5) == pytest.approx(0.5)
    assert window.try_acquire(1.0) is None  # 0.0 expired
    assert window.max_in_any_window == 3
    assert SlidingWindow.retry_after_header(0.01) == "1" and SlidingWindow.retry_after_header(1.2) == "2"
    unlimited = SlidingWindow(0)
    assert all(unlimited.try_acquire(0.0) is None for _ in range(50)) and unlimited.max_in_any_window == 50


def test_the_window_refuses_exactly_the_requests_that_would_exceed_the_limit_in_some_second() -> None:
    dice = random.Random(3)
    for limit in (1, 2, 5):
        window = SlidingWindow(limit)
        now, accepted = 1000.0, []
        for _ in range(3000):
            now += dice.choice((0.0, 0.001, 0.05, 0.2, 0.25, 0.5, 1.0)) * dice.random() ** 2
            in_window = [a for a in accepted if now - 1.0 < a <= now]
            wait = window.try_acquire(now)
            assert (wait is None) == (len(in_window) < limit), (limit, now)
            if wait is None:
                accepted.append(now)
            else:
                assert wait == pytest.approx(in_window[-limit] + 1.0 - now)
        busiest = max(sum(1 for b in accepted if a - 1.0 < b <= a) for a in accepted)
        assert window.max_in_any_window == busiest == limit


# --- faults -------------------------------------------------------------------------------------------------
async def test_error_after_acting_still_created_the_batch(make_client: MakeClient) -> None:
    client = await make_client(error_rate_after=1.0, fault_endpoints=frozenset({"initiate"}))
    status, body = await post(client, INITIATE, payload())
    assert status == 500 and body["type"] == "server_error"
    stats = await get_json(client, "/sim/stats")
    assert stats["batches"] == 1 and stats["faults"]["error_after"] == 1


async def test_invalid_accounts_are_refused_at_initiate_by_name(make_client: MakeClient) -> None:
    client = await make_client(invalid_accounts=frozenset({"254711111111"}))
    body = payload(
        {"account": "254712345678", "amount": 10},
        {"account": "254711111111", "amount": 20},
    )
    status, refused = await post(client, INITIATE, body)
    assert status == 400 and [e["attr"] for e in refused["errors"]] == ["transactions.1.account"]
    assert (await get_json(client, "/sim/stats"))["batches"] == 0


async def test_wallets_listed_in_sim_wallets_are_accepted_and_recorded(make_client: MakeClient) -> None:
    client = await make_client(wallets=frozenset({"WLTA1", "WLTB2"}))
    own = await initiate(client, {"account": "254712345678", "amount": 10}, wallet_id="WLTA1")
    default = await initiate(client, {"account": "254712345679", "amount": 20})  # wallet_id null
    assert own["wallet"]["wallet_id"] == "WLTA1" and own["wallet"]["wallet_type"] == "WORKING"
    assert default["wallet"]["wallet_id"] == "SIMWLT1" and default["wallet"]["wallet_type"] == "SETTLEMENT"
    for batch in (own, default):
        assert (await post(client, APPROVE, batch))[0] == 200
        await wait_final(client, batch["tracking_id"])
    ledger = await get_json(client, "/sim/ledger")
    assert {(p["account"], p["wallet_id"]) for p in ledger["payments"]} == {
        ("254712345678", "WLTA1"),
        ("254712345679", "SIMWLT1"),
    }
    status, body = await post(client, INITIATE, payload() | {"wallet_id": "NOTMINE"})
    assert status == 400 and [e["attr"] for e in body["errors"]] == ["wallet_id"]
    resp = await client.get(WALLETS, headers=AUTH)
    assert [w["wallet_id"] for w in await resp.json()] == ["SIMWLT1", "WLTA1", "WLTB2"]
    assert (await client.get(f"{WALLETS}WLTB2", headers=AUTH)).status == 200
    assert (await client.get(f"{WALLETS}NOTMINE", headers=AUTH)).status == 404


async def test_sim_wallets_star_accepts_any_wallet_id(make_client: MakeClient) -> None:
    client = await make_client(wallets=frozenset({"*"}))
    batch = await initiate(client, wallet_id="ANYTHING9")
    assert batch["wallet"]["wallet_id"] == "ANYTHING9"
    for wrong in ("", 42):
        status, body = await post(client, INITIATE, payload() | {"wallet_id": wrong})
        assert status == 400 and [e["attr"] for e in body["errors"]] == ["wallet_id"]


async def test_status_can_lag_behind_an_approval(make_client: MakeClient) -> None:
    clock = FakeClock()
    client = await make_client(clock=clock, status_lag_s=2.0)
    batch = await initiate(client)
    assert (await post(client, APPROVE, batch))[0] == 200
    _, shown = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert shown["status_code"] == "BP103"  # approved, but status does not say so yet
    clock.now += 2.5
    _, shown = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert shown["status_code"] == "BC100"


async def test_error_after_approve_still_pays(make_client: MakeClient) -> None:
    client = await make_client(error_rate_after=1.0, fault_endpoints=frozenset({"approve"}))
    batch = await initiate(client)
    status, _ = await post(client, APPROVE, batch)
    assert status == 500
    assert (await wait_final(client, batch["tracking_id"]))["status_code"] == "BC100"
    assert (await get_json(client, "/sim/ledger"))["total_paid"] == "38.00"


async def test_error_before_acting_does_nothing(make_client: MakeClient) -> None:
    client = await make_client(error_rate_before=1.0)
    status, _ = await post(client, INITIATE, payload())
    assert status == 500
    stats = await get_json(client, "/sim/stats")
    assert stats["batches"] == 0 and stats["faults"]["error_before"] == 1


async def test_hang_after_acting_times_out_the_client_but_acts(make_client: MakeClient) -> None:
    client = await make_client(hang_after_rate=1.0, fault_endpoints=frozenset({"initiate"}))
    with pytest.raises(asyncio.TimeoutError):
        await client.post(INITIATE, json=payload(), headers=AUTH, timeout=aiohttp.ClientTimeout(total=0.3))
    stats = await get_json(client, "/sim/stats")
    assert stats["batches"] == 1 and stats["faults"]["hang_after"] == 1
    # Closing the client (fixture teardown) must not wait an hour for the hung handler.


async def test_storm_429s_are_not_pace_violations(make_client: MakeClient) -> None:
    client = await make_client(storm_rate=1.0, max_rps=5)
    resp = await client.get(WALLETS, headers=AUTH)
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    stats = await get_json(client, "/sim/stats")
    assert stats["rejected_429_storm"] == 1 and stats["rejected_429_pace"] == 0 and stats["accepted"] == 0


async def test_latency_delays_requests(make_client: MakeClient) -> None:
    client = await make_client(latency_ms=150)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await client.get(WALLETS, headers=AUTH)).status == 200
    assert loop.time() - started >= 0.14


async def test_reset_clears_everything(make_client: MakeClient) -> None:
    client = await make_client()
    batch = await initiate(client, approval="NO")
    await wait_final(client, batch["tracking_id"])
    assert (await client.post("/sim/reset")).status == 200
    assert await get_json(client, "/sim/ledger") == {"payments": [], "total_paid": "0.00"}
    stats = await get_json(client, "/sim/stats")
    assert stats["requests"] == 0 and stats["batches"] == 0
    status, _ = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert status == 404
    assert (await client.get("/sim/healthz")).status == 200


# --- configuration and --help --------------------------------------------------------------------------------
def test_config_from_env() -> None:
    config = SimConfig.from_env(
        {
            "SIM_PORT": "0",
            "SIM_MAX_RPS": "0",
            "SIM_429_RETRY_AFTER": "0",
            "SIM_FAIL_ACCOUNTS": "254700000001, 2547000002",
            "SIM_FAULT_ENDPOINTS": "approve,status",
            "SIM_BALANCE": "12.5",
            "SIM_SEED": "42",
            "SIM_PROCESSING_S": "0",
            "SIM_SECOND_APPROVE_PAYS": "1",
            "SIM_WALLETS": "WLTA1, WLTB2",
        }
    )
    assert config.wallets == {"WLTA1", "WLTB2"} and SimConfig().wallets == frozenset()
    assert config.port == 0 and config.max_rps == 0 and config.retry_after is False
    assert config.fail_accounts == {"254700000001", "2547000002"}
    assert config.fault_endpoints == {"approve", "status"}
    assert config.balance == Decimal("12.50") and config.seed == 42 and config.processing_s == 0
    assert config.second_approve_pays is True and SimConfig().second_approve_pays is False
    assert SimConfig.from_env({}) == SimConfig()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SIM_PORT", "70000"),
        ("SIM_MAX_RPS", "-1"),
        ("SIM_ERROR_RATE_AFTER", "1.5"),
        ("SIM_BALANCE", "lots"),
        ("SIM_FAULT_ENDPOINTS", "initiate,refund"),
        ("SIM_429_RETRY_AFTER", "maybe"),
        ("SIM_LATENCY_MS", "nan"),
        ("SIM_SECOND_APPROVE_PAYS", "twice"),
    ],
)
def test_config_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SimConfigError, match=name):
        SimConfig.from_env({name: value})


def test_help_lists_every_variable() -> None:
    text = build_parser().format_help()
    expected = {
        "SIM_HOST",
        "SIM_PORT",
        "SIM_MAX_RPS",
        "SIM_LATENCY_MS",
        "SIM_ERROR_RATE_BEFORE",
        "SIM_ERROR_RATE_AFTER",
        "SIM_HANG_AFTER_RATE",
        "SIM_SLOW_RATE",
        "SIM_SLOW_MS",
        "SIM_429_STORM_RATE",
        "SIM_429_RETRY_AFTER",
        "SIM_FAIL_ACCOUNTS",
        "SIM_UNDETERMINED_ACCOUNTS",
        "SIM_UNDETERMINED_SETTLE_S",
        "SIM_STATUS_LAG_S",
        "SIM_INVALID_ACCOUNTS",
        "SIM_SECOND_APPROVE_PAYS",
        "SIM_BALANCE",
        "SIM_CHARGE",
        "SIM_PROCESSING_S",
        "SIM_SEED",
        "SIM_FAULT_ENDPOINTS",
        "SIM_WALLETS",
        "SIM_STATE_FILE",
    }
    assert {name for name, _, _ in ENV_VARS} == expected
    for name in expected:
        assert re.search(rf"^\s+{name}\s", text, re.M), name
    assert "no real money" in text
