"""The seed's promise, scaled down: many employers click "Run" in the same instant; every one gets 202,
every worker is paid exactly once, every spinner ends on "Completed", no upstream 429 from payrun's pace."""

from __future__ import annotations

import asyncio

import asyncpg

from shared import employers
from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import Client, sim_json

USERS, WORKERS, RPS = 20, 10, 50


async def test_twenty_employers_click_run_at_once_and_all_complete(make_stack) -> None:
    stack, first = await make_stack(dispatchers=2, INTASEND_MAX_RPS=str(RPS), SIM_MAX_RPS=str(RPS))
    conn = await asyncpg.connect(stack.database_url)
    try:
        keys = [(await employers.create(conn, f"Employer {n}"))["api_key"] for n in range(USERS)]
    finally:
        await conn.close()
    clients = [Client(first.session, stack.api, key) for key in keys]
    ids = await asyncio.gather(
        *(
            c.create(f"NOV-{n}", [f"2547{n:04d}{w:04d}" for w in range(WORKERS)], amount="2500.00")
            for n, c in enumerate(clients)
        )
    )
    go = asyncio.Event()

    async def click(client: Client, payroll_id: str) -> int:
        await go.wait()
        return await client.process(payroll_id)

    clicks = [asyncio.create_task(click(c, pid)) for c, pid in zip(clients, ids, strict=True)]
    await asyncio.sleep(0.05)
    go.set()
    assert await asyncio.gather(*clicks) == [202] * USERS

    states = await asyncio.gather(
        *(c.wait_final([pid], within_s=90) for c, pid in zip(clients, ids, strict=True))
    )
    assert all(s == {pid: "COMPLETED"} for s, pid in zip(states, ids, strict=True))
    assert await assert_ledger_agrees(stack) == {"PAID": USERS * WORKERS}
    ledger = await sim_json(stack, "/sim/ledger")
    assert ledger["total_paid"] == f"{USERS * WORKERS * 2500}.00"
    stats = await sim_json(stack, "/sim/stats")
    assert stats["rejected_429_pace"] == 0 and stats["max_in_any_window"] <= RPS
    assert stats["accepted"] / USERS <= 4
