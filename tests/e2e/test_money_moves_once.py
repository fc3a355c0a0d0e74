"""Real `payrun api`, `payrun dispatcher` and `payrun sim` processes on real PostgreSQL: every worker paid
exactly once (or never, for accounts that fail), whatever the provider or the processes do."""

from __future__ import annotations

import asyncio
import random
import signal

import pytest

from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import sim_json


def accounts(payroll: int, n: int = 10) -> list[str]:
    return [f"2547{payroll:04d}{i:04d}" for i in range(n)]


async def run_payrolls(client, count: int, size: int = 10, prefix: str = "P") -> list[str]:
    ids = [await client.create(f"{prefix}-{p}", accounts(p, size)) for p in range(count)]
    statuses = await asyncio.gather(*(client.process(pid) for pid in ids))
    assert set(statuses) == {202}
    return ids


async def test_payrolls_complete_within_the_rate_limit(make_stack) -> None:
    stack, client = await make_stack(dispatchers=2, INTASEND_MAX_RPS="20", SIM_MAX_RPS="20")
    ids = await run_payrolls(client, 8)
    states = await client.wait_final(ids, within_s=60)
    assert set(states.values()) == {"COMPLETED"}
    assert await assert_ledger_agrees(stack) == {"PAID": 80}
    stats = await sim_json(stack, "/sim/stats")
    assert stats["rejected_429_pace"] == 0 and stats["max_in_any_window"] <= 20
    assert stats["accepted"] <= 8 * 4  # initiate, approve and a status poll or two per payroll


async def test_dispatchers_killed_at_random_while_the_provider_misbehaves(make_stack) -> None:
    stack, client = await make_stack(
        dispatchers=3,
        INTASEND_MAX_RPS="25",
        SIM_MAX_RPS="25",
        INTASEND_TIMEOUT_S="1.5",
        DISPATCHER_LEASE_S="3",
        SIM_ERROR_RATE_BEFORE="0.1",
        SIM_ERROR_RATE_AFTER="0.1",
        SIM_HANG_AFTER_RATE="0.1",
        SIM_SEED="7",
        SIM_FAIL_ACCOUNTS="254700030001,254700050002",
    )
    ids = await run_payrolls(client, 8)
    rng = random.Random(11)
    for _ in range(6):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        victim = rng.choice(stack.dispatchers())
        stack.kill(victim, signal.SIGKILL)
        stack.start("dispatcher")
    states = await client.wait_final(ids, within_s=150)
    assert set(states.values()) <= {"COMPLETED", "PARTIALLY_FAILED", "NEEDS_REVIEW"}
    counts = await assert_ledger_agrees(stack)
    assert counts.get("FAILED", 0) == 2 and counts.get("PAID", 0) >= 70
    assert (await sim_json(stack, "/sim/stats"))["rejected_429_pace"] == 0


async def test_lost_approves_with_a_status_that_lags_behind_pay_once_and_fail_nothing(make_stack) -> None:
    """The provider acts on an approve and the answer is lost; its status keeps showing the batch waiting
    for a while, so payrun approves again and is refused (the batch is no longer waiting). Nothing paid may
    be recorded FAILED, nothing paid twice."""
    stack, client = await make_stack(
        dispatchers=2,
        INTASEND_MAX_RPS="20",
        SIM_MAX_RPS="20",
        SIM_ERROR_RATE_AFTER="0.5",
        SIM_FAULT_ENDPOINTS="approve",
        SIM_STATUS_LAG_S="3",
        SIM_SEED="5",
    )
    ids = await run_payrolls(client, 6)
    states = await client.wait_final(ids, within_s=90)
    assert set(states.values()) == {"COMPLETED"}
    assert await assert_ledger_agrees(stack) == {"PAID": 60}
    stats = await sim_json(stack, "/sim/stats")
    assert stats["faults"]["error_after"] > 0 and stats["rejected_429_pace"] == 0


@pytest.mark.parametrize("retry_after", ["1", "0"])
async def test_429_storms_with_and_without_retry_after_slow_everyone_down(
    make_stack, retry_after: str
) -> None:
    stack, client = await make_stack(
        dispatchers=2, SIM_429_STORM_RATE="0.3", SIM_429_RETRY_AFTER=retry_after, SIM_SEED="3"
    )
    ids = await run_payrolls(client, 4)
    states = await client.wait_final(ids, within_s=120)
    assert set(states.values()) == {"COMPLETED"}
    await assert_ledger_agrees(stack)
    stats = await sim_json(stack, "/sim/stats")
    assert stats["rejected_429_storm"] > 0 and stats["rejected_429_pace"] == 0


async def test_failing_undetermined_and_unfunded(make_stack) -> None:
    stack, client = await make_stack(
        SIM_FAIL_ACCOUNTS="254700000001",
        SIM_UNDETERMINED_ACCOUNTS="254700010002",
        INTASEND_MAX_RPS="20",
        SIM_MAX_RPS="20",
    )
    ids = await run_payrolls(client, 3)
    states = await client.wait_final(ids, within_s=60)
    assert [states[i] for i in ids] == ["PARTIALLY_FAILED", "NEEDS_REVIEW", "COMPLETED"]
    counts = await assert_ledger_agrees(stack)
    assert counts == {"PAID": 28, "FAILED": 1, "NEEDS_REVIEW": 1}
    detail = await client.status(ids[1])
    assert detail["counts"]["NEEDS_REVIEW"] == 1

    # A wallet that cannot cover the payroll: payrun does not approve it (it used to, and every item failed
    # TF103); it waits for funds, saying how much is missing, until funded or cancelled.
    stack2, client2 = await make_stack(SIM_BALANCE="500")
    [poor] = await run_payrolls(client2, 1, prefix="POOR")
    deadline = asyncio.get_running_loop().time() + 30
    while (status := await client2.status(poor))["status_detail"] is None:
        assert status["status"] == "PROCESSING" and asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.3)
    assert status["status_detail"]["short_by"] == "500.00"
    assert (await sim_json(stack2, "/sim/stats"))["by_endpoint"].get("approve", 0) == 0
    async with client2.session.post(
        f"{client2.base}/payrolls/{poor}/cancel", headers=client2.headers
    ) as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "CANCELLED"
    assert await assert_ledger_agrees(stack2) == {"CANCELLED": 10}


async def test_accounts_the_provider_refuses_at_initiate_fail_alone(make_stack) -> None:
    """IntaSend refuses two numbers of a payroll by name: those two fail with its reason, the rest is paid."""
    stack, client = await make_stack(SIM_INVALID_ACCOUNTS="254700000003,254700000007")
    [payroll] = await run_payrolls(client, 1)
    assert await client.wait_final([payroll], within_s=60) == {payroll: "PARTIALLY_FAILED"}
    assert await assert_ledger_agrees(stack) == {"PAID": 8, "FAILED": 2}


async def test_sigterm_lets_a_dispatcher_finish_or_hand_back_its_work(make_stack) -> None:
    stack, client = await make_stack(dispatchers=1, INTASEND_MAX_RPS="10", SIM_MAX_RPS="10")
    ids = await run_payrolls(client, 6)
    await asyncio.sleep(1.0)
    [only] = stack.dispatchers()
    stack.kill(only, signal.SIGTERM)  # returns once it has exited
    stack.start("dispatcher")
    states = await client.wait_final(ids, within_s=90)
    assert set(states.values()) == {"COMPLETED"}
    assert await assert_ledger_agrees(stack) == {"PAID": 60}
