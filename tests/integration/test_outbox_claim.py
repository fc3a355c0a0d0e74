from __future__ import annotations

import asyncio

import asyncpg

from shared import outbox
from tests import factories


async def test_enqueue_writes_one_row_per_batch_of_items_per_provider(pool: asyncpg.Pool) -> None:
    payroll_id = await factories.processing_payroll(
        pool, accounts=[f"2547{n:08d}" for n in range(25)], batch_size=10
    )
    rows = await pool.fetch(
        "SELECT kind, payload, status, attempts FROM outbox WHERE payroll_id = $1 ORDER BY id", payroll_id
    )
    assert [len(r["payload"]["item_ids"]) for r in rows] == [10, 10, 5]
    assert {r["kind"] for r in rows} == {"send_batch"}
    assert {r["status"] for r in rows} == {"pending"}
    assert all(r["payload"]["provider"] == "MPESA-B2C" for r in rows)
    ids = [i for r in rows for i in r["payload"]["item_ids"]]
    assert len(ids) == len(set(ids)) == 25


async def test_concurrent_claims_never_hand_out_a_row_twice(pool: asyncpg.Pool) -> None:
    for _ in range(20):
        await factories.processing_payroll(pool, accounts=["254700000001"])
    results = await asyncio.gather(
        *(outbox.claim(pool, worker=f"w{n}", lease_s=30, limit=3) for n in range(8))
    )
    claimed = [row.id for batch in results for row in batch]
    assert len(claimed) == len(set(claimed)) == 20
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status = 'in_progress'") == 20


async def test_an_expired_lease_is_claimed_again_and_fences_out_the_old_holder(pool: asyncpg.Pool) -> None:
    await factories.processing_payroll(pool, accounts=["254700000001"])
    [first] = await outbox.claim(pool, worker="old", lease_s=0.2, limit=5)
    assert await outbox.claim(pool, worker="new", lease_s=30, limit=5) == []
    await asyncio.sleep(0.3)
    [second] = await outbox.claim(pool, worker="new", lease_s=30, limit=5)
    assert second.id == first.id and second.attempts == 2 and second.lease_token != first.lease_token
    # The old holder can no longer extend, release or finish the row.
    assert (
        await outbox.extend_leases(pool, worker="old", lease_s=30, held={first.id: first.lease_token})
        == set()
    )
    assert not await outbox.release(pool, first.id, first.lease_token, delay_s=0)
    async with pool.acquire() as conn, conn.transaction():
        assert not await outbox.hold_lease(conn, first.id, first.lease_token)
        assert not await outbox.finish(conn, first.id, first.lease_token)
        assert await outbox.hold_lease(conn, second.id, second.lease_token)
    row = await pool.fetchrow("SELECT status, locked_by FROM outbox WHERE id = $1", first.id)
    assert (row["status"], row["locked_by"]) == ("in_progress", "new")


async def test_release_delays_the_row_and_records_the_error(pool: asyncpg.Pool) -> None:
    await factories.processing_payroll(pool, accounts=["254700000001"])
    [row] = await outbox.claim(pool, worker="w", lease_s=30, limit=1)
    assert await outbox.release(pool, row.id, row.lease_token, delay_s=60, error="boom", count_error=True)
    assert await outbox.claim(pool, worker="w", lease_s=30, limit=1) == []
    r = await pool.fetchrow("SELECT status, last_error, errors, locked_by FROM outbox WHERE id = $1", row.id)
    assert dict(r) == {"status": "pending", "last_error": "boom", "errors": 1, "locked_by": None}


async def test_claim_uses_the_partial_index_however_many_rows_are_done(pool: asyncpg.Pool) -> None:
    await factories.processing_payroll(pool, accounts=["254700000001"])
    await pool.execute(
        """INSERT INTO outbox (payroll_id, kind, payload, status, processed_at)
           SELECT payroll_id, kind, payload, 'done', now() FROM outbox, generate_series(1, 5000)"""
    )
    await pool.execute("ANALYZE outbox")
    from shared import sqlfiles

    plan = await pool.fetch("EXPLAIN " + sqlfiles.load("outbox")["claim_batch"], "w", 30.0, 10, [], 0)
    text = "\n".join(r[0] for r in plan)
    assert "outbox_pending_idx" in text and "outbox_in_progress_idx" in text, text
