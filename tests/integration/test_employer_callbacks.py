"""Employer events end to end in one process: real PostgreSQL, a real Dispatcher (FakeIntaSend behind it) and a
real aiohttp receiver on 127.0.0.1 that answers as each test scripts it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from dispatcher_service import batch_flow
from dispatcher_service.dispatcher import Dispatcher
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.retry import ProviderCaller
from shared import events, metrics, operators, outbox, resolutions, signing
from shared.payrolls import ItemStatus
from tests import factories
from tests.fakes import FakeIntaSend
from tests.integration.conftest import settings as dispatcher_settings
from tests.integration.test_audit_sql import AUDIT, psql_substitute, sql_blocks

ACCOUNTS = [f"2547{n:08d}" for n in range(5)]


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)


@dataclass
class Received:
    at: float  # monotonic
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next scripted answer (an HTTP status, or "hang"), then with the last one."""

    answers: list[int | str] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(time.monotonic(), dict(request.headers), await request.read()))
        answer = self.answers[min(len(self.received), len(self.answers)) - 1]
        if answer == "hang":
            await asyncio.sleep(3600)
        assert isinstance(answer, int)
        return web.Response(status=answer, text="thanks")


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def start(*answers: int | str) -> Receiver:
        r = Receiver(list(answers) or [200])
        app = web.Application()
        app.router.add_post("/payrun/events", r.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        r.url = f"http://127.0.0.1:{port}/payrun/events?token=abc"
        runners.append(runner)
        return r

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def dispatcher(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Start real Dispatchers with a callback session, as dispatcher_service/__main__.py builds them."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    sessions: list[aiohttp.ClientSession] = []

    def start(provider: FakeIntaSend, **overrides: Any) -> Dispatcher:
        s = dispatcher_settings(database_url, **overrides)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=s.employer_callback_concurrency),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        sessions.append(session)
        d = Dispatcher(
            pool=pool, dsn=database_url, provider=provider,
            caller=ProviderCaller(ProviderRateLimiter(pool, max_rps=s.intasend_max_rps)), settings=s,
            worker=f"d{len(stops)}", callbacks=session,
        )  # fmt: skip
        stop = asyncio.Event()
        stops.append((stop, asyncio.create_task(d.run(stop))))
        return d

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.gather(asyncio.wait_for(task, 10), return_exceptions=True)
    for session in sessions:
        await session.close()


async def _with_callback(pool: asyncpg.Pool, url: str, name: str = "Acme") -> tuple[uuid.UUID, str]:
    employer_id = await factories.employer(pool, name)
    async with pool.acquire() as conn:
        set_ = await events.set_callback(conn, employer_id, url)
    assert set_["secret"] is not None
    return employer_id, set_["secret"]


async def _wait(pool: asyncpg.Pool, sql: str, *args: Any, within_s: float = 20) -> Any:
    """Poll `sql` (one value) until it is truthy."""
    deadline = time.monotonic() + within_s
    while True:
        value = await pool.fetchval(sql, *args)
        if value:
            return value
        assert time.monotonic() < deadline, f"still not true after {within_s} s: {sql}"
        await asyncio.sleep(0.05)


async def _event_rows(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT id, status, attempts, payload, last_error FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'",
        payroll_id,
    )


def _verify(secret: str, header: str, body: bytes) -> bool:
    """A receiver's check, written independently of shared/signing.py."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) <= 300


async def test_a_finished_payroll_sends_one_signed_event(pool: asyncpg.Pool, receiver, dispatcher) -> None:
    r = await receiver(200)
    employer_id, secret = await _with_callback(pool, r.url)
    provider = FakeIntaSend(fail_accounts={ACCOUNTS[0]})
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    dispatcher(provider)
    await _wait(
        pool, "SELECT status = 'done' FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'", payroll
    )
    [row] = await _event_rows(pool, payroll)
    [got] = r.received
    assert _verify(secret, got.headers[signing.SIGNATURE_HEADER], got.body)
    assert not _verify("whsec_" + "x" * 43, got.headers[signing.SIGNATURE_HEADER], got.body)
    event = json.loads(got.body)
    assert event == row["payload"]
    assert got.headers[signing.EVENT_ID_HEADER] == event["event_id"]
    assert got.headers["Content-Type"] == "application/json"
    reference = await pool.fetchval("SELECT reference FROM payrolls WHERE id = $1", payroll)
    assert {k: v for k, v in event.items() if k not in ("event_id", "occurred_at")} == {
        "type": "payroll.partially_failed",
        "payroll_id": str(payroll),
        "reference": reference,
        "status": "PARTIALLY_FAILED",
        "item_count": 5,
        "counts": {"PENDING": 0, "SUBMITTED": 0, "PAID": 4, "FAILED": 1, "NEEDS_REVIEW": 0, "CANCELLED": 0},
        "total_amount": "500.00",
        "paid_amount": "400.00",
        "currency": "KES",
    }
    attempts = await pool.fetch(
        "SELECT action, outcome, detail FROM outbox_attempts WHERE outbox_id = $1", row["id"]
    )
    assert [(a["action"], a["outcome"]) for a in attempts] == [("deliver", "ok")]
    assert "HTTP 200" in attempts[0]["detail"] and "token=abc" not in attempts[0]["detail"]
    # The event row was written with the payroll's final state: same transaction, same clock reading.
    finished_at, created_at = await pool.fetchrow(
        "SELECT p.finished_at, o.created_at FROM payrolls p JOIN outbox o ON o.payroll_id = p.id"
        " WHERE p.id = $1 AND o.kind = 'deliver_event'",
        payroll,
    )
    assert finished_at == created_at


async def test_a_failing_receiver_gets_the_same_event_again_after_a_back_off(
    pool: asyncpg.Pool, receiver, dispatcher
) -> None:
    r = await receiver(500, 503, 200)
    employer_id, secret = await _with_callback(pool, r.url)
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    dispatcher(FakeIntaSend(), employer_callback_retry_s=0.3)
    await _wait(
        pool, "SELECT status = 'done' FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'", payroll
    )
    assert len(r.received) == 3
    assert len({got.body for got in r.received}) == 1, "every attempt sends the same event"
    assert len({got.headers[signing.EVENT_ID_HEADER] for got in r.received}) == 1
    assert all(_verify(secret, got.headers[signing.SIGNATURE_HEADER], got.body) for got in r.received)
    gaps = [b.at - a.at for a, b in zip(r.received, r.received[1:], strict=False)]
    assert gaps[0] >= 0.3 * 0.8 and gaps[1] >= 0.6 * 0.8, gaps  # 0.3 s, then doubled (±20% jitter)
    [row] = await _event_rows(pool, payroll)
    assert (row["status"], row["attempts"]) == ("done", 3)
    outcomes = await pool.fetch(
        "SELECT attempt, outcome, detail FROM outbox_attempts WHERE outbox_id = $1 ORDER BY id", row["id"]
    )
    assert [(a["attempt"], a["outcome"]) for a in outcomes] == [
        (1, "http_error"), (2, "http_error"), (3, "ok"),
    ]  # fmt: skip
    assert "HTTP 500" in outcomes[0]["detail"] and "HTTP 503" in outcomes[1]["detail"]


async def test_an_event_dies_after_its_last_attempt(pool: asyncpg.Pool, receiver, dispatcher) -> None:
    r = await receiver(500)
    employer_id, _ = await _with_callback(pool, r.url)
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    dispatcher(FakeIntaSend(), employer_callback_retry_s=0.1, employer_callback_max_attempts=2)
    await _wait(
        pool, "SELECT status = 'dead' FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'", payroll
    )
    [row] = await _event_rows(pool, payroll)
    assert row["attempts"] == 2 and "HTTP 500" in row["last_error"]
    assert len(r.received) == 2
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll) == "COMPLETED"


async def test_a_hanging_receiver_does_not_delay_payouts(pool: asyncpg.Pool, receiver, dispatcher) -> None:
    """Every event hangs (timeout far beyond the test), more events than event slots and than payout slots:
    payrolls queued after them are still paid as fast as ever."""
    r = await receiver("hang")
    employer_id, _ = await _with_callback(pool, r.url)
    dispatcher(
        FakeIntaSend(),
        dispatcher_concurrency=2,
        employer_callback_concurrency=3,
        employer_callback_timeout_s=120.0,
    )
    first = [
        await factories.processing_payroll(pool, employer_id=employer_id, accounts=[f"2547100000{n:02d}"])
        for n in range(5)
    ]
    await _wait(
        pool, "SELECT count(*) = 5 FROM payrolls WHERE id = ANY($1) AND status <> 'PROCESSING'", first
    )
    await _wait(
        pool, "SELECT count(*) >= 3 FROM outbox WHERE kind = 'deliver_event' AND status = 'in_progress'"
    )
    for _ in range(200):  # claimed, so their POSTs are on their way
        if len(r.received) >= 3:
            break
        await asyncio.sleep(0.01)
    assert len(r.received) == 3, "three event slots, all hanging"
    started = time.monotonic()
    later = [
        await factories.processing_payroll(pool, employer_id=employer_id, accounts=[f"2547200000{n:02d}"])
        for n in range(6)
    ]
    await _wait(
        pool,
        "SELECT count(*) = 6 FROM payrolls WHERE id = ANY($1) AND status = 'COMPLETED'",
        later,
        within_s=10,
    )
    took = time.monotonic() - started
    assert took < 5.0, f"6 payrolls took {took:.1f} s behind hanging events"
    assert len(r.received) == 3, "no event beyond its slots"
    pending = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE kind = 'deliver_event' AND status = 'pending'"
    )
    assert pending == 8  # 11 events, 3 in flight


async def test_an_employer_without_a_callback_gets_no_event_row(
    pool: asyncpg.Pool, receiver, dispatcher
) -> None:
    r = await receiver(200)
    with_callback, _ = await _with_callback(pool, r.url, "Acme")
    without = await factories.employer(pool, "Beta")
    quiet = await factories.processing_payroll(pool, employer_id=without, accounts=ACCOUNTS)
    told = await factories.processing_payroll(pool, employer_id=with_callback, accounts=ACCOUNTS)
    dispatcher(FakeIntaSend())
    await _wait(
        pool, "SELECT status = 'done' FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'", told
    )
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", quiet) == "COMPLETED"
    assert await _event_rows(pool, quiet) == []
    assert [json.loads(got.body)["payroll_id"] for got in r.received] == [str(told)]


async def test_a_callback_cleared_before_delivery_ends_the_event_dead(
    pool: asyncpg.Pool, receiver, dispatcher
) -> None:
    r = await receiver(200)
    employer_id, _ = await _with_callback(pool, r.url)
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    async with pool.acquire() as conn:
        await pool.execute("UPDATE payrolls SET status = 'COMPLETED' WHERE id = $1", payroll)
        assert await events.emit(conn, payroll) is not None
        assert await events.clear_callback(conn, employer_id) == r.url
    # Only the event row is due: the payroll's payout row is held back.
    await pool.execute("UPDATE outbox SET available_at = now() + interval '1 hour' WHERE kind = 'send_batch'")
    dispatcher(FakeIntaSend())
    await _wait(
        pool, "SELECT status = 'dead' FROM outbox WHERE payroll_id = $1 AND kind = 'deliver_event'", payroll
    )
    [row] = await _event_rows(pool, payroll)
    assert "no callback URL" in row["last_error"]
    assert r.received == []


async def test_an_event_is_queued_once_per_final_status(pool: asyncpg.Pool) -> None:
    employer_id, _ = await _with_callback(pool, "https://hooks.example.com/payrun")
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    async with pool.acquire() as conn:
        assert await events.emit(conn, payroll) is None, "PROCESSING is not final"
        await conn.execute("UPDATE payrolls SET status = 'NEEDS_REVIEW' WHERE id = $1", payroll)
        first = await events.emit(conn, payroll)
        assert first is not None and await events.emit(conn, payroll) is None
        await conn.execute("UPDATE payrolls SET status = 'COMPLETED' WHERE id = $1", payroll)
        assert await events.emit(conn, payroll) is not None
    rows = await _event_rows(pool, payroll)
    assert sorted(r["payload"]["type"] for r in rows) == ["payroll.completed", "payroll.needs_review"]
    assert len({r["payload"]["event_id"] for r in rows}) == 2


async def test_the_claim_keeps_payout_and_event_shares_apart(pool: asyncpg.Pool) -> None:
    employer_id, _ = await _with_callback(pool, "https://hooks.example.com/payrun")
    payrolls = [
        await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS) for _ in range(4)
    ]
    async with pool.acquire() as conn:
        for payroll in payrolls[:3]:
            await conn.execute("UPDATE payrolls SET status = 'COMPLETED' WHERE id = $1", payroll)
            await events.emit(conn, payroll)
    # Events only: the payout rows stay pending, and the events in flight do not make their employer look
    # busy (the payout turns still start at 1); events take no turn of their own.
    only_events = await outbox.claim(pool, worker="w", lease_s=30, limit=0, events=2)
    assert {row.kind for row in only_events} == {"deliver_event"} and len(only_events) == 2
    turns = await pool.fetch(
        "SELECT o.kind, t.turn FROM outbox_turns t JOIN outbox o ON o.id = t.id ORDER BY t.turn"
    )
    assert [(t["kind"], t["turn"]) for t in turns] == [("send_batch", n) for n in range(1, 5)]
    only_payouts = await outbox.claim(pool, worker="w", lease_s=30, limit=10)
    assert {row.kind for row in only_payouts} == {"send_batch"} and len(only_payouts) == 4
    rest = await outbox.claim(pool, worker="w", lease_s=30, limit=5, events=5)
    assert [row.kind for row in rest] == ["deliver_event"]


async def test_a_review_payroll_sends_needs_review_then_its_final_status_once_resolved(
    pool: asyncpg.Pool, receiver, dispatcher
) -> None:
    r = await receiver(200)
    employer_id, secret = await _with_callback(pool, r.url)
    provider = FakeIntaSend(undetermined_accounts={ACCOUNTS[0], ACCOUNTS[1]})
    payroll = await factories.processing_payroll(pool, employer_id=employer_id, accounts=ACCOUNTS)
    dispatcher(provider)
    await _wait(pool, "SELECT count(*) = 1 FROM outbox WHERE kind = 'deliver_event' AND status = 'done'")
    items = await pool.fetch(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 AND status = 'NEEDS_REVIEW' ORDER BY id", payroll
    )
    operator = await operators.create(pool, "jane.doe")
    operator_id = uuid.UUID(operator["id"])
    # One of two settled: still NEEDS_REVIEW, no new event.
    one = resolutions.Resolution(items[0]["id"], ItemStatus.PAID, provider_reference="QK1")
    await resolutions.resolve(pool, operator_id, [one], None)
    other = resolutions.Resolution(items[1]["id"], ItemStatus.FAILED, reason="TS100 at IntaSend")
    await resolutions.resolve(pool, operator_id, [other], None)
    await _wait(pool, "SELECT count(*) = 2 FROM outbox WHERE kind = 'deliver_event' AND status = 'done'")
    await asyncio.sleep(0.3)
    sent = [json.loads(got.body) for got in r.received]
    assert [(e["type"], e["counts"]["PAID"], e["counts"]["NEEDS_REVIEW"]) for e in sent] == [
        ("payroll.needs_review", 3, 2), ("payroll.partially_failed", 4, 0),
    ]  # fmt: skip
    assert all(_verify(secret, got.headers[signing.SIGNATURE_HEADER], got.body) for got in r.received)


async def test_the_audit_queries_show_delivered_and_given_up_events(
    pool: asyncpg.Pool, receiver, dispatcher
) -> None:
    """docs/audit.md, "Events sent to employers", run as written."""
    good, bad = await receiver(200), await receiver(500)
    told, _ = await _with_callback(pool, good.url, "Acme")
    failing, _ = await _with_callback(pool, bad.url, "Beta")
    delivered = await factories.processing_payroll(pool, employer_id=told, accounts=ACCOUNTS)
    given_up = await factories.processing_payroll(pool, employer_id=failing, accounts=ACCOUNTS)
    dispatcher(FakeIntaSend(), employer_callback_retry_s=0.05, employer_callback_max_attempts=3)
    await _wait(
        pool, "SELECT count(*) = 2 FROM outbox WHERE kind = 'deliver_event' AND status IN ('done', 'dead')"
    )
    blocks = [b for b in sql_blocks(AUDIT) if b.heading == "Events sent to employers"]
    assert len(blocks) == 3

    async def run(index: int, **variables: Any) -> list[asyncpg.Record]:
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            return await conn.fetch(psql_substitute(blocks[index].sql, {"days": 1} | variables))

    [line] = await run(0, payroll_id=delivered)
    assert (line["type"], line["status"], line["delivered_attempts"], line["failed_attempts"]) == (
        "payroll.completed", "done", 1, 0,
    )  # fmt: skip
    [line] = await run(0, payroll_id=given_up)
    assert (line["status"], line["delivered_attempts"], line["failed_attempts"]) == ("dead", 0, 3)
    assert "HTTP 500" in line["last_error"]
    attempts = await run(1, payroll_id=given_up)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(n, "http_error") for n in (1, 2, 3)]
    per_employer = {r["employer"]: r for r in await run(2)}
    assert {name: (r["delivered"], r["given_up"], r["still_trying"]) for name, r in per_employer.items()} == {
        "Acme": (1, 0, 0), "Beta": (0, 1, 0),
    }  # fmt: skip
    # The payout gauges do not count the dead event; the events' gauge does.
    await metrics.refresh_backlog(pool)
    assert REGISTRY.get_sample_value("payrun_outbox_rows", {"status": "dead"}) == 0
    assert REGISTRY.get_sample_value("payrun_employer_events", {"status": "dead"}) == 1
