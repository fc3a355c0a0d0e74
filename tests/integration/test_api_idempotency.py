"""Idempotency-Key on POST /payrolls and the process routes: replay, reuse with another body, concurrency."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from tests.integration import api_support as api


def _keyed(api_key: str, idempotency_key: str | bytes) -> dict[str, str | bytes]:
    return {**api.auth(api_key), "Idempotency-Key": idempotency_key}


async def test_a_retried_create_replays_the_first_response(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    first = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "k-1"))
    retry = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "k-1"))
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await api.count(pool, "payrolls") == 1
    stored = await pool.fetchrow("SELECT key, response_status FROM idempotency_keys")
    assert (stored["key"], stored["response_status"]) == ("k-1", 201)


async def test_key_order_and_whitespace_do_not_make_another_request(
    client: httpx.AsyncClient, key: str
) -> None:
    body = api.payroll_body()
    first = await client.post("/payrolls", json=body, headers=_keyed(key, "k"))
    reordered = (
        b'{ "items": ['
        + b",".join(
            f'{{"amount":"{i["amount"]}","account":"{i["account"]}","name":"{i["name"]}"}}'.encode()
            for i in body["items"]
        )
        + b'],  "currency":"KES", "reference":"ACME-2026-11"}'
    )
    retry = await client.post(
        "/payrolls", content=reordered, headers={**_keyed(key, "k"), "Content-Type": "application/json"}
    )
    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]


async def test_the_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "k-2"))
    r = await client.post("/payrolls", json=api.payroll_body(reference="OTHER"), headers=_keyed(key, "k-2"))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in r.json()["detail"]
    assert await api.count(pool, "payrolls") == 1


async def test_keys_belong_to_one_employer(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    other = (await api.employer(pool, "Other"))["api_key"]
    mine = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "shared"))
    theirs = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(other, "shared"))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


async def test_errors_are_not_stored_so_a_corrected_retry_may_reuse_the_key(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    await api.create_payroll(client, key)
    duplicate = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "k-3"))
    assert duplicate.status_code == 409
    invalid = await client.post(
        "/payrolls", json=api.payroll_body(currency="USD"), headers=_keyed(key, "k-3")
    )
    assert invalid.status_code == 422
    assert await api.count(pool, "idempotency_keys") == 0
    fixed = await client.post("/payrolls", json=api.payroll_body(reference="NEW"), headers=_keyed(key, "k-3"))
    assert fixed.status_code == 201


async def test_concurrent_creates_with_one_key_do_the_work_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    results = await asyncio.gather(
        *(
            client.post("/payrolls", json=api.payroll_body(items=50), headers=_keyed(key, "same"))
            for _ in range(8)
        )
    )
    assert [r.status_code for r in results] == [201] * 8
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in results) == 7
    assert await api.count(pool, "payrolls") == 1
    assert await api.count(pool, "payroll_items") == 50


async def test_process_replays_and_concurrent_keyed_process_writes_once(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key)
    url = f"/payrolls/{payroll['id']}/process"
    results = await asyncio.gather(*(client.post(url, headers=_keyed(key, "run-1")) for _ in range(6)))
    assert [r.status_code for r in results] == [202] * 6
    assert len({r.text for r in results}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in results) == 5
    assert await api.count(pool, "outbox") == 1
    # The same key on another route (another payroll, or the seed form) is another request: 422.
    seed = await client.post(
        "/payroll/process", json={"payroll_id": payroll["id"]}, headers=_keyed(key, "run-1")
    )
    assert seed.status_code == 422


async def test_the_seed_process_route_replays_too(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payroll = await api.create_payroll(client, key)
    body = {"payroll_id": payroll["id"]}
    first = await client.post("/payroll/process", json=body, headers=_keyed(key, "seed"))
    retry = await client.post("/payroll/process", json=body, headers=_keyed(key, "seed"))
    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.headers["idempotent-replayed"] == "true"
    other = await client.post(
        "/payroll/process", json={"payroll_id": str(uuid.uuid4())}, headers=_keyed(key, "seed")
    )
    assert other.status_code == 422


@pytest.mark.parametrize("bad", ["", "k" * 256, "nul\x00key", "caf\u00e9".encode("latin-1")])
async def test_a_key_of_the_wrong_length_or_characters_is_422_naming_the_header(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, bad: str | bytes
) -> None:
    payroll = await api.create_payroll(client, key)
    for r in (
        await client.post("/payrolls", json=api.payroll_body(reference="X"), headers=_keyed(key, bad)),
        await client.post(f"/payrolls/{payroll['id']}/process", headers=_keyed(key, bad)),
        await client.post("/payroll/process", json={"payroll_id": payroll["id"]}, headers=_keyed(key, bad)),
    ):
        assert r.status_code == 422
        assert [e["field"] for e in r.json()["errors"]] == ["Idempotency-Key"]
    assert await api.count(pool, "payrolls") == 1
    assert await api.count(pool, "outbox") == 0


async def test_a_255_character_key_is_fine(client: httpx.AsyncClient, key: str) -> None:
    r = await client.post("/payrolls", json=api.payroll_body(), headers=_keyed(key, "k" * 255))
    assert r.status_code == 201
