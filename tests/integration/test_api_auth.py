"""API keys (401 with WWW-Authenticate), open routes, and the per-key throttle (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from shared import employers
from tests.integration import api_support as api

PROTECTED = [
    ("POST", "/payrolls"),
    ("GET", "/payrolls"),
    ("GET", f"/payrolls/{uuid.uuid4()}"),
    ("POST", f"/payrolls/{uuid.uuid4()}/process"),
    ("GET", f"/payrolls/{uuid.uuid4()}/status"),
    ("POST", "/payroll/process"),
    ("GET", f"/payroll/status/{uuid.uuid4()}"),
]


@pytest.fixture
async def client(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client(api.settings(database_url, api_key_rate=1.0, api_key_burst=3), pool) as c:
        yield c


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer pr_live_nope", "Bearer " + "x" * 600],
)
async def test_a_missing_or_unknown_key_is_401_everywhere(
    client: httpx.AsyncClient, pool: asyncpg.Pool, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in PROTECTED:
        r = await client.request(method, path, headers=headers, json={})
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 401
    assert await api.count(pool, "payrolls") == 0


async def test_the_scheme_is_case_insensitive(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    key = (await api.employer(pool))["api_key"]
    r = await client.get("/payrolls", headers={"Authorization": f"bearer {key}"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/metrics"])
async def test_operations_routes_need_no_key(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200


async def test_over_the_throttle_is_429_with_retry_after(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    key = (await api.employer(pool))["api_key"]
    other = (await api.employer(pool, "Other"))["api_key"]
    statuses = [(await client.get("/payrolls", headers=api.auth(key))).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    r = await client.get("/payrolls", headers=api.auth(key))
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) >= 1
    # Another key has its own bucket; unauthenticated requests are not throttled, they are 401.
    assert (await client.get("/payrolls", headers=api.auth(other))).status_code == 200
    assert (await client.get("/payrolls", headers=api.auth("pr_live_unknown"))).status_code == 401
    assert (await client.get("/healthz")).status_code == 200


async def test_a_throttled_post_writes_nothing(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    key = (await api.employer(pool))["api_key"]
    for _ in range(3):
        await client.get("/payrolls", headers=api.auth(key))
    r = await client.post("/payrolls", json=api.payroll_body(), headers=api.auth(key))
    assert r.status_code == 429
    assert await api.count(pool, "payrolls") == 0


async def test_a_flood_of_unknown_keys_is_429_with_retry_after_and_valid_keys_go_on(
    database_url: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    real_lookup = employers.by_api_key

    async def counted(conn: asyncpg.Pool, api_key: str) -> employers.Employer | None:
        lookups.append(api_key)
        return await real_lookup(conn, api_key)

    monkeypatch.setattr(employers, "by_api_key", counted)
    key = (await api.employer(pool))["api_key"]
    s = api.settings(database_url, api_auth_failure_rate=0.1, api_auth_failure_burst=30)  # a client: 3
    async with api.client(s, pool) as c:
        assert (await c.get("/payrolls", headers=api.auth(key))).status_code == 200
        flood = [await c.get("/payrolls", headers=api.auth(f"pr_live_guess{n}")) for n in range(20)]
        valid = [(await c.get("/payrolls", headers=api.auth(key))).status_code for _ in range(20)]
    assert [r.status_code for r in flood] == [401] * 3 + [429] * 17
    throttled = flood[-1]
    assert throttled.headers["content-type"] == "application/problem+json"
    assert throttled.json()["status"] == 429
    assert int(throttled.headers["retry-after"]) >= 1
    assert valid == [200] * 20
    assert len(lookups) == 1 + 3  # the valid key once, then three unknown keys; the rest cost no query


async def test_many_first_requests_with_valid_keys_from_one_address_are_never_throttled(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """Month end: a payroll backend sends the first request of the month for 30 employers at once, from
    one address whose share of the unknown-key budget is 3. Valid keys spend none of it."""
    keys = [(await api.employer(pool, f"E{n}"))["api_key"] for n in range(30)]
    s = api.settings(database_url, api_auth_failure_rate=0.1, api_auth_failure_burst=30)
    async with api.client(s, pool) as c:
        answers = await asyncio.gather(*(c.get("/payrolls", headers=api.auth(k)) for k in keys))
    assert [r.status_code for r in answers] == [200] * 30
