"""POST /webhooks/intasend: refused without the challenge, idempotent, and never a source of truth."""

from __future__ import annotations

import asyncpg

from shared import outbox
from tests import factories
from tests.integration import api_support

CHALLENGE = "s3cret-challenge"


async def _approved_batch(pool: asyncpg.Pool) -> tuple[int, str]:
    """A payroll whose batch was approved and whose row waits (pending) for its next poll in an hour."""
    await factories.processing_payroll(pool, accounts=["254700000001", "254700000002"])
    [row] = await outbox.claim(pool, worker="w", lease_s=30, limit=1)
    tracking_id = "7f0c1c9e-0000-4000-8000-000000000001"
    batch_id = await pool.fetchval(
        """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, nonce, stage, initiate_response)
           VALUES ($1, $2, $3, 'n', 'approved', '{}') RETURNING id""",
        row.id,
        row.payroll_id,
        tracking_id,
    )
    await pool.execute("UPDATE payroll_items SET provider_batch_id = $1, status = 'SUBMITTED'", batch_id)
    assert await outbox.release(pool, row.id, row.lease_token, delay_s=3600)
    return row.id, tracking_id


def _callback(tracking_id: str, challenge: str | None = CHALLENGE, code: str = "BC100") -> dict[str, object]:
    body: dict[str, object] = {
        "tracking_id": tracking_id,
        "status": "Completed",
        "status_code": code,
        "transactions": [{"status_code": "TS100", "account": "254700000001"}],
    }
    if challenge is not None:
        body["challenge"] = challenge
    return body


async def test_callbacks_are_refused_without_the_configured_challenge(
    pool: asyncpg.Pool, database_url: str
) -> None:
    row_id, tracking_id = await _approved_batch(pool)
    for configured, sent in (
        (None, CHALLENGE),
        (CHALLENGE, None),
        (CHALLENGE, "wrong"),
        (CHALLENGE, CHALLENGE[:-1]),
    ):
        s = api_support.settings(database_url, intasend_webhook_challenge=configured)
        async with api_support.client(s, pool) as c:
            response = await c.post("/webhooks/intasend", json=_callback(tracking_id, sent))
        assert response.status_code == 401, (configured, sent)
        assert response.headers["content-type"] == "application/problem+json"
    assert await pool.fetchval("SELECT count(*) FROM provider_callbacks") == 0


async def test_a_callback_wakes_the_batch_and_sets_no_state(pool: asyncpg.Pool, database_url: str) -> None:
    row_id, tracking_id = await _approved_batch(pool)
    s = api_support.settings(database_url, intasend_webhook_challenge=CHALLENGE)
    async with api_support.client(s, pool) as c:
        first = await c.post("/webhooks/intasend", json=_callback(tracking_id))
        again = await c.post("/webhooks/intasend", json=_callback(tracking_id))
        older = await c.post("/webhooks/intasend", json=_callback(tracking_id, code="BP110"))
    assert [r.status_code for r in (first, again, older)] == [200, 200, 200]
    # Due now, so a dispatcher asks IntaSend for the status at once; nothing else changed.
    assert await pool.fetchval("SELECT available_at <= now() FROM outbox WHERE id = $1", row_id)
    assert await pool.fetchval("SELECT status FROM outbox WHERE id = $1", row_id) == "pending"
    assert {r["status"] for r in await pool.fetch("SELECT status FROM payroll_items")} == {"SUBMITTED"}
    assert await pool.fetchval("SELECT status FROM payrolls") == "PROCESSING"
    kept = await pool.fetch("SELECT status_code, deliveries, body FROM provider_callbacks ORDER BY id")
    assert [(r["status_code"], r["deliveries"]) for r in kept] == [("BC100", 2), ("BP110", 1)]
    assert all("challenge" not in r["body"] for r in kept)


async def test_a_callback_for_an_unknown_batch_is_kept_and_ignored(
    pool: asyncpg.Pool, database_url: str
) -> None:
    s = api_support.settings(database_url, intasend_webhook_challenge=CHALLENGE)
    async with api_support.client(s, pool) as c:
        response = await c.post("/webhooks/intasend", json=_callback("unknown-batch"))
        missing = await c.post("/webhooks/intasend", json={"challenge": CHALLENGE})
        garbage = await c.post(
            "/webhooks/intasend", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert response.status_code == 200
    assert missing.status_code == 422 and garbage.status_code == 400
    assert await pool.fetchval("SELECT count(*) FROM provider_callbacks") == 1
