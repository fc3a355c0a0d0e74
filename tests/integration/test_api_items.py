"""A payroll's items, paged (GET /payrolls/{id}/items) and exported as CSV (GET /payrolls/{id}/items.csv)."""

from __future__ import annotations

import asyncio
import csv
import io
import urllib.parse
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import export, render, schemas
from api_service.app import create_app
from shared import sqlfiles
from tests.integration import api_support as api


async def _processing_with_a_batch(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, body: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """A payroll processed through the API, its items carried by one IntaSend batch: (payroll, tracking_id)."""
    created = await api.create_payroll(client, key, body)
    r = await client.post(f"/payrolls/{created['id']}/process", headers=api.auth(key))
    assert r.status_code == 202, r.text
    payroll_id = uuid.UUID(created["id"])
    outbox_id = await pool.fetchval("SELECT min(id) FROM outbox WHERE payroll_id = $1", payroll_id)
    tracking_id = "7f0c1c9e-0000-4000-8000-000000000001"
    batch_id = await pool.fetchval(
        """INSERT INTO provider_batches (outbox_id, payroll_id, tracking_id, nonce, stage, initiate_response)
           VALUES ($1, $2, $3, 'n', 'approved', '{}') RETURNING id""",
        outbox_id,
        payroll_id,
        tracking_id,
    )
    await pool.execute(
        """UPDATE payroll_items SET provider_batch_id = $1, status = 'SUBMITTED',
                  request_reference_id = 'req-' || position
           WHERE payroll_id = $2""",
        batch_id,
        payroll_id,
    )
    return created, tracking_id


async def _all_pages(
    client: httpx.AsyncClient, key: str, payroll_id: str, **params: str
) -> tuple[list[dict[str, Any]], int]:
    """Every item of every page, following next_cursor; and how many pages it took."""
    found: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"/payrolls/{payroll_id}/items", params=query, headers=api.auth(key))
        assert r.status_code == 200, r.text
        page = r.json()
        schemas.ItemPageOut.model_validate(page)
        found += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return found, pages


async def test_paging_gives_every_item_once_in_position_order(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=2_500))
    other = await api.create_payroll(client, key, api.payroll_body(items=3, reference="OTHER"))
    items, pages = await _all_pages(client, key, created["id"], limit="200")
    assert pages == 13  # 12 full pages and 100 items
    assert [i["position"] for i in items] == list(range(2_500))
    assert [i["name"] for i in items] == [f"Payee {n}" for n in range(2_500)]
    assert len({i["id"] for i in items}) == 2_500
    ids = {
        str(r["id"])
        for r in await pool.fetch(
            "SELECT id FROM payroll_items WHERE payroll_id = $1", uuid.UUID(created["id"])
        )
    }
    assert {i["id"] for i in items} == ids
    first = items[0]
    assert first["amount"] == "1500.00" and first["account"] == "254712000000"
    assert first["provider"] == "MPESA-B2C" and first["status"] == "PENDING"
    assert first["request_reference_id"] is None and first["tracking_id"] is None
    assert first["failure_reason"] is None and first["provider_reference"] is None
    # The default page size is 50, and the last page of an exact multiple says so at once.
    items, pages = await _all_pages(client, key, other["id"])
    assert (len(items), pages) == (3, 1)
    r = await client.get(f"/payrolls/{created['id']}/items", headers=api.auth(key))
    assert len(r.json()["items"]) == 50
    r = await client.get(f"/payrolls/{other['id']}/items", params={"limit": "3"}, headers=api.auth(key))
    assert r.json()["next_cursor"] is None


