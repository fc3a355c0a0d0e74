"""Funds checked before approve, and cancel racing a dispatcher about to approve: real PostgreSQL, the real
dispatcher, a scripted provider whose wallet balance goes down as it pays (charges included)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from dispatcher_service import batch_flow
from shared import batches, cancellation, errors, funds
from shared.batches import Stage
from tests import factories
from tests.fakes import FakeIntaSend
from tests.integration.test_dispatcher_flow import wait_final

ACCOUNTS = [f"2547{n:08d}" for n in range(10)]
FAST_FUNDS = {"dispatcher_funds_recheck_s": 0.2, "dispatcher_funds_recheck_max_s": 0.4}


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)


async def until(check: Callable[[], Awaitable[Any]], within_s: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        found = await check()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def employer_of(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> uuid.UUID:
    found: uuid.UUID = await pool.fetchval("SELECT employer_id FROM payrolls WHERE id = $1", payroll_id)
    return found


async def cancel(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> cancellation.Cancelled:
    async with pool.acquire() as conn:
        return await cancellation.cancel(conn, await employer_of(pool, payroll_id), payroll_id)


async def item_states(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> set[str]:
    rows = await pool.fetch("SELECT status FROM payroll_items WHERE payroll_id = $1", payroll_id)
    return {r["status"] for r in rows}


def crash_once_at_approving(
    monkeypatch: pytest.MonkeyPatch,
    pool: asyncpg.Pool,
    *,
    after_the_write: bool = False,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """The first flow to reach its `approving` write dies there once: before the write, or right after it
    (before the approve request). Its row is handed back as a dead dispatcher's lease would, and `meanwhile`
    runs while no flow holds it; the next claim resumes the batch."""
    real_set_stage = batches.set_stage
    crashed = False

    async def crash(pool_, row, batch_id, stage, carried=()):  # type: ignore[no-untyped-def]
        nonlocal crashed
        if after_the_write:
            await real_set_stage(pool_, row, batch_id, stage, carried)
        if stage == Stage.APPROVING and not crashed:
            crashed = True
            meanwhile()
            await pool.execute(
                "UPDATE outbox SET status = 'pending', locked_by = NULL, locked_until = NULL, "
                "lease_token = NULL, available_at = now() WHERE id = $1",
                row.id,
            )
            raise batches.LeaseLost(
                "crashed before the approve request"
                if after_the_write
                else "crashed before writing approving"
            )
        if not after_the_write:
            await real_set_stage(pool_, row, batch_id, stage, carried)

    monkeypatch.setattr(batches, "set_stage", crash)


async def test_an_underfunded_payroll_waits_then_is_paid_exactly_once_after_funding(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    # 10 x 100 KES plus 1 KES of charges each: 1,010 needed, 1,000 available.
    provider = FakeIntaSend(balance=Decimal("1000.00"), charge=Decimal("1.00"))
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, **FAST_FUNDS)

    async def rechecked() -> bool:
        checks = await pool.fetchval("SELECT max(funds_short_checks) FROM provider_batches")
        return bool(checks and checks >= 3)

    await until(rechecked)
    assert "approve" not in provider.calls, "never approved while short"
    assert provider.calls.count("wallets") >= 2, "each re-check reads the wallet again"
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll) == "PROCESSING"
    async with pool.acquire() as conn:
        wait = await funds.payroll_wait(conn, payroll)
    assert wait is not None and wait.short_by == Decimal("10.00") and wait.required == Decimal("1010.00")
    assert wait.wallet_id == "W1" and wait.batches == 1
    row = await pool.fetchrow("SELECT status, errors, last_error FROM outbox WHERE payroll_id = $1", payroll)
    assert row["status"] in ("pending", "in_progress") and row["errors"] == 0, "waiting is not an error"
    assert "waiting for funds" in row["last_error"]
    batch = await pool.fetchrow("SELECT id, stage, item_ids, request_reference_ids FROM provider_batches")
    assert batch["stage"] == Stage.INITIATED
    # Never sent for approval: the items are PENDING and cancellable, their references kept on the batch.
    items = await pool.fetch(
        "SELECT id, status, provider_batch_id, request_reference_id FROM payroll_items "
        "WHERE payroll_id = $1 ORDER BY position",
        payroll,
    )
    assert [i["id"] for i in items] == batch["item_ids"]
    assert {(i["status"], i["provider_batch_id"], i["request_reference_id"]) for i in items} == {
        ("PENDING", None, None)
    }
    assert all(batch["request_reference_ids"]) and len(set(batch["request_reference_ids"])) == len(ACCOUNTS)

    provider.balance = Decimal("5000.00")  # the employer tops up the wallet
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    # Approved by a later claim, from the references kept on the batch: each item linked with its own.
    linked = await pool.fetch(
        "SELECT provider_batch_id, request_reference_id FROM payroll_items WHERE payroll_id = $1 ORDER BY position",
        payroll,
    )
    assert [i["request_reference_id"] for i in linked] == batch["request_reference_ids"]
    assert {i["provider_batch_id"] for i in linked} == {batch["id"]}
    assert provider.calls.count("approve") == 1 and len(provider.batches) == 1
    # The balance compared last was read after the last wait, right before the approve.
    assert provider.calls[provider.calls.index("approve") - 1] == "wallets"
    assert provider.balance == Decimal("5000.00") - Decimal("1010.00")
    async with pool.acquire() as conn:
        assert await funds.payroll_wait(conn, payroll) is None


@pytest.mark.parametrize("interruption", ["funds_wait", "crash"])
async def test_a_batch_approved_by_another_flow_sends_the_initiate_answer_back_as_received(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch, interruption: str
) -> None:
    """The flow that approves is not the one that initiated (the first waited for funds, or crashed before
    approving): the approve still posts IntaSend's initiate answer byte for byte, every transaction in it."""
    provider = FakeIntaSend(balance=Decimal("1000.00"))
    if interruption == "funds_wait":
        provider.balance = Decimal("999.00")
    else:
        crash_once_at_approving(monkeypatch, pool)
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, **FAST_FUNDS)
    if interruption == "funds_wait":
        await until(lambda: pool.fetchval("SELECT funds_short_checks > 0 FROM provider_batches"))
        provider.balance = Decimal("1000.00")
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.calls.count("initiate") == 1 and provider.calls.count("approve") == 1
    (sent,) = provider.initiate_bodies.values()
    assert provider.approve_payloads == [sent]
    assert len(json.loads(sent)["transactions"]) == len(ACCOUNTS)
    stored = await pool.fetchval("SELECT initiate_body FROM provider_batches")
    assert stored == sent
    assert provider.paid_accounts() == sorted(ACCOUNTS)


