"""POST /webhooks/intasend: refused without the challenge, idempotent, and never a source of truth."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from api_service import body as body_module
from api_service.handlers import webhooks
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
            "/webhooks/intasend",
            content=b'{"challenge": "%s", nope' % CHALLENGE.encode(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200
    assert missing.status_code == 422 and garbage.status_code == 400
    assert await pool.fetchval("SELECT count(*) FROM provider_callbacks") == 1


def _json(payload: object) -> dict[str, object]:
    return {"content": json.dumps(payload).encode(), "headers": {"content-type": "application/json"}}


async def test_a_body_without_the_challenge_is_refused_before_it_is_parsed(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real_parse = body_module.parse_json
    monkeypatch.setattr(body_module, "parse_json", lambda raw: parsed.append(len(raw)) or real_parse(raw))
    big = {"tracking_id": "t", "transactions": [{"account": "254700000001"}] * 10_000}
    s = api_support.settings(database_url, intasend_webhook_challenge=CHALLENGE)
    async with api_support.client(s, pool) as c:
        refused = [
            await c.post("/webhooks/intasend", **_json(big)),
            await c.post("/webhooks/intasend", **_json({**big, "challenge": "wrong"})),
            await c.post(
                "/webhooks/intasend", content=b"[" * 50_000, headers={"content-type": "application/json"}
            ),
            await c.post(
                "/webhooks/intasend", content=b"{nope", headers={"content-type": "application/json"}
            ),
        ]
        # A decoy member deeper down passes the pre-check; the top-level challenge still decides.
        decoy = await c.post(
            "/webhooks/intasend", **_json({"tracking_id": "t", "x": {"challenge": CHALLENGE}})
        )
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert all(r.headers["content-type"] == "application/problem+json" for r in refused)
    assert decoy.status_code == 401
    assert len(parsed) == 1  # the decoy only
    assert await pool.fetchval("SELECT count(*) FROM provider_callbacks") == 0


async def test_a_body_over_the_callback_cap_is_413_before_it_is_read(
    pool: asyncpg.Pool, database_url: str
) -> None:
    s = api_support.settings(database_url, intasend_webhook_challenge=CHALLENGE, intasend_batch_size=500)
    cap = webhooks.max_callback_bytes(500)
    assert cap == 64 * 1024 + 500 * 2048 < body_module.MAX_BODY_BYTES // 4
    filler = "x" * (cap + 1)
    async with api_support.client(s, pool) as c:
        declared = await c.post("/webhooks/intasend", **_json({**_callback("t"), "filler": filler}))

        async def chunks():  # no Content-Length: the cap holds on what streams in
            yield json.dumps({**_callback("t"), "filler": ""}).encode()[:-2]
            for _ in range(cap // 65536 + 2):
                yield b"x" * 65536

        streamed = await c.post(
            "/webhooks/intasend", content=chunks(), headers={"content-type": "application/json"}
        )
    assert declared.status_code == 413 and streamed.status_code == 413
    assert await pool.fetchval("SELECT count(*) FROM provider_callbacks") == 0


def _intasend_transaction(n: int) -> dict[str, object]:
    """A transaction as IntaSend's 2025 batch object shows it, every text field at its longest."""
    return {
        "transaction_id": "YP3I6V4", "status": "Unsuccessful", "status_code": "TF106",
        "status_description": "The service request is processed successfully. " + "x" * 100,
        "request_reference_id": str(uuid.uuid4()), "provider": "MPESA-B2C", "bank_code": None,
        "name": "N" * 100, "account": f"2547{n:08d}", "account_type": None, "account_reference": None,
        "provider_reference": "TJRHC8IET4", "provider_account_name": " " + "N" * 100, "amount": "150000.00",
        "charge": "100.00", "narrative": "n" * 22, "file_id": "08Z4GOK", "idempotency_key": None,
        "currency": "KES", "created_at": "2026-11-28T14:00:56.563163+03:00",
        "updated_at": "2026-11-28T14:00:56.563163+03:00",
    }  # fmt: skip


async def test_intasends_callback_for_a_full_batch_pretty_printed_and_escaped_is_accepted(
    pool: asyncpg.Pool, database_url: str
) -> None:
    row_id, tracking_id = await _approved_batch(pool)
    callback = {**_callback(tracking_id), "transactions": [_intasend_transaction(n) for n in range(500)]}
    # ensure_ascii=True writes a non-ASCII challenge as \uXXXX escapes, as a Python sender would.
    challenge = "s3cret-chällenge"
    raw = json.dumps({**callback, "challenge": challenge}, indent=4, ensure_ascii=True).encode()
    assert 600_000 < len(raw) < webhooks.max_callback_bytes(500)
    s = api_support.settings(database_url, intasend_webhook_challenge=challenge, intasend_batch_size=500)
    async with api_support.client(s, pool) as c:
        r = await c.post("/webhooks/intasend", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert await pool.fetchval("SELECT available_at <= now() FROM outbox WHERE id = $1", row_id)
