"""The dispatcher against real PostgreSQL and a scripted provider: every fault at every step, paid once."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from dispatcher_service import batch_flow
from tests import factories
from tests.fakes import FakeIntaSend

ACCOUNTS = [f"2547{n:08d}" for n in range(10)]


@pytest.fixture(autouse=True)
def fast_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)


async def wait_final(
    pool: asyncpg.Pool, payroll_ids: list[uuid.UUID], within_s: float = 20
) -> dict[uuid.UUID, str]:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        rows = await pool.fetch("SELECT id, status FROM payrolls WHERE id = ANY($1)", payroll_ids)
        states = {r["id"]: r["status"] for r in rows}
        if all(s != "PROCESSING" for s in states.values()):
            return states
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"payrolls still processing: {states}")
        await asyncio.sleep(0.05)


async def item_states(pool: asyncpg.Pool, payroll_id: uuid.UUID) -> dict[str, str]:
    rows = await pool.fetch("SELECT account, status FROM payroll_items WHERE payroll_id = $1", payroll_id)
    return {r["account"]: r["status"] for r in rows}


async def test_a_payroll_is_paid_once_and_completed(pool: asyncpg.Pool, run_dispatchers) -> None:
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    rows = await pool.fetch(
        "SELECT status, provider_reference FROM payroll_items WHERE payroll_id = $1", payroll
    )
    assert all(r["status"] == "PAID" and r["provider_reference"] for r in rows)
    ob = await pool.fetchrow(
        "SELECT status, processed_at, locked_by FROM outbox WHERE payroll_id = $1", payroll
    )
    assert ob["status"] == "done" and ob["processed_at"] is not None and ob["locked_by"] is None
    assert provider.calls[:2] == ["initiate", "approve"] and len(provider.calls) <= 4


@pytest.mark.parametrize("fault", ["before", "after", "429"])
@pytest.mark.parametrize("endpoint", ["initiate", "approve", "status"])
async def test_a_fault_at_any_step_never_pays_twice(
    pool: asyncpg.Pool, run_dispatchers, endpoint: str, fault: str
) -> None:
    provider = FakeIntaSend()
    provider.faults[endpoint] = [fault, fault]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    approved = [b for b in provider.batches.values() if b.approvals]
    assert len(approved) == 1, "exactly one batch was ever approved"


async def test_an_approve_lost_after_acting_is_confirmed_by_status_not_resent(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    provider.faults["approve"] = ["after"]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.calls.count("approve") == 1
    assert provider.calls[2] == "status"


async def test_a_refused_second_approve_after_a_lost_one_is_not_taken_for_nothing_paid(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    """The first approve acts but its answer is lost; the provider's status lags and still shows the batch
    waiting, so payrun approves again and is refused (the batch is no longer waiting). That refusal must not
    fail items the provider is paying: status decides, later."""
    provider = FakeIntaSend(status_lag=3)
    provider.faults["approve"] = ["after"]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    assert set((await item_states(pool, payroll)).values()) == {"PAID"}
    assert provider.calls.count("approve") >= 2, "the scenario re-approved and was refused"


async def test_a_refused_first_approve_fails_the_items_with_the_reason(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    provider.faults["approve"] = ["reject"]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "FAILED"}
    assert provider.paid_accounts() == []
    reasons = await pool.fetch("SELECT failure_reason FROM payroll_items WHERE payroll_id = $1", payroll)
    assert all("refused to approve" in r["failure_reason"] for r in reasons)


async def test_provider_floats_are_stored_and_echoed(pool: asyncpg.Pool, run_dispatchers) -> None:
    """IntaSend's examples carry floats ("charge_estimate": 50.0); parsed as Decimals, they go to jsonb."""
    provider = FakeIntaSend()
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    stored = await pool.fetchval(
        "SELECT initiate_response FROM provider_batches b JOIN outbox o ON o.id = b.outbox_id "
        "WHERE o.payroll_id = $1",
        payroll,
    )
    assert stored["charge_estimate"] == 50 and stored["failed_amount"] == 0


async def test_transactions_refused_by_name_fail_alone_and_the_others_are_paid(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend(refuse_accounts={ACCOUNTS[3], ACCOUNTS[7]})
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "PARTIALLY_FAILED"}
    refused = {ACCOUNTS[3], ACCOUNTS[7]}
    assert provider.paid_accounts() == sorted(set(ACCOUNTS) - refused)
    rows = await pool.fetch(
        "SELECT account, status, failure_reason FROM payroll_items WHERE payroll_id = $1", payroll
    )
    for r in rows:
        if r["account"] in refused:
            assert r["status"] == "FAILED" and "account: Enter a valid phone number" in r["failure_reason"]
        else:
            assert r["status"] == "PAID"
    assert [len(b.txns) for b in provider.batches.values()] == [8], "one batch, of the items IntaSend takes"


