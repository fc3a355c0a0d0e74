"""POST /payrolls/{id}/cancel over the API, and the funds status detail of GET /payrolls/{id} and /status."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg
import httpx

from shared import batches
from tests.integration import api_support as api


async def _processing(client: httpx.AsyncClient, key: str, items: int = 3, reference: str = "NOV") -> str:
    created = await api.create_payroll(client, key, api.payroll_body(items=items, reference=reference))
    response = await client.post(f"/payrolls/{created['id']}/process", headers=api.auth(key))
    assert response.status_code == 202, response.text
    payroll_id: str = created["id"]
    return payroll_id


async def test_cancel_of_a_payroll_no_dispatcher_has_touched_cancels_every_item(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll_id = await _processing(client, key)
    response = await client.post(f"/payrolls/{payroll_id}/cancel", headers=api.auth(key))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "CANCELLED" and body["cancelled_now"] == 3 and body["cancelled"] == 3
    assert body["not_cancellable"] == 0 and body["status_url"] == f"/payrolls/{payroll_id}/status"
    assert response.headers["Location"] == body["status_url"]
    status = (await client.get(body["status_url"], headers=api.auth(key))).json()
    assert status["status"] == "CANCELLED" and status["counts"]["CANCELLED"] == 3
    detail = (await client.get(f"/payrolls/{payroll_id}", headers=api.auth(key))).json()
    assert {i["status"] for i in detail["items"]} == {"CANCELLED"}
    assert {i["failure_reason"] for i in detail["items"]} == {"cancelled by the employer"}
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE status <> 'done'") == 0

    again = await client.post(f"/payrolls/{payroll_id}/cancel", headers=api.auth(key))
    assert again.status_code == 200
    assert again.json() == {**body, "cancelled_now": 0}, "naturally idempotent"
    listed = (await client.get("/payrolls?status=CANCELLED", headers=api.auth(key))).json()
    assert [p["id"] for p in listed["items"]] == [payroll_id]


async def test_cancel_replays_its_first_answer_for_an_idempotency_key(
    client: httpx.AsyncClient, key: str
) -> None:
    payroll_id = await _processing(client, key)
    headers = {**api.auth(key), "Idempotency-Key": "cancel-1"}
    first = await client.post(f"/payrolls/{payroll_id}/cancel", headers=headers)
    second = await client.post(f"/payrolls/{payroll_id}/cancel", headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json() and second.json()["cancelled_now"] == 3
    assert second.headers.get("Idempotent-Replayed") == "true"


async def test_cancel_refuses_a_draft_a_finished_payroll_and_a_bad_key(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    draft = await api.create_payroll(client, key)
    response = await client.post(f"/payrolls/{draft['id']}/cancel", headers=api.auth(key))
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith("payroll-not-processing") and problem["payroll_status"] == "DRAFT"
    assert "DELETE" in problem["detail"]

    finished = await _processing(client, key, reference="DONE")
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE payroll_id = $1", uuid.UUID(finished))
    await pool.execute("UPDATE outbox SET status = 'done', processed_at = now()")
    await pool.execute("UPDATE payrolls SET status = 'COMPLETED' WHERE id = $1", uuid.UUID(finished))
    response = await client.post(f"/payrolls/{finished}/cancel", headers=api.auth(key))
    assert response.status_code == 409 and response.json()["type"].endswith("payroll-final")

    response = await client.post(
        f"/payrolls/{finished}/cancel", headers={**api.auth(key), "Idempotency-Key": ""}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_another_employers_payroll_is_not_found_and_not_cancelled(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll_id = await _processing(client, key)
    other = (await api.employer(pool, "Other Ltd"))["api_key"]
    for path in (
        f"/payrolls/{payroll_id}/cancel",
        f"/payrolls/{uuid.uuid4()}/cancel",
        "/payrolls/nope/cancel",
    ):
        response = await client.post(path, headers=api.auth(other))
        assert response.status_code == 404, path
    assert (await client.post(f"/payrolls/{payroll_id}/cancel")).status_code == 401
    states = await pool.fetch("SELECT DISTINCT status FROM payroll_items")
    assert [r["status"] for r in states] == ["PENDING"]


async def test_a_payroll_waiting_for_funds_says_why_and_how_much_is_missing(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    """The funds columns of a short batch, as the dispatcher records them (written here by hand; the
    dispatcher's own path is test_funds_and_cancel.py), are what GET shows."""
    payroll_id = await _processing(client, key)  # 3 x 1,500.00
    lead = await pool.fetchval("SELECT id FROM outbox")
    batch_id = await pool.fetchval(
        """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, nonce, stage, initiate_response)
           VALUES ($1, $2, 'T-1', 'n', 'initiated', '{}') RETURNING id""",
        lead,
        uuid.UUID(payroll_id),
    )
    await pool.execute(
        """UPDATE provider_batches SET funds_required = 4530.00, funds_available = 4000.00,
           funds_wallet_id = 'WLT1', funds_checked_at = now(), funds_short_checks = 1 WHERE id = $1""",
        batch_id,
    )
    await pool.execute("UPDATE outbox SET available_at = now() + interval '30 seconds'")
    status = (await client.get(f"/payrolls/{payroll_id}/status", headers=api.auth(key))).json()
    detail = status["status_detail"]
    assert detail["code"] == "insufficient_funds" and detail["wallet_id"] == "WLT1"
    assert (detail["short_by"], detail["required"], detail["available_balance"]) == (
        "530.00",
        "4530.00",
        "4000.00",
    )
    assert detail["waiting_batches"] == 1 and "add 530.00 KES" in detail["message"]
    full = (await client.get(f"/payrolls/{payroll_id}", headers=api.auth(key))).json()
    assert full["status_detail"] == detail

    # Cancelling it abandons the waiting batch: it is never approved.
    response = await client.post(f"/payrolls/{payroll_id}/cancel", headers=api.auth(key))
    assert response.json()["status"] == "CANCELLED"
    assert await pool.fetchval("SELECT stage FROM provider_batches") == batches.Stage.ABANDONED
    after = (await client.get(f"/payrolls/{payroll_id}/status", headers=api.auth(key))).json()
    assert after["status_detail"] is None


async def test_a_funded_payroll_has_no_status_detail(client: httpx.AsyncClient, key: str) -> None:
    payroll_id = await _processing(client, key)
    status = (await client.get(f"/payrolls/{payroll_id}/status", headers=api.auth(key))).json()
    assert status["status_detail"] is None
    draft = await api.create_payroll(client, key, api.payroll_body(reference="D"))
    assert (await client.get(f"/payrolls/{draft['id']}", headers=api.auth(key))).json()[
        "status_detail"
    ] is None
    assert Decimal(status["total_amount"]) == Decimal("4500.00")
