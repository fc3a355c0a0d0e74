"""POST /ops/items/recheck: an operator makes NEEDS_REVIEW items' batches due for a re-check with IntaSend now
(all or none, idempotent, an operator's key only, field-level problems for bad input)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import schemas
from shared import operators
from tests import factories
from tests.integration import api_support as api

RECHECK = "/ops/items/recheck"


async def _operator_auth(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return api.auth((await operators.create(conn, "jane.doe"))["api_key"])


async def _in_review(pool: asyncpg.Pool, statuses: list[str]) -> tuple[uuid.UUID, list[int], str]:
    """A payroll payrun finished, its items in `statuses`, all in one IntaSend batch whose row is done."""
    payroll_id = await factories.processing_payroll(
        pool, accounts=[f"2547{n:08d}" for n in range(len(statuses))], amount=Decimal("100.00")
    )
    tracking_id = f"TRK-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn, conn.transaction():
        outbox_id = await conn.fetchval(
            "UPDATE outbox SET status = 'done', processed_at = now() WHERE payroll_id = $1 RETURNING id",
            payroll_id,
        )
        batch_id = await conn.fetchval(
            """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, stage, initiate_response)
               VALUES ($1, $2, $3, 'finished', '{}') RETURNING id""",
            outbox_id,
            payroll_id,
            tracking_id,
        )
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM payroll_items WHERE payroll_id = $1 ORDER BY position", payroll_id
        )]  # fmt: skip
        await conn.execute(
            """UPDATE payroll_items i SET status = s.status, provider_batch_id = $3,
                   request_reference_id = 'ref-' || i.id
               FROM unnest($1::bigint[], $2::text[]) AS s(id, status) WHERE i.id = s.id""",
            ids,
            statuses,
            batch_id,
        )
        await conn.execute(
            "UPDATE payrolls SET status = 'NEEDS_REVIEW', finished_at = now() WHERE id = $1", payroll_id
        )
    return payroll_id, ids, tracking_id


async def test_items_become_due_now_and_asking_again_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    headers = await _operator_auth(pool)
    _, ids, tracking_id = await _in_review(pool, ["PAID", "NEEDS_REVIEW", "NEEDS_REVIEW"])
    response = await client.post(RECHECK, json={"item_ids": [ids[2], ids[1]]}, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    schemas.RecheckItemsOut.model_validate(answer)  # as /openapi.json describes it
    [batch] = answer["batches"]
    assert (batch["tracking_id"], batch["item_ids"], batch["checks"]) == (tracking_id, ids[1:], 0)
    assert batch["last_checked_at"] is None and batch["last_result"] is None
    assert await pool.fetchval(
        "SELECT due_at <= now() FROM batch_rechecks WHERE tracking_id = $1", tracking_id
    )

    again = await client.post(RECHECK, json={"item_ids": [ids[1], ids[1]]}, headers=headers)
    assert again.status_code == 200
    assert again.json()["batches"][0]["due_at"] == batch["due_at"], "a batch due already stays as it is"
    assert await pool.fetchval("SELECT count(*) FROM batch_rechecks") == 1


async def test_a_schedule_waiting_or_given_up_is_due_now(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    headers = await _operator_auth(pool)
    payroll_id, ids, tracking_id = await _in_review(pool, ["NEEDS_REVIEW", "PAID"])
    await client.post(RECHECK, json={"item_ids": [ids[0]]}, headers=headers)
    await pool.execute(
        "UPDATE batch_rechecks SET due_at = now() + interval '5 hours', gave_up_at = now(), checks = 30,"
        " last_result = 'not_found', last_checked_at = now()"
    )
    response = await client.post(RECHECK, json={"payroll_id": str(payroll_id)}, headers=headers)
    assert response.status_code == 200, response.text
    [batch] = response.json()["batches"]
    assert (batch["item_ids"], batch["checks"], batch["last_result"]) == ([ids[0]], 30, "not_found")
    row = await pool.fetchrow("SELECT due_at <= now() AS due, gave_up_at FROM batch_rechecks")
    assert row["due"] and row["gave_up_at"] is None


async def test_an_item_resolved_by_hand_can_be_rechecked(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    headers = await _operator_auth(pool)
    _, ids, _ = await _in_review(pool, ["NEEDS_REVIEW"])
    resolved = await client.post(
        "/ops/items/resolve",
        json={"items": [{"item_id": ids[0], "status": "FAILED", "reason": "support: not sent"}]},
        headers=headers,
    )
    assert resolved.status_code == 200, resolved.text
    response = await client.post(RECHECK, json={"item_ids": [ids[0]]}, headers=headers)
    assert response.status_code == 200, response.text


async def test_nothing_to_recheck_is_a_409_and_changes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    headers = await _operator_auth(pool)
    payroll_id, ids, _ = await _in_review(pool, ["NEEDS_REVIEW", "PAID"])
    response = await client.post(RECHECK, json={"item_ids": [ids[0], ids[1]]}, headers=headers)
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"].endswith("nothing-to-recheck") and problem["item_id"] == str(ids[1])
    assert await pool.fetchval("SELECT count(*) FROM batch_rechecks") == 0, "all or none"

    paid, _, _ = await _in_review(pool, ["PAID"])
    response = await client.post(RECHECK, json={"payroll_id": str(paid)}, headers=headers)
    assert response.status_code == 409 and response.json()["payroll_id"] == str(paid)


async def test_unknown_items_and_payrolls_are_404(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    headers = await _operator_auth(pool)
    _, ids, _ = await _in_review(pool, ["NEEDS_REVIEW"])
    response = await client.post(RECHECK, json={"item_ids": [ids[0], 987654]}, headers=headers)
    assert response.status_code == 404 and response.json()["item_id"] == "987654"
    response = await client.post(RECHECK, json={"payroll_id": str(uuid.uuid4())}, headers=headers)
    assert response.status_code == 404
    assert await pool.fetchval("SELECT count(*) FROM batch_rechecks") == 0


async def test_an_employer_key_is_refused(client: httpx.AsyncClient, pool: asyncpg.Pool, key: str) -> None:
    _, ids, _ = await _in_review(pool, ["NEEDS_REVIEW"])
    response = await client.post(RECHECK, json={"item_ids": ids}, headers=api.auth(key))
    assert response.status_code == 401
    assert (await client.post(RECHECK, json={"item_ids": ids})).status_code == 401


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, [""]),
        ({"item_ids": [1], "payroll_id": str(uuid.UUID(int=1))}, [""]),
        ({"item_ids": None}, ["item_ids"]),
        ({"item_ids": []}, ["item_ids"]),
        ({"item_ids": [0, "x", 5.5]}, ["item_ids[0]", "item_ids[1]", "item_ids[2]"]),
        ({"item_ids": list(range(1, 1002))}, ["item_ids"]),
        ({"payroll_id": "nope"}, ["payroll_id"]),
        ({"payroll_id": None}, ["payroll_id"]),
        ({"item_ids": [1], "note": "x"}, ["note"]),
    ],
)
async def test_bad_input_is_a_field_level_422(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, Any], fields: list[str]
) -> None:
    headers = await _operator_auth(pool)
    response = await client.post(RECHECK, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == fields