async def test_a_funded_batch_is_approved_at_once_on_the_initiate_answers_balance(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend(balance=Decimal("1000.00"))
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, **FAST_FUNDS)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.calls[:2] == ["initiate", "approve"], "no extra request when approve follows at once"
    checked = await pool.fetchrow("SELECT funds_required, funds_available FROM provider_batches")
    assert (checked["funds_required"], checked["funds_available"]) == (Decimal("1000.00"), Decimal("1000.00"))


async def test_a_batch_found_initiated_after_a_crash_reads_the_wallet_before_approving(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The initiate answer's balance is stale once anything else happened: a flow that resumes a batch at
    `initiated` reads the wallet again, and a wallet emptied meanwhile stops the approve."""
    provider = FakeIntaSend(balance=Decimal("1000.00"))

    def spent_elsewhere() -> None:  # while this flow was gone
        provider.balance = Decimal("10.00")

    crash_once_at_approving(monkeypatch, pool, meanwhile=spent_elsewhere)
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, **FAST_FUNDS)
    await until(lambda: pool.fetchval("SELECT funds_short_checks > 0 FROM provider_batches"))
    assert "approve" not in provider.calls and "wallets" in provider.calls
    provider.balance = Decimal("1000.00")
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.calls.count("approve") == 1 and provider.paid_accounts() == sorted(ACCOUNTS)


async def test_a_batch_found_approving_and_still_waiting_after_a_crash_is_approved_only_once_funded(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the `approving` write and the approve request: the resumed flow asks status (still
    waiting), then reads the wallet again before approving; the check made before the crash is stale."""
    provider = FakeIntaSend(balance=Decimal("1000.00"))

    def spent_elsewhere() -> None:
        provider.balance = Decimal("10.00")

    crash_once_at_approving(monkeypatch, pool, after_the_write=True, meanwhile=spent_elsewhere)
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, **FAST_FUNDS)
    await until(lambda: pool.fetchval("SELECT funds_short_checks > 0 FROM provider_batches"))
    assert "approve" not in provider.calls
    assert await pool.fetchval("SELECT stage FROM provider_batches") == Stage.APPROVING
    async with pool.acquire() as conn:
        wait = await funds.payroll_wait(conn, payroll)
    assert wait is not None and wait.short_by == Decimal("990.00")
    provider.balance = Decimal("1000.00")
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.calls.count("approve") == 1 and provider.paid_accounts() == sorted(ACCOUNTS)


