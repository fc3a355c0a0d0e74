"""Real `payrun api`, `payrun dispatcher` and `payrun sim` processes: a payroll the wallet cannot cover (charges
included) waits unapproved, says how much is missing, and is paid exactly once after the wallet is funded; a
payroll cancelled while it waits for funds is never paid."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import aiohttp

from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import sim_json


async def sim_post(sim: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(f"{sim}{path}", json=body) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def waiting_for_funds(client: Any, payroll_id: str, within_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        status = await client.status(payroll_id)
        if status["status_detail"] is not None:
            return status
        assert status["status"] == "PROCESSING", status
        assert time.monotonic() < deadline, f"never waited for funds: {status}"
        await asyncio.sleep(0.3)


async def test_an_underfunded_payroll_waits_is_paid_once_after_funding_and_a_cancelled_one_never(
    make_stack,
) -> None:
    stack, client = await make_stack(
        dispatchers=2,
        SIM_BALANCE="1500.00",
        SIM_CHARGE="10.00",
        DISPATCHER_FUNDS_RECHECK_S="0.5",
        DISPATCHER_FUNDS_RECHECK_MAX_S="1",
    )
    accounts = [f"2547{9000 + n:08d}" for n in range(10)]
    payroll = await client.create("SHORT", accounts, amount="160.00")  # 1,600 + 100 charges > 1,500
    assert await client.process(payroll) == 202
    status = await waiting_for_funds(client, payroll)
    detail = status["status_detail"]
    assert detail["code"] == "insufficient_funds" and detail["short_by"] == "200.00"
    assert (detail["required"], detail["available_balance"]) == ("1700.00", "1500.00")
    await asyncio.sleep(2.5)  # several re-checks while short
    stats = await sim_json(stack, "/sim/stats")
    assert stats["by_endpoint"].get("approve", 0) == 0, "never approved while short"
    assert stats["by_endpoint"]["wallets"] >= 2, "re-checks read the wallet"

    await sim_post(stack.sim, "/sim/wallets/SIMWLT1/fund", {"amount": "500.00"})
    assert await client.wait_final([payroll], within_s=30) == {payroll: "COMPLETED"}
    assert await assert_ledger_agrees(stack) == {"PAID": 10}
    stats = await sim_json(stack, "/sim/stats")
    assert stats["by_endpoint"]["approve"] == 1 and stats["second_approves"] == 0
    wallets = await sim_json(stack, "/sim/ledger")
    assert Decimal(wallets["total_paid"]) == Decimal("1600.00")

    # 300.00 left: a payroll of 5 x 100 (+50 charges) waits, and the employer cancels it.
    cancelled = await client.create("CANCEL-ME", [f"2547{9100 + n:08d}" for n in range(5)])
    assert await client.process(cancelled) == 202
    await waiting_for_funds(client, cancelled)
    async with client.session.post(
        f"{client.base}/payrolls/{cancelled}/cancel", headers=client.headers
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert (body["status"], body["cancelled_now"], body["not_cancellable"]) == ("CANCELLED", 5, 0)
    await sim_post(stack.sim, "/sim/wallets/SIMWLT1/fund", {"amount": "10000.00"})
    await asyncio.sleep(2.5)  # a dispatcher that would still approve it has had every chance
    assert (await client.status(cancelled))["counts"]["CANCELLED"] == 5
    assert await assert_ledger_agrees(stack) == {"PAID": 10, "CANCELLED": 5}
    assert (await sim_json(stack, "/sim/stats"))["by_endpoint"]["approve"] == 1
