"""A dispatcher that is alive but paused (GC, VM steal, SIGSTOP, a database outage while its heartbeats fail)
sends nothing more once its lease may have run out, never runs two flows for one row, and leaks no
connection; the send log keeps counting what the provider may still count."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import asyncpg
import pytest

from dispatcher_service import batch_flow
from dispatcher_service import dispatcher as dispatcher_module
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.retry import ProviderCaller
from shared import batches, outbox
from tests import factories
from tests.fakes import FakeIntaSend
from tests.integration.test_dispatcher_flow import ACCOUNTS, wait_final

LEASE_S = 1.5
REAL_EXTEND_LEASES = outbox.extend_leases


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)


def heartbeats_fail_for(monkeypatch: pytest.MonkeyPatch, workers: set[str]) -> None:
    """The database refuses these dispatchers' heartbeats (as in an outage seen only by them)."""

    async def extend_leases(conn, *, worker, lease_s, held):  # type: ignore[no-untyped-def]
        if worker in workers:
            raise OSError("heartbeat refused (test)")
        return await REAL_EXTEND_LEASES(conn, worker=worker, lease_s=lease_s, held=held)

    monkeypatch.setattr(dispatcher_module.outbox, "extend_leases", extend_leases)


async def test_a_flow_stalled_in_the_limiter_past_its_lease_sends_no_approve(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writes `approving`, then stalls between its send slot and the approve; its lease runs out and B
    takes the row over, asks status and approves. A wakes: it must not approve the same batch again."""
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    [a] = run_dispatchers(provider, dispatcher_lease_s=LEASE_S)
    limiter = a.dispatcher.caller._limiter
    real_acquire = limiter.acquire
    stalled = asyncio.Event()
    acquired = 0

    async def stalling_acquire(priority=0):  # type: ignore[no-untyped-def]
        nonlocal acquired
        send = await real_acquire(priority)
        acquired += 1
        if acquired == 2:  # initiate, then the approve's grant: stall here, heartbeats failing meanwhile
            heartbeats_fail_for(monkeypatch, {a.dispatcher.worker})
            stalled.set()
            await asyncio.sleep(LEASE_S + 2.0)
        return send

    limiter.acquire = stalling_acquire  # type: ignore[method-assign]
    await asyncio.wait_for(stalled.wait(), 10)
    run_dispatchers(provider, dispatcher_lease_s=5.0)  # B
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    await asyncio.sleep(LEASE_S + 2.5)  # A has woken by now
    assert provider.calls.count("approve") == 1, provider.calls
    assert provider.paid_accounts() == sorted(ACCOUNTS)


async def test_a_dispatcher_whose_heartbeats_fail_stops_sending_within_its_lease(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider keeps the batch processing, so the flow polls inline; the heartbeats fail. Each flow
    (one per claim) sends only within its own lease, and never two flows of one row at once."""
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.1,))
    provider = FakeIntaSend()
    provider._settle = lambda b: None  # type: ignore[method-assign]  # processing for ever
    sends: dict[object, list[float]] = defaultdict(list)  # by flow task, kept alive
    real_status = provider.status

    async def status(tracking_id: str):  # type: ignore[no-untyped-def]
        sends[asyncio.current_task()].append(time.monotonic())
        return await real_status(tracking_id)

    provider.status = status  # type: ignore[method-assign]
    await factories.processing_payroll(pool, accounts=ACCOUNTS)
    [a] = run_dispatchers(provider, dispatcher_lease_s=LEASE_S)
    heartbeats_fail_for(monkeypatch, {a.dispatcher.worker})
    await asyncio.sleep(4 * LEASE_S)
    await a.close()
    assert sends, "the flow polled"
    spans = sorted((min(t), max(t)) for t in sends.values())
    for first, last in spans:
        assert last - first < LEASE_S, f"a flow sent for {last - first:.2f} s on a {LEASE_S} s lease"
    for (_, last), (next_first, _) in zip(spans, spans[1:], strict=False):
        assert next_first > last, "two flows of one row sent at the same time"