def cancel_at_approving(
    monkeypatch: pytest.MonkeyPatch, pool: asyncpg.Pool, payroll: uuid.UUID, *, before: bool
) -> list[cancellation.Cancelled]:
    """Drive the race deterministically: the employer's cancel commits right before the flow's fenced
    `approving` write (before=True) or right after it, before the approve request leaves."""
    real_set_stage = batches.set_stage
    results: list[cancellation.Cancelled] = []

    async def racing(pool_, row, batch_id, stage, carried=()):  # type: ignore[no-untyped-def]
        racing_now = stage == Stage.APPROVING and not results
        if racing_now and before:
            results.append(await cancel(pool, payroll))
        await real_set_stage(pool_, row, batch_id, stage, carried)
        if racing_now and not before:
            results.append(await cancel(pool, payroll))

    monkeypatch.setattr(batches, "set_stage", racing)
    return results


async def test_a_cancel_committed_before_the_approving_write_wins_and_nothing_is_approved(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    results = cancel_at_approving(monkeypatch, pool, payroll, before=True)
    run_dispatchers(provider, **FAST_FUNDS)
    assert await wait_final(pool, [payroll]) == {payroll: "CANCELLED"}
    [result] = results
    assert (result.cancelled_now, result.in_flight, result.status) == (10, 0, "CANCELLED")
    await asyncio.sleep(0.3)  # the flow that lost its fence must not approve late either
    assert "approve" not in provider.calls and provider.paid_accounts() == []
    assert await item_states(pool, payroll) == {"CANCELLED"}
    batch = await pool.fetchrow("SELECT stage, abandon_reason FROM provider_batches")
    assert batch["stage"] == Stage.ABANDONED and "cancelled" in batch["abandon_reason"]
    assert await pool.fetchval("SELECT status FROM outbox WHERE payroll_id = $1", payroll) == "done"


async def test_an_approving_write_committed_before_the_cancel_wins_and_the_payroll_is_paid(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    results = cancel_at_approving(monkeypatch, pool, payroll, before=False)
    run_dispatchers(provider, **FAST_FUNDS)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    [result] = results
    assert (result.cancelled_now, result.cancelled, result.in_flight) == (0, 0, 10)
    assert result.status == "PROCESSING"
    assert provider.calls.count("approve") == 1 and provider.paid_accounts() == sorted(ACCOUNTS)
    assert await item_states(pool, payroll) == {"PAID"}
    with pytest.raises(errors.PayrollFinal):
        await cancel(pool, payroll)


async def test_cancel_and_approve_at_once_never_leave_an_item_both_cancelled_and_paid(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ordering forced: a cancel sent while the flows are about to approve, many times over."""
    for round_ in range(6):
        provider = FakeIntaSend()
        payroll = await factories.processing_payroll(
            pool, accounts=[f"25471{round_}{n:06d}" for n in range(5)]
        )
        [running] = run_dispatchers(provider, **FAST_FUNDS)
        await asyncio.sleep(0.005 * round_)
        await cancel(pool, payroll)
        final = (await wait_final(pool, [payroll]))[payroll]
        await running.close()
        states = await pool.fetch("SELECT account, status FROM payroll_items WHERE payroll_id = $1", payroll)
        paid = set(provider.paid_accounts())
        for r in states:
            assert (r["status"] == "PAID") == (r["account"] in paid), (round_, final, r)
            assert r["status"] in ("PAID", "CANCELLED")
        assert provider.calls.count("approve") <= 1


async def test_cancelling_one_payroll_of_a_coalesced_batch_reinitiates_the_others_and_pays_them_once(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend(balance=Decimal("100.00"))
    payrolls = [
        await factories.processing_payroll(
            pool,
            employer_id=await factories.employer(pool, f"E{p}"),
            accounts=[f"2547{p:04d}{i:04d}" for i in range(5)],
        )
        for p in range(3)
    ]
    # One forming flow at a time (5 rps): the first row gathers the other two into its batch.
    run_dispatchers(provider, intasend_max_rps=5.0, **FAST_FUNDS)
    await until(lambda: pool.fetchval("SELECT funds_short_checks > 0 FROM provider_batches"))
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE carried_by IS NOT NULL") == 2
    [first] = provider.batches.values()
    assert len(first.txns) == 15

    cancelled_one = payrolls[1]
    result = await cancel(pool, cancelled_one)
    assert (result.cancelled_now, result.status) == (5, "CANCELLED")
    abandoned = await pool.fetchrow("SELECT stage, tracking_id FROM provider_batches")
    assert abandoned["stage"] == Stage.ABANDONED and abandoned["tracking_id"] == first.tracking_id
    reformed = await pool.fetch("SELECT payroll_id, payload FROM outbox WHERE status <> 'done' ORDER BY id")
    assert {r["payroll_id"] for r in reformed} == {payrolls[0], payrolls[2]}

    provider.balance = Decimal("100000.00")
    states = await wait_final(pool, payrolls)
    assert states == {payrolls[0]: "COMPLETED", cancelled_one: "CANCELLED", payrolls[2]: "COMPLETED"}
    assert first.approvals == 0, "the abandoned batch was never approved"
    paid = provider.paid_accounts()
    assert paid == sorted(a for p in (0, 2) for a in (f"2547{p:04d}{i:04d}" for i in range(5)))
    assert len(paid) == len(set(paid)) == 10
    assert await item_states(pool, cancelled_one) == {"CANCELLED"}
    second = await pool.fetchrow(
        "SELECT stage FROM provider_batches WHERE tracking_id <> $1", first.tracking_id
    )
    assert second["stage"] == Stage.FINISHED


async def test_a_cancelled_item_found_at_the_approving_write_abandons_the_batch(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher's own guard: whatever cancelled an item of the batch, `approving` is not written, the
    batch is abandoned, and the batch's other items go out again in a new batch."""
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    real_set_stage = batches.set_stage
    done = False

    async def cancel_one_item(pool_, row, batch_id, stage, carried=()):  # type: ignore[no-untyped-def]
        nonlocal done
        if stage == Stage.APPROVING and not done:
            done = True
            await pool.execute(
                "UPDATE payroll_items SET status = 'CANCELLED' WHERE payroll_id = $1 AND position = 0",
                payroll,
            )
        await real_set_stage(pool_, row, batch_id, stage, carried)

    monkeypatch.setattr(batches, "set_stage", cancel_one_item)
    run_dispatchers(provider, **FAST_FUNDS)
    assert await wait_final(pool, [payroll]) == {payroll: "CANCELLED"}
    assert sorted(b.approvals for b in provider.batches.values()) == [0, 1]
    assert provider.paid_accounts() == sorted(ACCOUNTS[1:])
    stages = await pool.fetch("SELECT stage FROM provider_batches ORDER BY id")
    assert [r["stage"] for r in stages] == [Stage.ABANDONED, Stage.FINISHED]


async def test_cancel_before_any_dispatcher_ran_cancels_everything_at_once(pool: asyncpg.Pool) -> None:
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS, batch_size=4)
    result = await cancel(pool, payroll)
    assert (result.cancelled_now, result.cancelled, result.in_flight, result.status) == (
        10,
        10,
        0,
        "CANCELLED",
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM outbox WHERE payroll_id = $1 AND status <> 'done'", payroll)
        == 0
    )
    again = await cancel(pool, payroll)
    assert (again.cancelled_now, again.cancelled, again.status) == (0, 10, "CANCELLED")
    assert again.cancel_requested_at == result.cancel_requested_at
