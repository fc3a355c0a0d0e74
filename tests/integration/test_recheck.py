"""The slow re-check of NEEDS_REVIEW items against real PostgreSQL: a late answer from IntaSend settles the
item (with a record, the payroll's status and paid_amount recomputed), agrees with or overrides a person's
resolution, a 404 stays NEEDS_REVIEW, one dispatcher at a time per batch, fenced, within the rate limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from dispatcher_service import batch_flow, retry
from dispatcher_service.dispatcher import Dispatcher
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.recheck import Rechecker, next_wait_s
from dispatcher_service.retry import ProviderCaller
from shared import operators, rechecks, resolutions
from shared.payrolls import ItemStatus
from tests import factories
from tests.fakes import FakeIntaSend, LateIntaSend
from tests.integration.conftest import settings

ACCOUNTS = [f"2547{n:08d}" for n in range(3)]
FIRST_S = 60.0


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)
    monkeypatch.setattr(retry, "_backoff", lambda state: 0.01)


@dataclass
class Reviewed:
    payroll_id: uuid.UUID
    items: dict[str, int]  # account → item id
    refs: dict[str, str]  # account → request_reference_id
    tracking_id: str
    last_status: dict[str, Any]  # what IntaSend answered last, as stored

    @property
    def in_review(self) -> list[int]:
        return [self.items[a] for a in self.undetermined]

    undetermined: tuple[str, ...] = ()


async def reviewed(
    pool: asyncpg.Pool,
    dsn: str,
    undetermined: tuple[str, ...] = (ACCOUNTS[0],),
    accounts: list[str] = ACCOUNTS,
) -> Reviewed:
    """A payroll a real dispatcher paid, its `undetermined` accounts ending TF105 (NEEDS_REVIEW)."""
    payroll_id = await factories.processing_payroll(pool, accounts=accounts, amount=Decimal("100.00"))
    s = settings(dsn, recheck_first_s=3600.0)
    stop = asyncio.Event()
    limiter = ProviderRateLimiter(pool, max_rps=s.intasend_max_rps)
    dispatcher = Dispatcher(
        pool=pool,
        dsn=dsn,
        provider=FakeIntaSend(undetermined_accounts=set(undetermined)),
        caller=ProviderCaller(limiter),
        settings=s,
        worker=f"payer-{uuid.uuid4().hex[:4]}",
    )
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        for _ in range(400):
            if await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll_id) != "PROCESSING":
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll_id) == "NEEDS_REVIEW"
    rows = await pool.fetch(
        "SELECT id, account, request_reference_id FROM payroll_items WHERE payroll_id = $1", payroll_id
    )
    batch = await pool.fetchrow(
        "SELECT tracking_id, last_status FROM provider_batches WHERE payroll_id = $1", payroll_id
    )
    return Reviewed(
        payroll_id,
        {r["account"]: r["id"] for r in rows},
        {r["account"]: r["request_reference_id"] for r in rows},
        batch["tracking_id"],
        batch["last_status"],
        undetermined,
    )


def rechecker(pool: asyncpg.Pool, dsn: str, provider: Any, worker: str = "r1", **overrides: Any) -> Rechecker:
    s = settings(dsn, **{"recheck_first_s": FIRST_S, **overrides})
    caller = ProviderCaller(ProviderRateLimiter(pool, max_rps=s.intasend_max_rps))
    return Rechecker(pool=pool, provider=provider, caller=caller, settings=s, worker=worker)


async def due(pool: asyncpg.Pool, r: Reviewed) -> None:
    await rechecks.due_now(pool, item_ids=r.in_review)


async def item(pool: asyncpg.Pool, item_id: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT status, provider_reference, failure_reason FROM payroll_items WHERE id = $1", item_id
    )
    assert row is not None
    return row


async def payroll(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> tuple[str, Decimal]:
    row = await pool.fetchrow("SELECT status, paid_amount FROM payrolls WHERE id = $1", payroll_id)
    assert row is not None
    return row["status"], row["paid_amount"]


async def schedule(pool: asyncpg.Pool, tracking_id: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        """SELECT checks, last_result, finished_at, gave_up_at, locked_by,
                  extract(epoch FROM due_at - now())::float8 AS due_in_s
           FROM batch_rechecks WHERE tracking_id = $1""",
        tracking_id,
    )
    assert row is not None
    return row


async def resolve(pool: asyncpg.Pool, item_id: int, status: ItemStatus, **evidence: str) -> None:
    async with pool.acquire() as conn:
        jane = await operators.create(conn, f"jane.{uuid.uuid4().hex[:4]}")
    await resolutions.resolve(
        pool, uuid.UUID(jane["id"]), [resolutions.Resolution(item_id, status, **evidence)], "ticket 5521"
    )


async def test_a_late_paid_answer_pays_the_item_and_completes_the_payroll(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    assert await payroll(pool, r.payroll_id) == ("NEEDS_REVIEW", Decimal("200.00"))
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)

    assert await rechecker(pool, database_url, provider).run_once() == 0.0

    assert provider.calls == [r.tracking_id]
    assert tuple(await item(pool, r.items[ACCOUNTS[0]])) == ("PAID", "QKLATE0001", None)
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    record = await pool.fetchrow("SELECT * FROM item_rechecks")
    assert record["item_id"] == r.items[ACCOUNTS[0]] and record["payroll_id"] == r.payroll_id
    assert (record["recorded_by"], record["dispatcher"]) == ("provider re-check", "r1")
    assert (record["from_status"], record["to_status"]) == ("NEEDS_REVIEW", "PAID")
    assert record["provider_reference"] == "QKLATE0001" and record["status_code"] == "TS100"
    assert record["evidence"]["request_reference_id"] == r.refs[ACCOUNTS[0]]
    assert record["resolution_id"] is None and record["agrees"] is None
    done = await schedule(pool, r.tracking_id)
    assert done["finished_at"] is not None and done["checks"] == 1 and done["locked_by"] is None
    assert await rechecks.claim(pool, worker="x", lease_s=5, limit=5) == [], "nothing left to re-check"


async def test_a_late_failure_fails_the_item_with_the_reason(pool: asyncpg.Pool, database_url: str) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TF106", None)})
    await due(pool, r)
    await rechecker(pool, database_url, provider).run_once()
    status, reference, reason = await item(pool, r.items[ACCOUNTS[0]])
    assert (status, reference) == ("FAILED", None)
    assert reason.startswith("provider re-check: ") and "TF106" in reason
    assert await payroll(pool, r.payroll_id) == ("PARTIALLY_FAILED", Decimal("200.00"))


async def test_an_answer_not_final_yet_asks_again_later_and_later(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend(answers={r.tracking_id: r.last_status})  # still TF105
    await due(pool, r)
    checker = rechecker(pool, database_url, provider)
    await checker.run_once()
    first = await schedule(pool, r.tracking_id)
    assert first["checks"] == 1 and "TF105" not in first["last_result"] and "BC100" in first["last_result"]
    assert first["due_in_s"] == pytest.approx(FIRST_S, abs=5)
    await pool.execute("UPDATE batch_rechecks SET due_at = now()")
    await checker.run_once()
    second = await schedule(pool, r.tracking_id)
    assert second["checks"] == 2 and second["due_in_s"] == pytest.approx(2 * FIRST_S, abs=5)
    assert (await item(pool, r.items[ACCOUNTS[0]]))["status"] == "NEEDS_REVIEW"
    assert await pool.fetchval("SELECT count(*) FROM item_rechecks") == 0


def test_the_wait_doubles_from_minutes_to_hours() -> None:
    waits = [next_wait_s(n, 300, 6 * 3600) for n in range(1, 12)]
    assert waits[:4] == [300, 600, 1200, 2400]
    assert waits[-1] == 6 * 3600 and all(a <= b for a, b in zip(waits, waits[1:], strict=False))


async def test_a_404_keeps_the_item_in_review_and_counts_the_check(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend()  # IntaSend lost the batch
    await due(pool, r)
    await rechecker(pool, database_url, provider).run_once()
    assert provider.calls == [r.tracking_id]
    assert (await item(pool, r.items[ACCOUNTS[0]]))["status"] == "NEEDS_REVIEW"
    assert await payroll(pool, r.payroll_id) == ("NEEDS_REVIEW", Decimal("200.00"))
    lost = await schedule(pool, r.tracking_id)
    assert (lost["checks"], lost["last_result"]) == (1, "not_found")
    assert lost["finished_at"] is None and lost["gave_up_at"] is None and lost["due_in_s"] > 0


async def test_a_late_answer_that_agrees_with_a_person_changes_nothing(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    tf105 = r.items[ACCOUNTS[0]]
    await resolve(pool, tf105, ItemStatus.PAID, provider_reference="QKSTATEMENT")
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    resolved = tuple(await item(pool, tf105))
    assert resolved[:2] == ("PAID", "QKSTATEMENT")
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)
    await rechecker(pool, database_url, provider).run_once()
    assert tuple(await item(pool, tf105)) == resolved
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    record = await pool.fetchrow("SELECT * FROM item_rechecks WHERE item_id = $1", tf105)
    resolution = await pool.fetchval("SELECT id FROM item_resolutions WHERE item_id = $1", tf105)
    assert (record["resolution_id"], record["agrees"]) == (resolution, True)
    assert (record["from_status"], record["to_status"], record["provider_reference"]) == (
        "PAID",
        "PAID",
        "QKLATE0001",
    )


async def test_a_late_answer_that_disagrees_with_a_person_wins_with_a_record(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    tf105 = r.items[ACCOUNTS[0]]
    await resolve(pool, tf105, ItemStatus.FAILED, reason="support said not sent")
    assert await payroll(pool, r.payroll_id) == ("PARTIALLY_FAILED", Decimal("200.00"))
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)
    with capture_logs() as logs:
        await rechecker(pool, database_url, provider).run_once()

    assert tuple(await item(pool, tf105)) == ("PAID", "QKLATE0001", None)
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    person = await pool.fetchrow(
        "SELECT id, to_status, reason FROM item_resolutions WHERE item_id = $1", tf105
    )
    assert (person["to_status"], person["reason"]) == ("FAILED", "support said not sent"), "kept as it was"
    record = await pool.fetchrow("SELECT * FROM item_rechecks WHERE item_id = $1", tf105)
    assert (record["from_status"], record["to_status"]) == ("FAILED", "PAID")
    assert (record["resolution_id"], record["agrees"]) == (person["id"], False)
    [warning] = [e for e in logs if e["event"] == "late_answer_overrides_resolution"]
    assert warning["log_level"] == "warning" and warning["item_id"] == tf105
    assert warning["payroll_status"] == "COMPLETED"


async def test_a_late_failure_overrides_a_paid_resolution(pool: asyncpg.Pool, database_url: str) -> None:
    r = await reviewed(pool, database_url)
    tf105 = r.items[ACCOUNTS[0]]
    await resolve(pool, tf105, ItemStatus.PAID, provider_reference="QKWRONG")
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TF106", None)})
    await due(pool, r)
    await rechecker(pool, database_url, provider).run_once()
    status, reference, reason = await item(pool, tf105)
    assert (status, reference) == ("FAILED", None) and reason.startswith("provider re-check: ")
    assert await payroll(pool, r.payroll_id) == ("PARTIALLY_FAILED", Decimal("200.00"))
    assert await pool.fetchval("SELECT agrees FROM item_rechecks WHERE item_id = $1", tf105) is False


async def test_two_dispatchers_never_recheck_one_batch_at_once(pool: asyncpg.Pool, database_url: str) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend(gate=asyncio.Event())
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)
    first = asyncio.create_task(rechecker(pool, database_url, provider, "r1").run_once())
    for _ in range(200):
        if provider.calls:
            break
        await asyncio.sleep(0.01)
    assert provider.calls == [r.tracking_id], "the first dispatcher is asking IntaSend"
    # The second finds the batch due but held: it does not ask.
    assert await asyncio.wait_for(rechecker(pool, database_url, provider, "r2").run_once(), 10) > 0
    assert provider.calls == [r.tracking_id]
    provider.gate.set()
    await first
    assert provider.calls == [r.tracking_id]
    assert await pool.fetchval("SELECT array_agg(dispatcher) FROM item_rechecks") == ["r1"]


async def test_a_paused_dispatcher_writes_no_stale_answer(pool: asyncpg.Pool, database_url: str) -> None:
    """r1 asks, then stalls past its lease with IntaSend's old answer (TF106) in hand; r2 takes the batch over
    and records the newer one (TS100). When r1 wakes up, its answer is fenced out."""
    r = await reviewed(pool, database_url)
    stale = LateIntaSend(gate=asyncio.Event())
    stale.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TF106", None)})
    fresh = LateIntaSend()
    fresh.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)
    paused = asyncio.create_task(rechecker(pool, database_url, stale, "r1").run_once())
    for _ in range(200):
        if stale.calls:
            break
        await asyncio.sleep(0.01)
    await pool.execute(
        "UPDATE batch_rechecks SET locked_until = now() - interval '1 second'"
    )  # r1's lease ran out
    await rechecker(pool, database_url, fresh, "r2").run_once()
    with capture_logs() as logs:
        stale.gate.set()
        await paused
    assert tuple(await item(pool, r.items[ACCOUNTS[0]])) == ("PAID", "QKLATE0001", None)
    assert await pool.fetchval("SELECT array_agg(dispatcher) FROM item_rechecks") == ["r2"]
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    assert [e["event"] for e in logs] == ["recheck_lease_lost"]
    after = await schedule(pool, r.tracking_id)
    assert after["checks"] == 1 and after["finished_at"] is not None, "r2's check stands"


async def test_rechecks_wait_for_the_shared_rate_limit(pool: asyncpg.Pool, database_url: str) -> None:
    """A 429 paused every dispatcher: the re-check waits for the pause, and its request is in the send log."""
    r = await reviewed(pool, database_url)
    provider = LateIntaSend(answers={r.tracking_id: r.last_status})
    await due(pool, r)
    sends = await pool.fetchval("SELECT count(*) FROM provider_sends")
    await pool.execute(
        "UPDATE provider_rate SET paused_until = clock_timestamp() + interval '1 second', "
        "next_slot = clock_timestamp() + interval '1 second', pause_epoch = pause_epoch + 1"
    )
    started = time.monotonic()
    await rechecker(pool, database_url, provider).run_once()
    assert time.monotonic() - started >= 0.9
    assert provider.calls == [r.tracking_id]
    assert await pool.fetchval("SELECT count(*) FROM provider_sends") == sends + 1


async def test_rechecks_keep_to_their_share_of_the_limit(pool: asyncpg.Pool, database_url: str) -> None:
    """RECHECK_SHARE 0.1 of INTASEND_MAX_RPS 20: two checks a second at most, whatever is due."""
    reviews = [
        await reviewed(pool, database_url, accounts=[f"2547{n:02d}{m:06d}" for m in range(2)], undetermined=(f"2547{n:02d}{0:06d}",))
        for n in range(4)
    ]  # fmt: skip
    provider = LateIntaSend(answers={r.tracking_id: r.last_status for r in reviews})
    for r in reviews:
        await due(pool, r)
    checker = rechecker(pool, database_url, provider, intasend_max_rps=20.0, recheck_share=0.1)
    started = time.monotonic()
    for _ in reviews:
        assert await checker.run_once() == 0.0
    assert time.monotonic() - started >= 1.4  # 4 checks: at 0, 0.5, 1.0 and 1.5 s
    assert sorted(provider.calls) == sorted(r.tracking_id for r in reviews)


async def test_past_the_horizon_the_items_are_left_for_a_person(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend(answers={r.tracking_id: r.last_status})
    await due(pool, r)
    await pool.execute("UPDATE batch_rechecks SET created_at = now() - interval '8 days'")
    with capture_logs() as logs:
        await rechecker(pool, database_url, provider).run_once()
    over = await schedule(pool, r.tracking_id)
    assert over["gave_up_at"] is not None and over["checks"] == 1
    assert "recheck_gave_up" in [e["event"] for e in logs]
    assert (await item(pool, r.items[ACCOUNTS[0]]))["status"] == "NEEDS_REVIEW"
    assert await rechecks.claim(pool, worker="x", lease_s=5, limit=5) == []
    # A person asks once more (POST /ops/items/recheck): one more check, then left again.
    await due(pool, r)
    assert (await schedule(pool, r.tracking_id))["gave_up_at"] is None
    await rechecker(pool, database_url, provider).run_once()
    again = await schedule(pool, r.tracking_id)
    assert again["gave_up_at"] is not None and again["checks"] == 2


async def test_discovery_schedules_batches_in_review_once_their_row_is_over(
    pool: asyncpg.Pool, database_url: str
) -> None:
    r = await reviewed(pool, database_url)
    other = await reviewed(pool, database_url)
    await pool.execute("DELETE FROM batch_rechecks")  # the second payer's loop found the first batch already
    # A row not over yet (as if its flow still followed the batch) is not the re-check's business.
    await pool.execute(
        "UPDATE outbox SET status = 'pending', processed_at = NULL WHERE payroll_id = $1", other.payroll_id
    )
    assert await rechecks.discover(pool, FIRST_S) == 1
    assert await rechecks.discover(pool, FIRST_S) == 0, "once"
    assert (await schedule(pool, r.tracking_id))["due_in_s"] == pytest.approx(FIRST_S, abs=5)
    assert (
        await pool.fetchval("SELECT count(*) FROM batch_rechecks WHERE tracking_id = $1", other.tracking_id)
        == 0
    )
    # A row that died after an approve may have gone through is re-checked too.
    await pool.execute(
        "UPDATE outbox SET status = 'dead', processed_at = now() WHERE payroll_id = $1", other.payroll_id
    )
    assert await rechecks.discover(pool, FIRST_S) == 1
    # The run loop discovers on its own, with RECHECK_FIRST_S.
    await pool.execute("DELETE FROM batch_rechecks")
    provider = LateIntaSend()
    await rechecker(pool, database_url, provider, recheck_first_s=0.01).run_once()
    assert await pool.fetchval("SELECT count(*) FROM batch_rechecks") == 2


async def test_the_dispatcher_runs_the_recheck_on_its_own(pool: asyncpg.Pool, database_url: str) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    s = settings(database_url, recheck_first_s=0.05)
    stop = asyncio.Event()
    dispatcher = Dispatcher(
        pool=pool,
        dsn=database_url,
        provider=provider,
        caller=ProviderCaller(ProviderRateLimiter(pool, max_rps=s.intasend_max_rps)),
        settings=s,
        worker="d-recheck",
    )
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        for _ in range(200):
            if (await payroll(pool, r.payroll_id))[0] == "COMPLETED":
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert await payroll(pool, r.payroll_id) == ("COMPLETED", Decimal("300.00"))
    assert await pool.fetchval("SELECT dispatcher FROM item_rechecks") == "d-recheck"


async def test_item_rechecks_is_append_only(pool: asyncpg.Pool, database_url: str) -> None:
    r = await reviewed(pool, database_url)
    provider = LateIntaSend()
    provider.settle(r.last_status, **{r.refs[ACCOUNTS[0]]: ("TS100", "QKLATE0001")})
    await due(pool, r)
    await rechecker(pool, database_url, provider).run_once()
    for statement in (
        "UPDATE item_rechecks SET agrees = true",
        "DELETE FROM item_rechecks",
        "TRUNCATE item_rechecks",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute(statement)
    assert await pool.fetchval("SELECT count(*) FROM item_rechecks") == 1
