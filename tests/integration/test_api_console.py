"""The operator console's JSON (GET /ops/overview, /ops/payrolls, /ops/items, /ops/outbox, /ops/actions and
POST /ops/payrolls/{id}/retry): an operator's key only, every employer's data, field-level 422s, paging; and
GET /payrolls's ETag, which the employer dashboard's list refreshes with."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import ops_schemas, schemas
from shared import operators
from tests import factories
from tests.integration import api_support as api

READS = ["/ops/overview", "/ops/payrolls", "/ops/items", "/ops/outbox", "/ops/actions"]


@pytest.fixture
async def op_key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return (await operators.create(conn, "console.operator"))["api_key"]


async def _get(client: httpx.AsyncClient, key: str, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=api.auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _finished_batch(
    pool: asyncpg.Pool,
    payroll_id: uuid.UUID,
    statuses: list[str],
    tracking_id: str,
    *,
    row_status: str = "done",
) -> list[int]:
    """The payroll's first outbox row carried its items in one IntaSend batch that finished now, each item in
    `statuses` (in position order) with a request reference; returns the item ids."""
    async with pool.acquire() as conn, conn.transaction():
        outbox_id = await conn.fetchval("SELECT min(id) FROM outbox WHERE payroll_id = $1", payroll_id)
        await conn.execute(
            """UPDATE outbox SET status = $2, processed_at = now(), attempts = 3,
                   last_error = CASE WHEN $2 = 'dead' THEN 'ProviderError: HTTP 500 from /status' END
               WHERE id = $1""",
            outbox_id,
            row_status,
        )
        batch_id = await conn.fetchval(
            """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, stage, initiate_response,
                   finished_at)
               VALUES ($1, $2, $3, 'finished', '{}', now()) RETURNING id""",
            outbox_id,
            payroll_id,
            tracking_id,
        )
        ids = [r["id"] for r in await conn.fetch(
            "SELECT id FROM payroll_items WHERE payroll_id = $1 ORDER BY position", payroll_id
        )]  # fmt: skip
        await conn.execute(
            """UPDATE payroll_items i SET status = s.status, provider_batch_id = $3,
                   request_reference_id = 'rr-' || i.position,
                   failure_reason = CASE s.status WHEN 'NEEDS_REVIEW' THEN 'TF105' WHEN 'FAILED' THEN 'TS100' END
               FROM unnest($1::bigint[], $2::text[]) AS s(id, status) WHERE i.id = s.id""",
            ids[: len(statuses)],
            statuses,
            batch_id,
        )
    return ids


async def _world(pool: asyncpg.Pool) -> dict[str, Any]:
    """Two employers: Acme's payroll is done but for a NEEDS_REVIEW item; Beta has a payroll whose only row
    is stuck (lease ran out) and one whose row went dead."""
    acme, beta = await factories.employer(pool, "Acme"), await factories.employer(pool, "Beta")
    reviewed = await factories.processing_payroll(
        pool, employer_id=acme, accounts=["254712000001", "254712000002"], amount=Decimal("2500.00")
    )
    ids = await _finished_batch(pool, reviewed, ["PAID", "NEEDS_REVIEW"], "TRK-ACME-1")
    await pool.execute(
        "UPDATE payrolls SET status = 'NEEDS_REVIEW', finished_at = now() WHERE id = $1", reviewed
    )
    stuck = await factories.processing_payroll(pool, employer_id=beta, accounts=["254733000001"])
    await pool.execute(
        """UPDATE outbox SET status = 'in_progress', locked_by = 'dispatcher-7', lease_token = gen_random_uuid(),
               locked_until = now() - interval '2 minutes', attempts = 2, errors = 1,
               last_error = 'ProviderTimeout: no answer from /send-money/initiate/ in 30 s'
           WHERE payroll_id = $1""",
        stuck,
    )
    dead = await factories.processing_payroll(pool, employer_id=beta, accounts=["254733000002"])
    await _finished_batch(pool, dead, [], "TRK-BETA-DEAD", row_status="dead")
    return {"acme": acme, "beta": beta, "reviewed": reviewed, "review_item": ids[1], "paid_item": ids[0],
            "stuck": stuck, "dead": dead}  # fmt: skip


async def _not_near_a_minute_boundary(pool: asyncpg.Pool, margin_s: float = 15.0) -> None:
    second = float(await pool.fetchval("SELECT extract(second FROM clock_timestamp())"))
    if second > 60.0 - margin_s:
        await asyncio.sleep(60.0 - second + 0.2)


async def test_every_console_route_refuses_an_employer_key_and_no_key(
    client: httpx.AsyncClient, key: str, op_key: str
) -> None:
    for path in READS:
        for headers in ({}, api.auth(key)):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert (await client.get(path, headers=api.auth(op_key))).status_code == 200, path
    for headers in ({}, api.auth(key)):
        response = await client.post(f"/ops/payrolls/{uuid.uuid4()}/retry", headers=headers)
        assert response.status_code == 401
    # and an operator's key opens no employer route
    assert (await client.get("/payrolls", headers=api.auth(op_key))).status_code == 401


async def test_the_overview_counts_every_employer_the_rate_limit_and_the_last_hour(
    client: httpx.AsyncClient, pool: asyncpg.Pool, op_key: str
) -> None:
    await _not_near_a_minute_boundary(pool)  # the last hour is counted per minute: all of this in one minute
    world = await _world(pool)
    await pool.execute(
        "UPDATE provider_rate SET paused_until = now() + interval '30 seconds', pause_epoch = 3 WHERE name = 'intasend'"
    )
    await pool.execute(
        "INSERT INTO provider_sends (name, sent_at) SELECT 'intasend', now() FROM generate_series(1, 10)"
    )
    body = await _get(client, op_key, "/ops/overview")
    ops_schemas.OpsOverviewOut.model_validate(body)
    assert body["payrolls"] == {"NEEDS_REVIEW": 1, "PROCESSING": 2}
    assert body["outbox"] | {"total_estimate": 0} == {
        "pending": 0, "due": 0, "in_progress": 1, "dead": 1, "stuck": 1, "total_estimate": 0
    }  # fmt: skip
    assert body["review_items"] == 1
    rate = body["rate"]
    assert rate["paused"] is True and rate["pauses"] == 3 and rate["max_rps"] == 5.0
    assert rate["recent_rps"] == 2.0 and rate["unanswered"] == 10
    assert len(body["last_hour"]) == 60
    now = body["last_hour"][-1]
    assert (now["paid"], now["review"], now["failed"]) == (1, 1, 0)
    assert now["waiting"] == 1  # the stuck row; the done and dead rows finished this minute
    assert sum(m["waiting"] for m in body["last_hour"][:-1]) == 0  # all created this minute
    names = {e["name"]: e["payrolls"] for e in body["employers"]}
    assert names == {"Acme": {"NEEDS_REVIEW": 1}, "Beta": {"PROCESSING": 2}}
    assert {e["id"] for e in body["employers"]} == {str(world["acme"]), str(world["beta"])}


async def test_payrolls_of_every_employer_filtered_searched_and_paged(
    client: httpx.AsyncClient, pool: asyncpg.Pool, op_key: str
) -> None:
    world = await _world(pool)
    everything = await _get(client, op_key, "/ops/payrolls")
    ops_schemas.OpsPayrollPageOut.model_validate(everything)
    assert {p["id"] for p in everything["items"]} == {str(world[k]) for k in ("reviewed", "stuck", "dead")}
    reviewed = next(p for p in everything["items"] if p["id"] == str(world["reviewed"]))
    assert (reviewed["employer_name"], reviewed["review_items"], reviewed["outbox"]) == (
        "Acme",
        1,
        {"done": 1},
    )
    assert reviewed["paid_amount"] == "2500.00" and reviewed["retried_by"] is None

    beta = await _get(client, op_key, "/ops/payrolls", employer_id=str(world["beta"]))
    assert {p["id"] for p in beta["items"]} == {str(world["stuck"]), str(world["dead"])}
    review = await _get(client, op_key, "/ops/payrolls", status="NEEDS_REVIEW")
    assert [p["id"] for p in review["items"]] == [str(world["reviewed"])]
    reference = reviewed["reference"]
    found = await _get(client, op_key, "/ops/payrolls", q=reference[4:].lower())
    assert [p["id"] for p in found["items"]] == [str(world["reviewed"])]
    assert (await _get(client, op_key, "/ops/payrolls", q="%"))["items"] == []  # a wildcard is a character

    seen, cursor = [], None
    while True:
        page = await _get(client, op_key, "/ops/payrolls", limit=1, **({"cursor": cursor} if cursor else {}))
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [p["id"] for p in everything["items"]] and len(seen) == 3


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/ops/payrolls", {"employer_id": "acme"}, "employer_id"),
        ("/ops/payrolls", {"status": "PAID"}, "status"),
        ("/ops/payrolls", {"limit": "0"}, "limit"),
        ("/ops/payrolls", {"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ("/ops/items", {"status": "DONE"}, "status"),
        ("/ops/items", {"q": "x" * 101}, "q"),
        ("/ops/items", {"q": "a\x01b"}, "q"),
        ("/ops/items", {"cursor": "WyJ4Il0"}, "cursor"),
        ("/ops/outbox", {"view": "everything"}, "view"),
        ("/ops/outbox", {"limit": "201"}, "limit"),
        ("/ops/actions", {"limit": "many"}, "limit"),
        ("/ops/items", {"phone": "0712000002"}, "phone"),
    ],
)
async def test_bad_filters_are_field_level_problems(
    client: httpx.AsyncClient, op_key: str, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, params=params, headers=api.auth(op_key))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_items_found_by_phone_in_any_form_by_references_and_paged(
    client: httpx.AsyncClient, pool: asyncpg.Pool, op_key: str
) -> None:
    world = await _world(pool)
    for q in ("0712000002", "254712000002", "+254 712 000 002", "712000002"):
        found = await _get(client, op_key, "/ops/items", q=q)
        ops_schemas.OpsItemPageOut.model_validate(found)
        assert [i["id"] for i in found["items"]] == [world["review_item"]], q
    item = found["items"][0]
    assert (item["status"], item["tracking_id"], item["request_reference_id"]) == (
        "NEEDS_REVIEW",
        "TRK-ACME-1",
        "rr-1",
    )
    assert (item["employer_name"], item["failure_reason"], item["outbox_status"], item["attempts"]) == (
        "Acme", "TF105", "done", 3,
    )  # fmt: skip
    assert item["amount"] == "2500.00" and item["next_attempt_at"]
    by_tracking = await _get(client, op_key, "/ops/items", q="TRK-ACME-1")
    assert {i["id"] for i in by_tracking["items"]} == {world["review_item"], world["paid_item"]}
    assert [i["id"] for i in (await _get(client, op_key, "/ops/items", q="rr-1"))["items"]] == [
        world["review_item"]
    ]
    review = await _get(client, op_key, "/ops/items", status="NEEDS_REVIEW")
    assert [i["id"] for i in review["items"]] == [world["review_item"]]
    assert (await _get(client, op_key, "/ops/items", status="NEEDS_REVIEW", employer_id=str(world["beta"])))[
        "items"
    ] == []

    everything = await _get(client, op_key, "/ops/items")
    assert len(everything["items"]) == 4 and everything["next_cursor"] is None
    ids = [i["id"] for i in everything["items"]]
    assert ids == sorted(ids, reverse=True)
    first = await _get(client, op_key, "/ops/items", limit=3)
    rest = await _get(client, op_key, "/ops/items", limit=3, cursor=first["next_cursor"])
    assert [i["id"] for i in first["items"] + rest["items"]] == ids and rest["next_cursor"] is None


async def test_stuck_and_dead_rows_with_their_last_error(
    client: httpx.AsyncClient, pool: asyncpg.Pool, op_key: str
) -> None:
    world = await _world(pool)
    stuck = await _get(client, op_key, "/ops/outbox")
    ops_schemas.OpsOutboxPageOut.model_validate(stuck)
    [row] = stuck["items"]
    assert (row["payroll_id"], row["status"], row["stuck"], row["locked_by"]) == (
        str(world["stuck"]), "in_progress", True, "dispatcher-7",
    )  # fmt: skip
    assert row["last_error"].startswith("ProviderTimeout") and (row["attempts"], row["errors"]) == (2, 1)
    [dead] = (await _get(client, op_key, "/ops/outbox", view="dead"))["items"]
    assert (dead["payroll_id"], dead["tracking_id"], dead["employer_name"]) == (
        str(world["dead"]),
        "TRK-BETA-DEAD",
        "Beta",
    )
    assert dead["last_error"] == "ProviderError: HTTP 500 from /status" and dead["stuck"] is False
    # A pending row is stuck only once it has been due for a while.
    await pool.execute(
        "UPDATE outbox SET status = 'pending', locked_by = NULL, locked_until = NULL, lease_token = NULL WHERE payroll_id = $1",
        world["stuck"],
    )
    assert (await _get(client, op_key, "/ops/outbox"))["items"] == []
    await pool.execute(
        "UPDATE outbox SET available_at = now() - interval '6 minutes' WHERE payroll_id = $1", world["stuck"]
    )
    [late] = (await _get(client, op_key, "/ops/outbox"))["items"]
    assert (late["status"], late["stuck"]) == ("pending", True)
    assert len((await _get(client, op_key, "/ops/outbox", view="all"))["items"]) == 2
    assert (await _get(client, op_key, "/ops/outbox", view="dead", employer_id=str(world["acme"])))[
        "items"
    ] == []


async def test_an_operator_retries_for_the_payrolls_employer_and_the_action_log_shows_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool, op_key: str
) -> None:
    acme_key = (await api.employer(pool, "Acme Ltd"))["api_key"]
    created = await api.create_payroll(client, acme_key)
    payroll_id = uuid.UUID(created["id"])
    await pool.execute(
        "UPDATE payroll_items SET status = 'FAILED', failure_reason = 'TS100' WHERE payroll_id = $1",
        payroll_id,
    )
    await pool.execute("UPDATE payrolls SET status = 'FAILED', finished_at = now() WHERE id = $1", payroll_id)

    assert (
        await client.post(f"/ops/payrolls/{uuid.uuid4()}/retry", headers=api.auth(op_key))
    ).status_code == 404
    response = await client.post(f"/ops/payrolls/{payroll_id}/retry", headers=api.auth(op_key))
    assert response.status_code == 201, response.text
    retry = response.json()
    schemas.PayrollDetailOut.model_validate(retry)
    assert (retry["status"], retry["retry_of"], retry["reference"]) == (
        "DRAFT",
        str(payroll_id),
        "ACME-2026-11-retry-1",
    )
    # The employer's, like the payroll it retries: the employer sees it with its own key and runs it.
    mine = await client.get(f"/payrolls/{retry['id']}", headers=api.auth(acme_key))
    assert mine.status_code == 200 and len(mine.json()["items"]) == 2
    again = await client.post(f"/ops/payrolls/{payroll_id}/retry", headers=api.auth(op_key))
    assert again.status_code == 409 and again.json()["retry_id"] == retry["id"]

    world = await _world(pool)
    resolve = {
        "items": [{"item_id": world["review_item"], "status": "PAID", "provider_reference": "QK1"}],
        "note": "ticket 7",
    }
    assert (
        await client.post("/ops/items/resolve", json=resolve, headers=api.auth(op_key))
    ).status_code == 200
    log = await _get(client, op_key, "/ops/actions")
    ops_schemas.OpsActionsOut.model_validate(log)
    kinds = [(a["kind"], a["payroll_id"]) for a in log["items"]]
    assert kinds == [("resolution", str(world["reviewed"])), ("retry", str(payroll_id))]
    resolution, retried = log["items"]
    assert (resolution["operator_name"], resolution["status"], resolution["provider_reference"], resolution["note"]) == (
        "console.operator", "PAID", "QK1", "ticket 7",
    )  # fmt: skip
    assert (retried["retry_id"], retried["retry_reference"], retried["employer_name"]) == (
        retry["id"], "ACME-2026-11-retry-1", "Acme Ltd",
    )  # fmt: skip
    assert len((await _get(client, op_key, "/ops/actions", limit=1))["items"]) == 1


async def test_the_payroll_list_answers_304_while_nothing_changed(
    client: httpx.AsyncClient, pool: asyncpg.Pool, key: str
) -> None:
    await api.create_payroll(client, key)
    first = await client.get("/payrolls", headers=api.auth(key))
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    same = await client.get("/payrolls", headers={**api.auth(key), "If-None-Match": etag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)
    # The payroll changes state (as when a dispatcher finishes it): the list is new.
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING', updated_at = now()")
    changed = await client.get("/payrolls", headers={**api.auth(key), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["items"][0]["status"] == "PROCESSING"
