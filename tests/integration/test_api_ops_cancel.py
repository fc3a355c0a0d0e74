"""POST /ops/payrolls/{id}/cancel: an operator cancels on behalf of the payroll's employer, through the
employer route's own cancel (shared/cancellation.py), and who asked is recorded (payroll_cancel_requests,
migration 0019) and shown in GET /ops/actions; GET /ops/payrolls shows a payroll waiting for funds."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from api_service import ops_schemas, schemas
from shared import batches, cancellation, operators
from tests.integration import api_support as api


@pytest.fixture
async def op_key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        return (await operators.create(conn, "night.operator"))["api_key"]


async def _processing(client: httpx.AsyncClient, key: str, items: int = 3, reference: str = "NOV") -> str:
    created = await api.create_payroll(client, key, api.payroll_body(items=items, reference=reference))
    response = await client.post(f"/payrolls/{created['id']}/process", headers=api.auth(key))
    assert response.status_code == 202, response.text
    payroll_id: str = created["id"]
    return payroll_id


async def _actions(client: httpx.AsyncClient, op_key: str) -> list[dict[str, object]]:
    response = await client.get("/ops/actions", headers=api.auth(op_key))
    assert response.status_code == 200, response.text
    ops_schemas.OpsActionsOut.model_validate(response.json())
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def test_an_operator_cancels_for_the_employer_and_the_action_log_names_the_operator(
    client: httpx.AsyncClient, key: str, op_key: str, pool: asyncpg.Pool
) -> None:
    by_operator = await _processing(client, key, reference="BY-OP")
    by_employer = await _processing(client, key, reference="BY-EMP")

    response = await client.post(
        f"/ops/payrolls/{by_operator}/cancel",
        json={"note": "employer phoned, ticket 42"},
        headers=api.auth(op_key),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    schemas.CancelOut.model_validate(body)
    assert (body["status"], body["cancelled_now"], body["cancelled"], body["not_cancellable"]) == (
        "CANCELLED", 3, 3, 0,
    )  # fmt: skip
    assert response.headers["Location"] == body["status_url"] == f"/payrolls/{by_operator}/status"
    # The employer sees it cancelled, with its own key, and why.
    detail = (await client.get(f"/payrolls/{by_operator}", headers=api.auth(key))).json()
    assert detail["status"] == "CANCELLED"
    assert {i["failure_reason"] for i in detail["items"]} == {cancellation.OPERATOR_REASON}

    again = await client.post(f"/ops/payrolls/{by_operator}/cancel", headers=api.auth(op_key))
    assert again.status_code == 200 and again.json() == {**body, "cancelled_now": 0}, "naturally idempotent"
    assert (await client.post(f"/payrolls/{by_employer}/cancel", headers=api.auth(key))).status_code == 200

    requests = await pool.fetch(
        """SELECT c.payroll_id, o.name, c.cancelled_now, c.not_cancellable, c.note
           FROM payroll_cancel_requests c LEFT JOIN operators o ON o.id = c.operator_id ORDER BY c.id"""
    )
    assert [tuple(r) for r in requests] == [
        (uuid.UUID(by_operator), "night.operator", 3, 0, "employer phoned, ticket 42"),
        (uuid.UUID(by_operator), "night.operator", 0, 0, None),
        (uuid.UUID(by_employer), None, 3, 0, None),
    ]
    log = await _actions(client, op_key)
    cancels = [(a["payroll_reference"], a["operator_name"], a["cancelled_now"], a["note"]) for a in log]
    assert cancels == [
        ("BY-EMP", None, 3, None),
        ("BY-OP", "night.operator", 0, None),
        ("BY-OP", "night.operator", 3, "employer phoned, ticket 42"),
    ]
    assert {(a["kind"], a["status"], a["employer_name"]) for a in log} == {
        ("cancel", "CANCELLED", "Acme Ltd")
    }

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("UPDATE payroll_cancel_requests SET note = 'rewritten'")


async def test_refusals_are_the_employer_routes_and_record_nothing(
    client: httpx.AsyncClient, key: str, op_key: str, pool: asyncpg.Pool
) -> None:
    draft = await api.create_payroll(client, key, api.payroll_body(reference="DRAFT"))
    response = await client.post(f"/ops/payrolls/{draft['id']}/cancel", headers=api.auth(op_key))
    assert response.status_code == 409 and response.json()["type"].endswith("payroll-not-processing")

    finished = await _processing(client, key, reference="DONE")
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE payroll_id = $1", uuid.UUID(finished))
    await pool.execute("UPDATE outbox SET status = 'done', processed_at = now()")
    await pool.execute("UPDATE payrolls SET status = 'COMPLETED' WHERE id = $1", uuid.UUID(finished))
    response = await client.post(f"/ops/payrolls/{finished}/cancel", headers=api.auth(op_key))
    assert response.status_code == 409 and response.json()["type"].endswith("payroll-final")

    for path in (f"/ops/payrolls/{uuid.uuid4()}/cancel", "/ops/payrolls/nope/cancel"):
        assert (await client.post(path, headers=api.auth(op_key))).status_code == 404, path

    live = await _processing(client, key, reference="LIVE")
    path = f"/ops/payrolls/{live}/cancel"
    for headers in ({}, api.auth(key)):  # an employer's key opens no /ops/ route
        response = await client.post(path, headers=headers)
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    for bad, field in (
        ({"note": ""}, "note"),
        ({"note": 7}, "note"),
        ({"note": "x" * 2001}, "note"),
        ({"reason": "typo"}, "reason"),
    ):
        response = await client.post(path, json=bad, headers=api.auth(op_key))
        assert response.status_code == 422, (bad, response.text)
        assert [e["field"] for e in response.json()["errors"]] == [field], bad
    response = await client.post(
        path, content=b"{nope", headers={**api.auth(op_key), "Content-Type": "application/json"}
    )
    assert response.status_code == 400

    assert await pool.fetchval("SELECT count(*) FROM payroll_cancel_requests") == 0
    states = await pool.fetch(
        "SELECT DISTINCT status FROM payroll_items WHERE payroll_id = $1", uuid.UUID(live)
    )
    assert [r["status"] for r in states] == ["PENDING"]


async def test_an_operator_and_the_employer_cancelling_at_once_cancel_each_item_once(
    client: httpx.AsyncClient, key: str, op_key: str, pool: asyncpg.Pool
) -> None:
    payroll_id = await _processing(client, key, items=4)
    by_op, by_emp = await asyncio.gather(
        client.post(f"/ops/payrolls/{payroll_id}/cancel", headers=api.auth(op_key)),
        client.post(f"/payrolls/{payroll_id}/cancel", headers=api.auth(key)),
    )
    assert by_op.status_code == by_emp.status_code == 200
    assert sorted([by_op.json()["cancelled_now"], by_emp.json()["cancelled_now"]]) == [0, 4]
    recorded = await pool.fetch("SELECT cancelled_now FROM payroll_cancel_requests ORDER BY cancelled_now")
    assert [r["cancelled_now"] for r in recorded] == [0, 4]


async def test_the_console_lists_a_payroll_waiting_for_funds_with_its_status_detail(
    client: httpx.AsyncClient, key: str, op_key: str, pool: asyncpg.Pool
) -> None:
    waiting = await _processing(client, key, reference="SHORT")  # 3 x 1,500.00
    await _processing(client, key, reference="FUNDED")
    lead = await pool.fetchval("SELECT min(id) FROM outbox WHERE payroll_id = $1", uuid.UUID(waiting))
    await pool.execute(
        """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, nonce, stage, initiate_response,
               funds_required, funds_available, funds_wallet_id, funds_checked_at, funds_short_checks)
           VALUES ($1, $2, 'T-1', 'n', 'initiated', '{}', 4530.00, 4000.00, 'WLT1', now(), 1)""",
        lead,
        uuid.UUID(waiting),
    )
    page = (await client.get("/ops/payrolls", headers=api.auth(op_key))).json()
    ops_schemas.OpsPayrollPageOut.model_validate(page)
    details = {p["reference"]: p["status_detail"] for p in page["items"]}
    assert details["FUNDED"] is None
    assert details["SHORT"]["short_by"] == "530.00" and details["SHORT"]["wallet_id"] == "WLT1"
    employer_view = (await client.get(f"/payrolls/{waiting}/status", headers=api.auth(key))).json()
    assert details["SHORT"] == employer_view["status_detail"]

    response = await client.post(f"/ops/payrolls/{waiting}/cancel", headers=api.auth(op_key))
    assert response.json()["status"] == "CANCELLED"
    assert await pool.fetchval("SELECT stage FROM provider_batches") == batches.Stage.ABANDONED
    page = (await client.get("/ops/payrolls", headers=api.auth(op_key))).json()
    assert {p["reference"]: p["status_detail"] for p in page["items"]} == {"SHORT": None, "FUNDED": None}
