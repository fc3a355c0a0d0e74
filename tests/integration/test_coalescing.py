"""One provider batch carries the items of many payrolls: rows that wait for the rate limit anyway are
gathered into the batch of the row that goes first, fairly across employers, and each payroll still settles
on its own, exactly once, through a crash."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from shared import outbox
from tests import factories
from tests.fakes import FakeIntaSend
from tests.integration.test_dispatcher_flow import wait_final


def accounts(payroll: int, n: int = 10) -> list[str]:
    return [f"2547{payroll:04d}{i:04d}" for i in range(n)]


async def payrolls_of_their_own_employers(pool: asyncpg.Pool, count: int, size: int = 10) -> list[uuid.UUID]:
    return [
        await factories.processing_payroll(
            pool, employer_id=await factories.employer(pool, f"E{p}"), accounts=accounts(p, size)
        )
        for p in range(count)
    ]


async def test_forty_payrolls_waiting_together_go_out_in_a_few_batches_and_settle_on_their_own(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    payrolls = await payrolls_of_their_own_employers(pool, 40)
    run_dispatchers(provider, intasend_max_rps=5.0, intasend_batch_size=200)
    states = await wait_final(pool, payrolls, within_s=30)
    assert set(states.values()) == {"COMPLETED"}
    assert len(provider.ledger) == 400 and len(set(provider.paid_accounts())) == 400
    assert [len(b.txns) for b in provider.batches.values()] == [200, 200]
    assert provider.calls.count("approve") == 2
    # Auditors: each row names the provider batch that carried it, and so does each item.
    carried = await pool.fetch(
        """SELECT v.outbox_id, v.tracking_id, o.carried_by, o.status, o.locked_by
           FROM outbox_provider_batches v JOIN outbox o ON o.id = v.outbox_id"""
    )
    assert len(carried) == 40 and {r["status"] for r in carried} == {"done"}
    assert sum(1 for r in carried if r["carried_by"] is None) == 2
    assert {r["tracking_id"] for r in carried} == set(provider.batches)
    mismatched = await pool.fetchval(
        """SELECT count(*) FROM payroll_items i
           JOIN outbox o ON o.payroll_id = i.payroll_id AND o.payload -> 'item_ids' @> jsonb_build_array(i.id)
           JOIN outbox_provider_batches v ON v.outbox_id = o.id
           WHERE i.provider_batch_id IS DISTINCT FROM v.provider_batch_id"""
    )
    assert mismatched == 0
    finished = await pool.fetch("SELECT finished_at FROM payrolls WHERE id = ANY($1)", payrolls)
    assert all(r["finished_at"] is not None for r in finished)


async def test_a_lone_payroll_goes_out_at_once_in_a_batch_of_its_own(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    run_dispatchers(provider, intasend_max_rps=5.0)
    await asyncio.sleep(0.3)
    [payroll] = await payrolls_of_their_own_employers(pool, 1)
    assert await wait_final(pool, [payroll], within_s=10) == {payroll: "COMPLETED"}
    assert [len(b.txns) for b in provider.batches.values()] == [10]


async def test_a_big_payroll_does_not_hold_back_the_small_ones_behind_it(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    """One employer's payroll of 6 full rows, then 10 small payrolls of other employers: the small ones
    take their turns before the big one's later rows."""
    provider = FakeIntaSend()
    big_employer = await factories.employer(pool, "Big")
    big = await factories.processing_payroll(
        pool, employer_id=big_employer, accounts=accounts(9000, 60), batch_size=10
    )
    await asyncio.sleep(0.05)
    small = await payrolls_of_their_own_employers(pool, 10, size=2)
    run_dispatchers(provider, intasend_max_rps=5.0, intasend_batch_size=10)
    states = await wait_final(pool, [big, *small], within_s=40)
    assert set(states.values()) == {"COMPLETED"}
    big_accounts = set(accounts(9000, 60))
    order = [any(t["account"] in big_accounts for t in b.txns) for b in provider.batches.values()]
    # The first batch is the big payroll's oldest row; the small payrolls fill the next batches before
    # the rest of the big one.
    assert order[:4] == [True, False, False, True], order