async def test_failing_and_undetermined_accounts(pool: asyncpg.Pool, run_dispatchers) -> None:
    provider = FakeIntaSend(fail_accounts={ACCOUNTS[1]})
    partial = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    review_provider_accounts = [f"2541{n:08d}" for n in range(3)]
    provider.undetermined_accounts = {review_provider_accounts[0]}
    review = await factories.processing_payroll(pool, accounts=review_provider_accounts)
    run_dispatchers(provider)
    assert await wait_final(pool, [partial, review]) == {partial: "PARTIALLY_FAILED", review: "NEEDS_REVIEW"}
    states = await item_states(pool, partial)
    assert states[ACCOUNTS[1]] == "FAILED" and list(states.values()).count("PAID") == 9
    reason = await pool.fetchval("SELECT failure_reason FROM payroll_items WHERE account = $1", ACCOUNTS[1])
    assert "Invalid M-Pesa account" in reason
    assert (await item_states(pool, review))[review_provider_accounts[0]] == "NEEDS_REVIEW"
    assert provider.calls.count("initiate") == 2  # TF105 is never resent


async def test_a_batch_level_failure_fails_every_item(pool: asyncpg.Pool, run_dispatchers) -> None:
    provider = FakeIntaSend(batch_failure="BF105")
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "FAILED"}
    reasons = await pool.fetch("SELECT failure_reason FROM payroll_items WHERE payroll_id = $1", payroll)
    assert all("insufficient funds" in r["failure_reason"] for r in reasons)
    assert provider.ledger == []


async def test_an_initiate_refused_as_invalid_fails_the_items_with_the_reason(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    provider.faults["initiate"] = ["reject"]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider)
    assert await wait_final(pool, [payroll]) == {payroll: "FAILED"}
    reason = await pool.fetchval(
        "SELECT failure_reason FROM payroll_items WHERE payroll_id = $1 LIMIT 1", payroll
    )
    assert "Invalid account" in reason
    assert await pool.fetchval("SELECT last_error FROM outbox WHERE payroll_id = $1", payroll)


async def test_a_provider_that_never_answers_ends_dead_and_failed_not_lost(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    provider.faults["initiate"] = ["before"] * 100
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, dispatcher_max_errors=3)
    assert await wait_final(pool, [payroll]) == {payroll: "FAILED"}
    row = await pool.fetchrow("SELECT status, errors, last_error FROM outbox WHERE payroll_id = $1", payroll)
    assert row["status"] == "dead" and "gave up after 3" in row["last_error"]


async def test_many_payrolls_through_several_dispatchers_are_each_paid_once(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    employer = await factories.employer(pool)
    payrolls = [
        await factories.processing_payroll(
            pool, employer_id=employer, accounts=[f"2547{p:04d}{n:04d}" for n in range(10)], batch_size=4
        )
        for p in range(12)
    ]
    run_dispatchers(provider, count=3)
    states = await wait_final(pool, payrolls, within_s=40)
    assert set(states.values()) == {"COMPLETED"}
    assert len(provider.ledger) == 120 and len(set(provider.paid_accounts())) == 120
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'done'") == 0


async def test_a_dispatcher_killed_mid_approve_is_resumed_by_another_without_paying_twice(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    gate = asyncio.Event()
    real_approve = provider.approve

    async def hanging_approve(batch):  # the first approve acts, then its dispatcher "dies" before the answer
        result = await real_approve(batch)
        if provider.calls.count("approve") == 1:
            gate.set()
            await asyncio.sleep(3600)
        return result

    provider.approve = hanging_approve  # type: ignore[method-assign]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    [first] = run_dispatchers(provider, dispatcher_lease_s=1.0)
    await asyncio.wait_for(gate.wait(), 10)

    await first.crash()
    assert await pool.fetchval("SELECT status FROM outbox WHERE payroll_id = $1", payroll) == "in_progress"
    run_dispatchers(provider, dispatcher_lease_s=1.0)
    assert await wait_final(pool, [payroll]) == {payroll: "COMPLETED"}
    assert provider.paid_accounts() == sorted(ACCOUNTS)
    assert provider.calls.count("approve") == 1, provider.calls
    assert await pool.fetchval("SELECT attempts FROM outbox WHERE payroll_id = $1", payroll) == 2


async def test_a_row_that_keeps_crashing_the_flow_ends_dead_not_in_a_loop(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()

    async def buggy_initiate(**_kwargs):
        raise RuntimeError("a bug in the flow")

    provider.initiate = buggy_initiate  # type: ignore[method-assign]
    payroll = await factories.processing_payroll(pool, accounts=ACCOUNTS)
    run_dispatchers(provider, dispatcher_max_errors=3)
    assert await wait_final(pool, [payroll]) == {payroll: "FAILED"}
    row = await pool.fetchrow(
        "SELECT status, attempts, last_error FROM outbox WHERE payroll_id = $1", payroll
    )
    assert row["status"] == "dead" and row["attempts"] == 3 and "RuntimeError" in row["last_error"]