async def test_items_carry_intasend_references(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    created, tracking_id = await _processing_with_a_batch(client, key, pool, api.payroll_body(items=3))
    await pool.execute(
        """UPDATE payroll_items SET status = 'PAID', provider_reference = 'QK1234' WHERE position = 1"""
    )
    items, _ = await _all_pages(client, key, created["id"])
    assert [i["tracking_id"] for i in items] == [tracking_id] * 3
    assert [i["request_reference_id"] for i in items] == ["req-0", "req-1", "req-2"]
    assert [i["status"] for i in items] == ["SUBMITTED", "PAID", "SUBMITTED"]
    assert items[1]["provider_reference"] == "QK1234"
    updated = await pool.fetchval("SELECT updated_at FROM payroll_items WHERE position = 1")
    assert items[1]["updated_at"] == updated.isoformat()


async def test_the_status_filter(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=10))
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING'")
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE position % 3 = 0")
    await pool.execute(
        "UPDATE payroll_items SET status = 'FAILED', failure_reason = 'TF103' WHERE position = 4"
    )
    paid, pages = await _all_pages(client, key, created["id"], status="PAID", limit="2")
    assert [i["position"] for i in paid] == [0, 3, 6, 9]
    assert pages == 2
    assert all(i["status"] == "PAID" for i in paid)
    failed, _ = await _all_pages(client, key, created["id"], status="FAILED")
    assert [(i["position"], i["failure_reason"]) for i in failed] == [(4, "TF103")]
    r = await client.get(
        f"/payrolls/{created['id']}/items", params={"status": "CANCELLED"}, headers=api.auth(key)
    )
    assert r.status_code == 200
    assert r.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"status": ""}, "status"),
        ({"status": "COMPLETED"}, "status"),  # a payroll status, not an item's
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),  # []
        ({"cursor": "WzEsMl0"}, "cursor"),  # [1,2]
        ({"cursor": "Wy0xXQ"}, "cursor"),  # [-1]
        ({"cursor": "W3RydWVd"}, "cursor"),  # [true]
        ({"cursor": "WyIxIl0"}, "cursor"),  # ["1"]
        ({"cursor": "WzEuNV0"}, "cursor"),  # [1.5]
        ({"cursor": "eyJhIjoxfQ"}, "cursor"),
        ({"cursor": "x" * 600}, "cursor"),
    ],
)
async def test_bad_query_params_are_422_naming_them(
    client: httpx.AsyncClient, key: str, params: dict[str, str], field: str
) -> None:
    created = await api.create_payroll(client, key)
    r = await client.get(f"/payrolls/{created['id']}/items", params=params, headers=api.auth(key))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_a_cursor_of_the_payroll_list_is_not_an_item_cursor(
    client: httpx.AsyncClient, key: str
) -> None:
    for n in range(3):
        await api.create_payroll(client, key, api.payroll_body(reference=f"R-{n}"))
    listed = (await client.get("/payrolls", params={"limit": "1"}, headers=api.auth(key))).json()
    payroll_id = listed["items"][0]["id"]
    r = await client.get(
        f"/payrolls/{payroll_id}/items", params={"cursor": listed["next_cursor"]}, headers=api.auth(key)
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["cursor"]
    item_cursor = render.encode_item_cursor(0)
    r = await client.get("/payrolls", params={"cursor": item_cursor}, headers=api.auth(key))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["cursor"]


async def test_another_employers_payroll_is_404(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    other = (await api.employer(pool, "Other"))["api_key"]
    theirs = await api.create_payroll(client, other)
    for path in (
        f"/payrolls/{theirs['id']}/items",
        f"/payrolls/{theirs['id']}/items.csv",
        f"/payrolls/{uuid.uuid4()}/items",
        f"/payrolls/{uuid.uuid4()}/items.csv",
        "/payrolls/not-a-uuid/items",
        "/payrolls/not-a-uuid/items.csv",
    ):
        r = await client.get(path, headers=api.auth(key))
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:payrun:problem:payroll-not-found"
    r = await client.get(f"/payrolls/{theirs['id']}/items", headers=api.auth(other))
    assert r.status_code == 200
    for path in (f"/payrolls/{theirs['id']}/items", f"/payrolls/{theirs['id']}/items.csv"):
        r = await client.get(path)
        assert r.status_code == 401


async def test_a_page_answers_304_while_it_is_unchanged(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=3))
    path = f"/payrolls/{created['id']}/items"
    first = await client.get(path, headers=api.auth(key))
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = await client.get(path, headers={**api.auth(key), "If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["etag"] == etag and again.content == b""
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE position = 2")
    changed = await client.get(path, headers={**api.auth(key), "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["items"][2]["status"] == "PAID"


async def test_one_indexed_query_per_page(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=2_500))
    for n in range(4):
        await api.create_payroll(client, key, api.payroll_body(items=2_500, reference=f"MORE-{n}"))
    await pool.execute("ANALYZE payroll_items")
    employer_id = await pool.fetchval("SELECT id FROM employers")
    query = sqlfiles.load("payrolls")["items_page"]
    for status, after in ((None, -1), (None, 1_200), ("PAID", -1)):
        [plan] = await pool.fetchval(
            "EXPLAIN (FORMAT JSON) " + query, uuid.UUID(created["id"]), employer_id, status, after, 201
        )
        nodes = list(_plan_nodes(plan["Plan"]))
        item_scans = [n for n in nodes if n.get("Relation Name") == "payroll_items" or "Index Name" in n]
        assert "payroll_items_payroll_position_key" in {n.get("Index Name") for n in item_scans}, plan
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] in TABLES], plan


TABLES = {"payrolls", "payroll_items"}


def _plan_nodes(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _plan_nodes(child)


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


async def test_the_csv_export(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    reference = 'Nov "2026"; Kisumu/Ümoja'
    body = api.payroll_body(items=0, reference=reference)
    body["items"] = [
        api.item(0, name='Doe, Jane "JJ"'),
        api.item(1, name='=HYPERLINK("http://evil.example","pay")'),
        api.item(2, name="+254 formula"),
        api.item(3, name="-1+2"),
        api.item(4, name="@SUM(A1:A9)"),
        {"name": "Wallet", "account": "WAL-1", "amount": "0.10", "provider": "INTASEND"},
        {"name": "Bank", "account": "1234567890", "amount": 42000, "provider": "PESALINK", "bank_code": "2"},
        api.item(7, name="Ordinary – naïve"),
        api.item(8, name="Tab"),
    ]
    created, tracking_id = await _processing_with_a_batch(client, key, pool, body)
    # Names with control characters are refused by the API; an operator's SQL or the provider can write them.
    await pool.execute("UPDATE payroll_items SET name = E'\\tTabbed' WHERE position = 8")
    await pool.execute("UPDATE payroll_items SET provider_reference = E'\\rCR' WHERE position = 6")
    await pool.execute(
        "UPDATE payroll_items SET status = 'PAID', provider_reference = 'QK1234' WHERE position IN (0, 5)"
    )
    await pool.execute(
        "UPDATE payroll_items SET status = 'FAILED', failure_reason = '-insufficient, \"funds\"' WHERE position = 1"
    )
    paid_at = {
        r["position"]: r["updated_at"].isoformat()
        for r in await pool.fetch("SELECT position, updated_at FROM payroll_items WHERE status = 'PAID'")
    }

    r = await client.get(f"/payrolls/{created['id']}/items.csv", headers=api.auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["cache-control"] == "no-store"
    disposition = r.headers["content-disposition"]
    assert disposition.isascii()
    assert disposition.startswith('attachment; filename="payroll-Nov__2026___Kisumu__moja.csv"; ')
    exact = disposition.split("filename*=UTF-8''", 1)[1]
    assert ";" not in exact and '"' not in exact and " " not in exact
    assert urllib.parse.unquote(exact) == f"payroll-{reference}.csv"

    text = r.content.decode("utf-8")
    assert text.endswith("\r\n")
    rows = _csv(text)
    assert rows[0] == [
        "position", "name", "account", "amount", "provider", "state", "provider_reference",
        "failure_reason", "paid_at", "tracking_id",
    ]  # fmt: skip
    assert len(rows) == 10
    by_position = {int(row[0]): row for row in rows[1:]}
    assert list(by_position) == list(range(9))
    assert by_position[0] == [
        "0", 'Doe, Jane "JJ"', "254712000000", "1500.00", "MPESA-B2C", "PAID", "QK1234", "", paid_at[0],
        tracking_id,
    ]  # fmt: skip
    assert '"Doe, Jane ""JJ"""' in text  # the csv module's quoting, not ours
    assert [by_position[n][1] for n in (1, 2, 3, 4, 8)] == [
        '\'=HYPERLINK("http://evil.example","pay")',
        "'+254 formula",
        "'-1+2",
        "'@SUM(A1:A9)",
        "'\tTabbed",
    ]
    assert by_position[1][5:9] == ["FAILED", "", '\'-insufficient, "funds"', ""]
    assert by_position[5][2:6] == ["WAL-1", "0.10", "INTASEND", "PAID"]
    assert by_position[5][8] == paid_at[5]
    assert by_position[6][2:7] == ["1234567890", "42000.00", "PESALINK", "SUBMITTED", "'\rCR"]
    assert by_position[7][1] == "Ordinary – naïve"
    assert all(row[9] == tracking_id for row in rows[1:])


async def test_the_csv_of_a_draft_payroll_and_head(client: httpx.AsyncClient, key: str) -> None:
    created = await api.create_payroll(client, key, api.payroll_body(items=2, reference="ACME-11"))
    r = await client.get(f"/payrolls/{created['id']}/items.csv", headers=api.auth(key))
    rows = _csv(r.text)
    assert [row[0] for row in rows] == ["position", "0", "1"]
    assert [row[5] for row in rows[1:]] == ["PENDING", "PENDING"]
    assert [row[8] + row[9] for row in rows[1:]] == ["", ""]
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"payroll-ACME-11.csv\"; filename*=UTF-8''payroll-ACME-11.csv"
    )
    head = await client.head(f"/payrolls/{created['id']}/items.csv", headers=api.auth(key))
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-disposition"] == r.headers["content-disposition"]
    assert "content-length" not in head.headers


async def test_a_10000_item_csv_streams_a_page_at_a_time_and_arrives_complete(
    database_url: str, pool: asyncpg.Pool, key: str
) -> None:
    """Driven over ASGI directly, to see the chunks as the server sends them (httpx's ASGI transport
    gathers the body before it hands it over)."""
    async with api.running(create_app(api.settings(database_url), pool=pool)) as app:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            created = await api.create_payroll(client, key, api.payroll_body(items=10_000, reference="BIG"))
        sent: list[dict[str, Any]] = []
        done = asyncio.Event()

        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/payrolls/{created['id']}/items.csv",
            "raw_path": f"/payrolls/{created['id']}/items.csv".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"t"), (b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 1234),
            "server": ("t", 80),
        }
        await asyncio.wait_for(app(scope, receive, send), 60)

    start, *bodies = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert not any(name == b"content-length" for name, _ in start["headers"])
    chunks = [m["body"] for m in bodies]
    assert bodies[-1].get("more_body", False) is False
    total = b"".join(chunks)
    # The header row, then one chunk per page of export.PAGE_SIZE items, none of them the whole file.
    assert len([c for c in chunks if c]) == 1 + 10_000 // export.PAGE_SIZE
    assert max(len(c) for c in chunks) < len(total) / 5
    rows = _csv(total.decode("utf-8"))
    assert rows[0][0] == "position"
    assert [int(row[0]) for row in rows[1:]] == list(range(10_000))
    assert [row[1] for row in rows[1:]] == [f"Payee {n}" for n in range(10_000)]
    assert all(row[3] == "1500.00" for row in rows[1:])
