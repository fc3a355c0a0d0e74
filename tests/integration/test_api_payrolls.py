"""Creating and reading payrolls: POST /payrolls, GET /payrolls/{id}, GET /payrolls (list, cursor, filter)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import asyncpg
import httpx
import pytest

from api_service import schemas
from shared import sqlfiles
from tests.integration import api_support as api


async def test_create_answers_201_with_location_and_the_draft_payroll(
    client: httpx.AsyncClient, key: str
) -> None:
    body = {
        "reference": "ACME-2026-11",
        "currency": "KES",
        "items": [
            {"name": "Jane Doe", "account": "0712 345-678", "amount": "15000.00", "narrative": "Salary Nov"},
            {
                "name": "John Mwangi",
                "account": "1234567890",
                "amount": 42000,
                "provider": "PESALINK",
                "bank_code": "2",
            },
            {"name": "Wallet", "account": "254798765432", "amount": 10.5, "provider": "INTASEND"},
        ],
    }
    r = await client.post("/payrolls", json=body, headers=api.auth(key))
    assert r.status_code == 201, r.text
    created = r.json()
    assert r.headers["location"] == f"/payrolls/{created['id']}"
    assert r.headers["content-type"] == "application/json"
    schemas.PayrollDetailOut.model_validate(created)
    assert created["status"] == "DRAFT"
    assert created["item_count"] == 3
    assert created["total_amount"] == "57010.50"
    assert created["paid_amount"] == "0.00"
    assert [i["account"] for i in created["items"]] == ["254712345678", "1234567890", "254798765432"]
    assert [i["amount"] for i in created["items"]] == ["15000.00", "42000.00", "10.50"]
    assert [i["provider"] for i in created["items"]] == ["MPESA-B2C", "PESALINK", "INTASEND"]
    assert all(i["status"] == "PENDING" and isinstance(i["id"], str) for i in created["items"])

    got = await client.get(f"/payrolls/{created['id']}", headers=api.auth(key))
    assert got.status_code == 200
    assert got.json() == created


async def test_items_are_stored_normalised_in_order(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    forms = ["0712345678", "+254712345679", "254712345680", "0112 345-678", "0712-345-681"]
    body = api.payroll_body(items=0)
    body["items"] = [api.item(n, account=account) for n, account in enumerate(forms)]
    created = await api.create_payroll(client, key, body)
    rows = await pool.fetch(
        "SELECT position, account, amount, provider, bank_code, narrative FROM payroll_items"
        " WHERE payroll_id = $1 ORDER BY position",
        uuid.UUID(created["id"]),
    )
    assert [r["account"] for r in rows] == [
        "254712345678",
        "254712345679",
        "254712345680",
        "254112345678",
        "254712345681",
    ]
    assert [r["position"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["amount"] == Decimal("1500.00") and r["provider"] == "MPESA-B2C" for r in rows)
    payroll = await pool.fetchrow("SELECT item_count, total_amount FROM payrolls")
    assert (payroll["item_count"], payroll["total_amount"]) == (5, Decimal("7500.00"))


async def test_a_duplicate_reference_is_409_naming_the_existing_payroll(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await api.create_payroll(client, key)
    r = await client.post("/payrolls", json=api.payroll_body(items=3), headers=api.auth(key))
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 409
    assert problem["payroll_id"] == first["id"]
    assert first["id"] in problem["detail"]
    assert await api.count(pool, "payrolls") == 1
    assert await api.count(pool, "payroll_items") == 2


async def test_two_concurrent_creates_with_one_reference_make_one_payroll(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    results = await asyncio.gather(
        *(client.post("/payrolls", json=api.payroll_body(), headers=api.auth(key)) for _ in range(5))
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 409, 409, 409, 409]
    created = next(r.json() for r in results if r.status_code == 201)
    assert {r.json()["payroll_id"] for r in results if r.status_code == 409} == {created["id"]}
    assert await api.count(pool, "payrolls") == 1


async def test_another_employer_may_use_the_same_reference(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    other = (await api.employer(pool, "Other"))["api_key"]
    await api.create_payroll(client, key)
    await api.create_payroll(client, other)
    assert await api.count(pool, "payrolls") == 2


async def test_a_payroll_of_10000_items_is_accepted_quickly(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    body = api.payroll_body(items=10_000)
    started = time.perf_counter()
    r = await client.post("/payrolls", json=body, headers=api.auth(key))
    elapsed = time.perf_counter() - started
    assert r.status_code == 201, r.text[:500]
    assert r.json()["item_count"] == 10_000
    assert r.json()["total_amount"] == "15000000.00"
    assert await api.count(pool, "payroll_items") == 10_000
    assert elapsed < 3.0, f"10,000 items took {elapsed:.2f}s"
    got = await client.get(f"/payrolls/{r.json()['id']}", headers=api.auth(key))
    assert [i["name"] for i in got.json()["items"][:3]] == ["Payee 0", "Payee 1", "Payee 2"]
    assert len(got.json()["items"]) == 10_000


async def test_get_of_an_unknown_or_malformed_id_is_404(client: httpx.AsyncClient, key: str) -> None:
    for path in (
        f"/payrolls/{uuid.uuid4()}",
        "/payrolls/not-a-uuid",
        "/payrolls/%00",
        f"/payrolls/{uuid.uuid4()}/status",
    ):
        r = await client.get(path, headers=api.auth(key))
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 404


async def test_paid_amount_sums_the_paid_items(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=3))
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING'")
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE position < 2")
    got = (await client.get(f"/payrolls/{created['id']}", headers=api.auth(key))).json()
    assert got["paid_amount"] == "3000.00"
    listed = (await client.get("/payrolls", headers=api.auth(key))).json()
    assert listed["items"][0]["paid_amount"] == "3000.00"


async def test_paid_amount_follows_every_write_to_the_items(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    """The dispatcher's set-based writes, an operator's one-item resolution, a correction and an item added
    by hand all move the kept paid_amount exactly as a fresh sum would."""
    first = await api.create_payroll(client, key, api.payroll_body(items=4, reference="A"))
    second = await api.create_payroll(client, key, api.payroll_body(items=3, reference="B"))
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING'")
    writes = [
        "UPDATE payroll_items SET status = 'SUBMITTED'",
        "UPDATE payroll_items SET status = 'PAID' WHERE position < 2",
        "UPDATE payroll_items SET status = 'NEEDS_REVIEW' WHERE position = 2",
        "UPDATE payroll_items SET status = 'PAID' WHERE position = 2 AND status = 'NEEDS_REVIEW'",
        "UPDATE payroll_items SET amount = amount + 10 WHERE position = 0",
        "UPDATE payroll_items SET status = 'FAILED' WHERE position = 1",
        f"""INSERT INTO payroll_items (payroll_id, position, name, account, amount, provider, status)
            VALUES ('{second["id"]}', 9, 'Late', '254700000009', 25, 'MPESA-B2C', 'PAID')""",
    ]
    for write in writes:
        await pool.execute(write)
        kept = await pool.fetch("SELECT id, paid_amount FROM payrolls ORDER BY id")
        summed = await pool.fetch(
            """SELECT p.id, coalesce(sum(i.amount) FILTER (WHERE i.status = 'PAID'), 0) AS paid_amount
               FROM payrolls p JOIN payroll_items i ON i.payroll_id = p.id GROUP BY p.id ORDER BY p.id"""
        )
        assert [tuple(r) for r in kept] == [tuple(r) for r in summed], write
    listed = {
        p["id"]: p["paid_amount"]
        for p in (await client.get("/payrolls", headers=api.auth(key))).json()["items"]
    }
    assert listed == {first["id"]: "3010.00", second["id"]: "3035.00"}
    got = (await client.get(f"/payrolls/{second['id']}", headers=api.auth(key))).json()
    assert got["paid_amount"] == "3035.00"


async def test_the_list_reads_no_item_rows(key: str, pool: asyncpg.Pool) -> None:
    employer_id = await pool.fetchval("SELECT id FROM employers")
    query = sqlfiles.load("payrolls")["list_payrolls"]
    plan = await pool.fetchval("EXPLAIN (FORMAT JSON) " + query, employer_id, None, None, None, 201)
    assert "payroll_items" not in json.dumps(plan, default=str)  # costs are Decimals (jsonvalues)


async def test_list_pages_newest_first_with_a_cursor(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    ids = [
        (await api.create_payroll(client, key, api.payroll_body(reference=f"R-{n}")))["id"] for n in range(7)
    ]
    other = (await api.employer(pool, "Other"))["api_key"]
    await api.create_payroll(client, other, api.payroll_body(reference="THEIRS"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/payrolls", params=params, headers=api.auth(key))
        assert r.status_code == 200, r.text
        page = r.json()
        schemas.PayrollPageOut.model_validate(page)
        assert all("items" not in p for p in page["items"])
        seen += [p["id"] for p in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3


async def test_list_filters_by_status_and_defaults_to_50(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await api.create_payroll(client, key, api.payroll_body(reference="A"))
    await api.create_payroll(client, key, api.payroll_body(reference="B"))
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING' WHERE id = $1", uuid.UUID(first["id"]))
    r = await client.get("/payrolls", params={"status": "PROCESSING"}, headers=api.auth(key))
    assert [p["id"] for p in r.json()["items"]] == [first["id"]]
    assert r.json()["next_cursor"] is None
    r = await client.get("/payrolls", params={"status": "COMPLETED"}, headers=api.auth(key))
    assert r.json() == {"items": [], "next_cursor": None}
    r = await client.get("/payrolls", headers=api.auth(key))
    assert len(r.json()["items"]) == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"status": ""}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),
        ({"cursor": "eyJhIjoxfQ"}, "cursor"),
        ({"cursor": "x" * 600}, "cursor"),
    ],
)
async def test_list_rejects_bad_query_params_naming_them(
    client: httpx.AsyncClient, key: str, params: dict[str, str], field: str
) -> None:
    r = await client.get("/payrolls", params=params, headers=api.auth(key))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == [field]
