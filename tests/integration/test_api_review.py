"""Operators settle NEEDS_REVIEW items: `payrun operator create`, then POST /ops/items/resolve (all or nothing,
recorded append-only, the payroll's final status by the same rule as the dispatcher's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import schemas
from shared import operators
from tests import factories
from tests.integration import api_support as api

ROOT = Path(__file__).resolve().parents[2]
RESOLVE = "/ops/items/resolve"


async def _operator(pool: asyncpg.Pool, name: str = "jane.doe") -> operators.NewOperator:
    async with pool.acquire() as conn:
        return await operators.create(conn, name)


async def _reviewed_payroll(pool: asyncpg.Pool, statuses: list[str]) -> tuple[uuid.UUID, list[int]]:
    """A payroll payrun finished NEEDS_REVIEW, its items in `statuses` (in order); returns its item ids."""
    payroll_id = await factories.processing_payroll(
        pool, accounts=[f"2547{n:08d}" for n in range(len(statuses))], amount=Decimal("100.00")
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE outbox SET status = 'done', processed_at = now() WHERE payroll_id = $1", payroll_id
        )
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM payroll_items WHERE payroll_id = $1 ORDER BY position", payroll_id
        )]  # fmt: skip
        await conn.execute(
            """UPDATE payroll_items i SET status = s.status,
                   failure_reason = CASE WHEN s.status = 'NEEDS_REVIEW' THEN 'TF105' END
               FROM unnest($1::bigint[], $2::text[]) AS s(id, status) WHERE i.id = s.id""",
            ids,
            statuses,
        )
        await conn.execute(
            "UPDATE payrolls SET status = 'NEEDS_REVIEW', finished_at = now() - interval '1 hour' WHERE id = $1",
            payroll_id,
        )
    return payroll_id, ids


def _paid(item_id: int, reference: str = "QK12ABC345") -> dict[str, Any]:
    return {"item_id": item_id, "status": "PAID", "provider_reference": reference}


def _failed(item_id: int, reason: str = "IntaSend support: TS100, not sent") -> dict[str, Any]:
    return {"item_id": item_id, "status": "FAILED", "reason": reason}


async def _items(pool: asyncpg.Pool, ids: list[int]) -> list[tuple[str, str | None, str | None]]:
    rows = await pool.fetch(
        "SELECT status, provider_reference, failure_reason FROM payroll_items WHERE id = ANY($1) ORDER BY id",
        ids,
    )
    return [(r["status"], r["provider_reference"], r["failure_reason"]) for r in rows]


def test_payrun_operator_create_prints_a_key_once_and_stores_its_hash(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "payrun", "operator", "create", "--name", "  jane.doe "],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert set(created) == {"id", "name", "api_key"}
    assert created["name"] == "jane.doe"
    assert created["api_key"].startswith(operators.KEY_PREFIX)
    empty = subprocess.run(
        [sys.executable, "-m", "payrun", "operator", "create", "--name", " "],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert empty.returncode == 2 and "payrun operator create" in empty.stderr


async def test_the_operator_key_is_stored_hashed(pool: asyncpg.Pool) -> None:
    created = await _operator(pool)
    row = await pool.fetchrow(
        "SELECT name, api_key_hash FROM operators WHERE id = $1", uuid.UUID(created["id"])
    )
    assert row["name"] == "jane.doe"
    assert created["api_key"].encode() not in bytes(row["api_key_hash"]) and len(row["api_key_hash"]) == 32
    assert await operators.by_api_key(pool, created["api_key"]) == operators.Operator(
        uuid.UUID(created["id"]), "jane.doe"
    )


async def test_resolving_paid_and_failed_completes_the_payroll(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    op = await _operator(pool)
    payroll_id, ids = await _reviewed_payroll(pool, ["PAID", "NEEDS_REVIEW", "NEEDS_REVIEW"])
    finished_at = await pool.fetchval("SELECT finished_at FROM payrolls WHERE id = $1", payroll_id)
    body = {"items": [_paid(ids[1]), _failed(ids[2])], "note": "ticket 5521"}
    response = await client.post(RESOLVE, json=body, headers=api.auth(op["api_key"]))
    assert response.status_code == 200, response.text
    answer = response.json()
    schemas.ResolveItemsOut.model_validate(answer)  # as /openapi.json describes it
    assert answer["payrolls"] == [{"id": str(payroll_id), "status": "PARTIALLY_FAILED"}]
    first, second = answer["resolutions"]
    assert (first["item_id"], first["to_status"], first["provider_reference"], first["reason"]) == (
        ids[1], "PAID", "QK12ABC345", None,
    )  # fmt: skip
    assert (second["item_id"], second["to_status"], second["reason"]) == (
        ids[2], "FAILED", "IntaSend support: TS100, not sent",
    )  # fmt: skip
    assert {r["operator_name"] for r in answer["resolutions"]} == {"jane.doe"}
    assert {r["note"] for r in answer["resolutions"]} == {"ticket 5521"}
    assert not any(r["replayed"] for r in answer["resolutions"])
    assert await _items(pool, ids[1:]) == [
        ("PAID", "QK12ABC345", "TF105"),
        ("FAILED", None, "manual review: IntaSend support: TS100, not sent"),
    ]
    payroll = await pool.fetchrow(
        "SELECT status, paid_amount, finished_at FROM payrolls WHERE id = $1", payroll_id
    )
    assert payroll["status"] == "PARTIALLY_FAILED"
    assert payroll["paid_amount"] == Decimal("200.00")  # the trigger of migration 0008 saw the PAID item
    assert payroll["finished_at"] == finished_at  # when payrun finished with it
    recorded = await pool.fetch(
        "SELECT item_id, payroll_id, operator_id, from_status, to_status FROM item_resolutions ORDER BY item_id"
    )
    assert [tuple(r) for r in recorded] == [
        (ids[1], payroll_id, uuid.UUID(op["id"]), "NEEDS_REVIEW", "PAID"),
        (ids[2], payroll_id, uuid.UUID(op["id"]), "NEEDS_REVIEW", "FAILED"),
    ]


async def test_a_payroll_stays_needs_review_while_an_item_waits(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    op = await _operator(pool)
    payroll_id, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW", "NEEDS_REVIEW"])
    other_id, other_ids = await _reviewed_payroll(pool, ["FAILED", "NEEDS_REVIEW"])
    response = await client.post(
        RESOLVE, json={"items": [_paid(ids[0]), _failed(other_ids[1])]}, headers=api.auth(op["api_key"])
    )
    assert response.status_code == 200, response.text
    assert sorted(response.json()["payrolls"], key=lambda p: p["id"]) == sorted(
        [{"id": str(payroll_id), "status": "NEEDS_REVIEW"}, {"id": str(other_id), "status": "FAILED"}],
        key=lambda p: p["id"],
    )
    response = await client.post(
        RESOLVE, json={"items": [_paid(ids[1], "QK2")]}, headers=api.auth(op["api_key"])
    )
    assert response.json()["payrolls"] == [{"id": str(payroll_id), "status": "COMPLETED"}]
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll_id) == "COMPLETED"


async def test_all_or_nothing_when_one_item_is_not_needs_review(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    op = await _operator(pool)
    payroll_id, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW", "PAID", "NEEDS_REVIEW"])
    body = {"items": [_paid(ids[0]), _failed(ids[1]), _failed(ids[2])]}
    response = await client.post(RESOLVE, json=body, headers=api.auth(op["api_key"]))
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["type"] == "urn:payrun:problem:item-not-in-review"
    assert problem["item_id"] == str(ids[1]) and str(ids[1]) in problem["detail"]
    assert await _items(pool, ids) == [
        ("NEEDS_REVIEW", None, "TF105"),
        ("PAID", None, None),
        ("NEEDS_REVIEW", None, "TF105"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 0
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", payroll_id) == "NEEDS_REVIEW"

    unknown = await client.post(
        RESOLVE, json={"items": [_paid(ids[0]), _paid(10**12)]}, headers=api.auth(op["api_key"])
    )
    assert unknown.status_code == 404 and unknown.json()["item_id"] == str(10**12)
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 0


@pytest.mark.parametrize(
    ("items", "fields"),
    [
        ([{"item_id": 1, "status": "PAID"}], ["items[0].provider_reference"]),
        ([{"item_id": 1, "status": "PAID", "provider_reference": "  "}], ["items[0].provider_reference"]),
        ([_paid(1), {"item_id": 2, "status": "FAILED"}], ["items[1].reason"]),
        ([_paid(1), {"item_id": 2, "status": "FAILED", "reason": ""}], ["items[1].reason"]),
        ([{**_paid(1), "reason": "why"}], ["items[0].reason"]),
        ([{"item_id": 1, "status": "NEEDS_REVIEW"}], ["items[0].status"]),
        ([{"item_id": "1", "status": "PAID", "provider_reference": "R"}], ["items[0].item_id"]),
        ([{"item_id": 1.5, "status": "PAID", "provider_reference": "R"}], ["items[0].item_id"]),
        ([{**_paid(1), "extra": 1}], ["items[0].extra"]),
        ([], ["items"]),
    ],
)
async def test_invalid_resolutions_are_422_naming_the_field(
    client: httpx.AsyncClient, pool: asyncpg.Pool, items: list[dict[str, Any]], fields: list[str]
) -> None:
    op = await _operator(pool)
    response = await client.post(RESOLVE, json={"items": items}, headers=api.auth(op["api_key"]))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == fields


async def test_an_item_listed_twice_the_same_way_is_one_resolution_and_two_ways_a_conflict(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    op = await _operator(pool)
    _, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW", "NEEDS_REVIEW"])
    response = await client.post(
        RESOLVE,
        json={"items": [_paid(ids[0]), {"item_id": ids[1], "status": "FAILED", "reason": "not sent"},
                        {"item_id": ids[1], "status": "PAID", "provider_reference": "QK1"}]},
        headers=api.auth(op["api_key"]),
    )  # fmt: skip
    assert response.status_code == 409 and response.json()["item_id"] == str(ids[1]), response.text
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 0
    response = await client.post(
        RESOLVE, json={"items": [_paid(ids[0]), _paid(ids[0])]}, headers=api.auth(op["api_key"])
    )
    assert response.status_code == 200, response.text
    assert [r["item_id"] for r in response.json()["resolutions"]] == [ids[0]]
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 1


async def test_keys_do_not_cross(client: httpx.AsyncClient, pool: asyncpg.Pool, key: str) -> None:
    op = await _operator(pool)
    _, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW"])
    refused = await client.post(RESOLVE, json={"items": [_paid(ids[0])]}, headers=api.auth(key))
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    missing = await client.post(RESOLVE, json={"items": [_paid(ids[0])]})
    assert missing.status_code == 401
    assert (await client.get("/payrolls", headers=api.auth(op["api_key"]))).status_code == 401
    assert (await client.get("/payrolls", headers=api.auth(key))).status_code == 200
    assert await _items(pool, ids) == [("NEEDS_REVIEW", None, "TF105")]


async def test_the_same_resolution_again_answers_what_was_recorded(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    op, other = await _operator(pool), await _operator(pool, "john.roe")
    payroll_id, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW", "NEEDS_REVIEW"])
    body = {"items": [_paid(ids[0])], "note": "first"}
    first = await client.post(RESOLVE, json=body, headers=api.auth(op["api_key"]))
    assert first.status_code == 200
    again = await client.post(RESOLVE, json={**body, "note": "retry"}, headers=api.auth(other["api_key"]))
    assert again.status_code == 200, again.text
    replay = again.json()["resolutions"][0]
    assert replay == {**first.json()["resolutions"][0], "replayed": True}
    assert replay["operator_name"] == "jane.doe" and replay["note"] == "first"
    # A retry that also carries a new item resolves that one.
    both = await client.post(
        RESOLVE, json={"items": [_paid(ids[0]), _failed(ids[1])]}, headers=api.auth(op["api_key"])
    )
    assert both.status_code == 200
    assert [r["replayed"] for r in both.json()["resolutions"]] == [True, False]
    assert both.json()["payrolls"] == [{"id": str(payroll_id), "status": "PARTIALLY_FAILED"}]
    for different in (_paid(ids[0], "OTHER-REF"), _failed(ids[0])):
        conflict = await client.post(RESOLVE, json={"items": [different]}, headers=api.auth(op["api_key"]))
        assert conflict.status_code == 409 and conflict.json()["item_id"] == str(ids[0])
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 2


async def test_item_resolutions_is_append_only(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    op = await _operator(pool)
    _, ids = await _reviewed_payroll(pool, ["NEEDS_REVIEW"])
    assert (
        await client.post(RESOLVE, json={"items": [_paid(ids[0])]}, headers=api.auth(op["api_key"]))
    ).status_code == 200
    for statement in (
        "UPDATE item_resolutions SET to_status = 'FAILED', reason = 'x', provider_reference = NULL",
        "DELETE FROM item_resolutions",
        "TRUNCATE item_resolutions",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await pool.execute(statement)
    assert await pool.fetchval("SELECT count(*) FROM item_resolutions") == 1

    # Only the retention move of docs/operations.md section 5 (tested with test_audit_sql.py) says it archives.
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL payrun.archiving = 'on'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE item_resolutions SET note = 'x'")