async def test_a_dispatcher_killed_mid_approve_of_a_batch_of_many_payrolls_is_resumed_once(
    pool: asyncpg.Pool, run_dispatchers
) -> None:
    provider = FakeIntaSend()
    gate = asyncio.Event()
    real_approve = provider.approve

    async def hanging_approve(batch):  # type: ignore[no-untyped-def]
        result = await real_approve(batch)
        if provider.calls.count("approve") == 1:
            gate.set()
            await asyncio.sleep(3600)
        return result

    provider.approve = hanging_approve  # type: ignore[method-assign]
    payrolls = await payrolls_of_their_own_employers(pool, 12)
    [first] = run_dispatchers(provider, dispatcher_lease_s=1.0, intasend_max_rps=5.0)
    await asyncio.wait_for(gate.wait(), 10)

    await first.crash()
    run_dispatchers(provider, dispatcher_lease_s=1.0, intasend_max_rps=5.0)
    states = await wait_final(pool, payrolls, within_s=30)
    assert set(states.values()) == {"COMPLETED"}
    assert len(provider.ledger) == 120 and len(set(provider.paid_accounts())) == 120
    assert provider.calls.count("approve") == len(provider.batches) >= 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'done'") == 0


async def test_a_batch_that_dies_takes_every_row_it_carried_with_it(
    pool: asyncpg.Pool, run_dispatchers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow crashes at initiate after gathering, then crashes again before it has read its carried rows:
    the row dies, and so does every row its batch carried (none is left in_progress for ever)."""
    provider = FakeIntaSend()

    async def buggy_initiate(**_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the flow")

    provider.initiate = buggy_initiate  # type: ignore[method-assign]
    real_carried_rows = outbox.carried_rows
    calls = 0

    async def carried_rows(conn, lead_id):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 2:  # the second claim's flow crashes before it knows its carried rows
            raise RuntimeError("a bug before the carried rows were read")
        return await real_carried_rows(conn, lead_id)

    monkeypatch.setattr(outbox, "carried_rows", carried_rows)
    payrolls = await payrolls_of_their_own_employers(pool, 5)
    run_dispatchers(provider, dispatcher_max_errors=2, intasend_max_rps=5.0)
    states = await wait_final(pool, payrolls, within_s=30)
    assert set(states.values()) == {"FAILED"}
    rows = await pool.fetch("SELECT status, carried_by FROM outbox")
    assert {r["status"] for r in rows} == {"dead"} and sum(r["carried_by"] is not None for r in rows) == 4


async def test_a_batch_never_mixes_wallets(pool: asyncpg.Pool, run_dispatchers) -> None:
    """Employers with wallets of their own (and one on the default) click at once: each batch pays from
    one wallet, and every payroll's items went out from its employer's wallet."""
    provider = FakeIntaSend()
    sent_from: dict[str, str | None] = {}
    real_initiate = provider.initiate

    async def initiate(**kwargs):  # type: ignore[no-untyped-def]
        batch = await real_initiate(**kwargs)
        for t in kwargs["transactions"]:
            sent_from[t["account"]] = kwargs["wallet_id"]
        return batch

    provider.initiate = initiate  # type: ignore[method-assign]
    wallets = ["W-A", "W-B", None]
    payrolls = []
    for p in range(9):
        employer = await factories.employer(pool, f"E{p}")
        await pool.execute("UPDATE employers SET wallet_id = $2 WHERE id = $1", employer, wallets[p % 3])
        payrolls.append(await factories.processing_payroll(pool, employer_id=employer, accounts=accounts(p)))
    run_dispatchers(provider, intasend_max_rps=5.0, intasend_wallet_id="W-DEFAULT")
    assert set((await wait_final(pool, payrolls, within_s=30)).values()) == {"COMPLETED"}
    assert len(provider.batches) == 3
    for p in range(9):
        assert {sent_from[a] for a in accounts(p)} == {wallets[p % 3] or "W-DEFAULT"}
