"""Processing a payroll (PROCESSING and its outbox rows in one transaction) and polling its status."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import schemas
from tests.integration import api_support as api

BATCH = 3


@pytest.fixture
async def client(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client(api.settings(database_url, intasend_batch_size=BATCH), pool) as c:
        yield c


def _mixed_body() -> dict[str, Any]:
    """7 M-Pesa items and 2 PESALINK items, interleaved: 3 M-Pesa batches (3+3+1) and 1 PESALINK batch."""
    body = api.payroll_body(items=9)
    for n in (2, 5):
        body["items"][n] = api.item(n, provider="PESALINK", account=f"{n}000", bank_code="1")
    return body


async def _outbox(pool: asyncpg.Pool, payroll_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT payroll_id, kind, payload, status, attempts, created_at FROM outbox WHERE payroll_id = $1 ORDER BY id",
        uuid.UUID(payroll_id),
    )


async def _item_ids(pool: asyncpg.Pool, payroll_id: str, provider: str) -> list[int]:
    rows = await pool.fetch(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 AND provider = $2 ORDER BY position",
        uuid.UUID(payroll_id),
        provider,
    )
    return [r["id"] for r in rows]


async def test_process_is_202_with_location_and_the_outbox_rows_exist_at_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key, _mixed_body())
    r = await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    assert r.status_code == 202, r.text
    status_url = f"/payrolls/{payroll['id']}/status"
    assert r.json() == {"id": payroll["id"], "status": "PROCESSING", "status_url": status_url}
    schemas.ProcessAcceptedOut.model_validate(r.json())
    assert r.headers["location"] == status_url

    rows = await _outbox(pool, payroll["id"])
    mpesa, pesalink = (
        await _item_ids(pool, payroll["id"], "MPESA-B2C"),
        await _item_ids(pool, payroll["id"], "PESALINK"),
    )
    payloads = [r["payload"] for r in rows]
    assert payloads == [
        {"provider": "MPESA-B2C", "currency": "KES", "item_ids": mpesa[0:3], "wallet_id": None},
        {"provider": "PESALINK", "currency": "KES", "item_ids": pesalink, "wallet_id": None},
        {"provider": "MPESA-B2C", "currency": "KES", "item_ids": mpesa[3:6], "wallet_id": None},
        {"provider": "MPESA-B2C", "currency": "KES", "item_ids": mpesa[6:7], "wallet_id": None},
    ]
    assert {(r["kind"], r["status"], r["attempts"]) for r in rows} == {("send_batch", "pending", 0)}
    payroll_row = await pool.fetchrow("SELECT status, processing_started_at, updated_at FROM payrolls")
    assert payroll_row["status"] == "PROCESSING"
    assert payroll_row["processing_started_at"] is not None
    # The same transaction: the rows were written at the payroll's change to PROCESSING.
    assert {r["created_at"] for r in rows} == {payroll_row["processing_started_at"]}


async def test_processing_twice_writes_one_set_of_rows(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key, _mixed_body())
    first = await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    second = await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json() == first.json()
    assert second.headers["location"] == first.headers["location"]
    assert len(await _outbox(pool, payroll["id"])) == 4


async def test_ten_concurrent_process_calls_write_one_set_of_rows(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key, _mixed_body())
    paths = [f"/payrolls/{payroll['id']}/process"] * 5
    results = await asyncio.gather(
        *(client.post(p, headers=api.auth(key)) for p in paths),
        *(
            client.post("/payroll/process", json={"payroll_id": payroll["id"]}, headers=api.auth(key))
            for _ in range(5)
        ),
    )
    assert [r.status_code for r in results] == [202] * 10
    assert len(await _outbox(pool, payroll["id"])) == 4


async def test_a_hundred_concurrent_process_calls_are_answered_quickly(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payrolls = [
        await api.create_payroll(client, key, api.payroll_body(items=2, reference=f"R{n}")) for n in range(20)
    ]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(
            client.post(f"/payrolls/{p['id']}/process", headers=api.auth(key))
            for p in payrolls
            for _ in range(5)
        )
    )
    elapsed = time.perf_counter() - started
    assert {r.status_code for r in results} == {202}
    assert await api.count(pool, "outbox") == 20
    assert elapsed < 5.0, f"100 process calls took {elapsed:.2f}s"


@pytest.mark.parametrize("final", ["COMPLETED", "PARTIALLY_FAILED", "FAILED", "NEEDS_REVIEW"])
async def test_processing_a_payroll_in_a_final_state_is_409(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, final: str
) -> None:
    payroll = await api.create_payroll(client, key)
    await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    await pool.execute("UPDATE payrolls SET status = $1", final)
    for r in (
        await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key)),
        await client.post("/payroll/process", json={"payroll_id": payroll["id"]}, headers=api.auth(key)),
    ):
        assert r.status_code == 409
        assert r.headers["content-type"] == "application/problem+json"
        assert final in r.json()["detail"]
    assert await api.count(pool, "outbox") == 1


async def test_processing_an_unknown_or_malformed_id_is_404(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    for path in (f"/payrolls/{uuid.uuid4()}/process", "/payrolls/garbage/process"):
        r = await client.post(path, headers=api.auth(key))
        assert r.status_code == 404, path
    r = await client.post("/payroll/process", json={"payroll_id": str(uuid.uuid4())}, headers=api.auth(key))
    assert r.status_code == 404
    assert await api.count(pool, "outbox") == 0


async def test_another_employers_payroll_is_404_and_untouched(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key)
    intruder = api.auth((await api.employer(pool, "Intruder"))["api_key"])
    for r in (
        await client.post(f"/payrolls/{payroll['id']}/process", headers=intruder),
        await client.post("/payroll/process", json={"payroll_id": payroll["id"]}, headers=intruder),
        await client.get(f"/payrolls/{payroll['id']}", headers=intruder),
        await client.get(f"/payrolls/{payroll['id']}/status", headers=intruder),
        await client.get(f"/payroll/status/{payroll['id']}", headers=intruder),
    ):
        assert r.status_code == 404
        assert r.json()["title"] == "Payroll not found"
    assert (await client.get("/payrolls", headers=intruder)).json()["items"] == []
    assert await pool.fetchval("SELECT status FROM payrolls") == "DRAFT"
    assert await api.count(pool, "outbox") == 0


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"payroll_id": "nope"},
        {"payroll_id": 5},
        {"payroll_id": None},
        {"payroll_id": str(uuid.uuid4()), "x": 1},
    ],
)
async def test_the_seed_process_route_rejects_a_bad_payroll_id_with_422(
    client: httpx.AsyncClient, key: str, payload: dict[str, Any]
) -> None:
    r = await client.post("/payroll/process", json=payload, headers=api.auth(key))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] in ("payroll_id", "x")


async def test_the_seed_routes_behave_as_the_new_ones(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key, _mixed_body())
    r = await client.post("/payroll/process", json={"payroll_id": payroll["id"]}, headers=api.auth(key))
    assert r.status_code == 202
    assert r.json() == {
        "id": payroll["id"],
        "status": "PROCESSING",
        "status_url": f"/payrolls/{payroll['id']}/status",
    }
    assert r.headers["location"] == r.json()["status_url"]
    assert len(await _outbox(pool, payroll["id"])) == 4
    old = await client.get(f"/payroll/status/{payroll['id']}", headers=api.auth(key))
    new = await client.get(f"/payrolls/{payroll['id']}/status", headers=api.auth(key))
    assert old.status_code == new.status_code == 200
    assert old.json() == new.json()
    assert old.headers["etag"] == new.headers["etag"]


async def test_status_counts_every_item_status_with_zeros(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key, api.payroll_body(items=4))
    r = await client.get(f"/payrolls/{payroll['id']}/status", headers=api.auth(key))
    assert r.status_code == 200
    body = r.json()
    schemas.PayrollStatusOut.model_validate(body)
    assert body == {
        "id": payroll["id"],
        "status": "DRAFT",
        "item_count": 4,
        "counts": {"PENDING": 4, "SUBMITTED": 0, "PAID": 0, "FAILED": 0, "NEEDS_REVIEW": 0, "CANCELLED": 0},
        "total_amount": "6000.00",
        "paid_amount": "0.00",
        "updated_at": payroll["updated_at"],
        "status_detail": None,
    }
    assert r.headers["cache-control"] == "no-cache"
    assert "retry-after" not in r.headers
    await pool.execute("UPDATE payrolls SET status = 'PROCESSING'")
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE position = 0")
    await pool.execute("UPDATE payroll_items SET status = 'FAILED' WHERE position = 1")
    await pool.execute("UPDATE payroll_items SET status = 'SUBMITTED' WHERE position = 2")
    body = (await client.get(f"/payrolls/{payroll['id']}/status", headers=api.auth(key))).json()
    assert body["counts"] == {
        "PENDING": 1,
        "SUBMITTED": 1,
        "PAID": 1,
        "FAILED": 1,
        "NEEDS_REVIEW": 0,
        "CANCELLED": 0,
    }
    assert body["paid_amount"] == "1500.00"


async def test_status_etag_304_and_retry_after(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key)
    url = f"/payrolls/{payroll['id']}/status"
    await client.post(f"/payrolls/{payroll['id']}/process", headers=api.auth(key))
    first = await client.get(url, headers=api.auth(key))
    etag = first.headers["etag"]
    assert first.headers["retry-after"] == "2"
    assert first.headers["cache-control"] == "no-cache"

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(url, headers={**api.auth(key), "If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["retry-after"] == "2"
    assert (await client.get(url, headers={**api.auth(key), "If-None-Match": '"stale"'})).status_code == 200

    # An item changing state changes the ETag even when the payroll row does not change.
    await pool.execute("UPDATE payroll_items SET status = 'PAID' WHERE position = 0")
    changed = await client.get(url, headers={**api.auth(key), "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag

    await pool.execute("UPDATE payroll_items SET status = 'PAID'")
    await pool.execute("UPDATE payrolls SET status = 'COMPLETED', updated_at = now()")
    done = await client.get(url, headers=api.auth(key))
    assert done.json()["status"] == "COMPLETED"
    assert "retry-after" not in done.headers
    assert done.json()["paid_amount"] == done.json()["total_amount"] == "3000.00"