async def test_a_dispatcher_never_claims_a_row_whose_flow_it_still_runs(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status request hangs past the lease while the heartbeats fail: the row's lease runs out in the
    database, but this dispatcher must not claim it again (a second flow, overwriting the first's entry)
    until the first flow has ended."""
    provider = FakeIntaSend()
    real_status = provider.status
    hanging = asyncio.Event()

    async def status(tracking_id: str):  # type: ignore[no-untyped-def]
        if not hanging.is_set():
            hanging.set()
            await asyncio.sleep(LEASE_S + 2.0)
        return await real_status(tracking_id)

    provider.status = status  # type: ignore[method-assign]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    [a] = run_dispatchers(provider, dispatcher_lease_s=LEASE_S)
    await asyncio.wait_for(hanging.wait(), 10)
    heartbeats_fail_for(monkeypatch, {a.dispatcher.worker})
    deadline = time.monotonic() + LEASE_S + 1.5
    while time.monotonic() < deadline:  # the lease has run out in the database meanwhile
        assert await pool.fetchval("SELECT attempts FROM outbox WHERE payroll_id = $1", payroll) == 1
        assert len(a.dispatcher._tasks) == 1
        await asyncio.sleep(0.1)
    heartbeats_fail_for(monkeypatch, set())  # the database answers again
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    await asyncio.sleep(0.2)
    assert a.dispatcher._tasks == {} and a.dispatcher._leases == {}


async def test_a_fenced_write_cancelled_while_waiting_for_the_row_lock_leaks_no_connection(
    pool: asyncpg.Pool,
) -> None:
    await factories.processing_payroll(pool, accounts=ACCOUNTS[:2])
    [row] = await outbox.claim(pool, worker="w", lease_s=30, limit=1)
    blocker = await pool.acquire()
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("SELECT id FROM outbox WHERE id = $1 FOR UPDATE", row.id)
        write = asyncio.create_task(batches.fail_items(pool, row, []))
        waiting = 0
        for _ in range(100):
            await asyncio.sleep(0.05)
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
        assert waiting == 1, "the fenced write waits for the row lock"
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        await tx.rollback()
    finally:
        await pool.release(blocker)
    await asyncio.sleep(0.3)
    idle_in_tx = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%'"
    )
    assert idle_in_tx == 0
    held = [await pool.acquire(timeout=2) for _ in range(pool.get_max_size())]  # the pool is whole
    for conn in held:
        await pool.release(conn)


async def test_a_request_answered_late_is_counted_until_a_window_after_its_answer(
    pool: asyncpg.Pool,
) -> None:
    limiter = ProviderRateLimiter(pool, max_rps=1)
    slow = await limiter.acquire()
    await asyncio.sleep(1.5)  # the provider took 1.5 s to answer (past the 1 s stamp bound)
    await limiter.answered(slow)
    answered_at = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - answered_at >= 0.95, "the slow request stopped counting before its answer + 1 s"


async def test_a_grant_not_used_at_once_is_given_back_and_a_new_place_taken(pool: asyncpg.Pool) -> None:
    """The process pauses between the send log's grant and the request: it must not send on that grant."""
    limiter = ProviderRateLimiter(pool, max_rps=50)
    real_acquire = limiter.acquire
    grants = 0

    async def pausing_acquire(priority=0):  # type: ignore[no-untyped-def]
        nonlocal grants
        send = await real_acquire(priority)
        grants += 1
        if grants == 1:
            time.sleep(0.5)  # noqa: ASYNC251 - the whole process stops, as in a GC pause or SIGSTOP
        return send

    limiter.acquire = pausing_acquire  # type: ignore[method-assign]
    sent: list[int] = []

    async def request() -> str:
        sent.append(1)
        return "ok"

    assert await ProviderCaller(limiter).once("status", request) == "ok"
    assert grants == 2 and len(sent) == 1
    assert await pool.fetchval("SELECT count(*) FROM provider_sends") == 1
