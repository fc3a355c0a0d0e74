"""The outbox gauges that /metrics refreshes on every scrape, against real rows."""

from __future__ import annotations

import asyncpg

from shared import metrics
from tests import factories


def gauge(metric, *labels: str) -> float:
    return (metric.labels(*labels) if labels else metric)._value.get()


async def test_backlog_gauges_count_pending_in_progress_dead_and_errors(pool: asyncpg.Pool) -> None:
    accounts = [f"2547{n:08d}" for n in range(8)]
    await factories.processing_payroll(pool, accounts=accounts, batch_size=2)  # 4 pending rows
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM outbox ORDER BY id")]
    await pool.execute(
        "UPDATE outbox SET status = 'in_progress', locked_by = 'd1', locked_until = now() + interval '5 s',"
        " lease_token = gen_random_uuid(),"
        " errors = 1, created_at = now() - interval '90 s' WHERE id = $1",
        ids[0],
    )
    await pool.execute("UPDATE outbox SET errors = 2 WHERE id = $1", ids[1])
    await pool.execute(
        "UPDATE outbox SET status = 'dead', processed_at = now(), errors = 12 WHERE id = $1", ids[2]
    )
    await metrics.refresh_backlog(pool)
    assert gauge(metrics.OUTBOX_ROWS, "pending") == 2
    assert gauge(metrics.OUTBOX_ROWS, "in_progress") == 1
    assert gauge(metrics.OUTBOX_ROWS, "dead") == 1
    assert gauge(metrics.OUTBOX_ROWS_WITH_ERRORS) == 2  # the dead row's errors are not a backlog's
    assert 89 <= gauge(metrics.OUTBOX_OLDEST_PENDING) < 120  # the in-progress row, written 90 s ago
