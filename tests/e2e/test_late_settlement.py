"""Real processes and `payrun sim`: transactions IntaSend could not determine (TF105) settle a few seconds
later; the dispatchers' re-check finds out by itself and the items end as the simulator's ledger says."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import sim_json

ACCOUNTS = [f"2547{9000 + p:04d}{i:04d}" for p in range(3) for i in range(8)]
UNDETERMINED = [a for n, a in enumerate(ACCOUNTS) if n % 3 == 0]


async def test_undetermined_items_settle_late_through_the_recheck(make_stack) -> None:
    stack, client = await make_stack(
        dispatchers=2,
        INTASEND_MAX_RPS="20",
        SIM_MAX_RPS="20",
        SIM_SEED="7",
        SIM_UNDETERMINED_ACCOUNTS=",".join(UNDETERMINED),
        SIM_UNDETERMINED_SETTLE_S="6",
        RECHECK_FIRST_S="1",
        RECHECK_MAX_S="2",
    )
    ids = [await client.create(f"LATE-{p}", ACCOUNTS[p * 8 : (p + 1) * 8]) for p in range(3)]
    assert {await client.process(pid) for pid in ids} == {202}
    assert set((await client.wait_final(ids, within_s=60)).values()) == {"NEEDS_REVIEW"}
    assert await assert_ledger_agrees(stack) == {"PAID": 16, "NEEDS_REVIEW": 8}

    for _ in range(300):
        statuses = [await client.status(pid) for pid in ids]
        if all(s["status"] != "NEEDS_REVIEW" for s in statuses):
            break
        await asyncio.sleep(0.1)
    counts = await assert_ledger_agrees(stack)
    assert counts.get("NEEDS_REVIEW", 0) == 0 and counts["PAID"] + counts.get("FAILED", 0) == 24
    assert {s["status"] for s in statuses} <= {"COMPLETED", "PARTIALLY_FAILED"}
    stats = await sim_json(stack, "/sim/stats")
    assert stats["max_in_any_window"] <= 20 and stats["rejected_429_pace"] == 0
