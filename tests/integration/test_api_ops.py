"""Operations: health, readiness, the OpenAPI document, 404/405 problems, the lifespan, request ids and logs."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import asyncpg
import httpx
import pytest
import structlog

from api_service import routes
from api_service.app import create_app, open_pool
from shared import errors, migrate
from shared.settings import Settings
from testkit import postgres as pg
from tests.integration import api_support as api


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = await client.get("/readyz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_readyz_is_503_when_the_schema_falls_behind(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await pool.execute("DELETE FROM schema_migrations WHERE version = $1", migrate.latest_version())
    r = await client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "payrun migrate" in r.json()["detail"]
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_is_503_when_the_database_is_gone(database_url: str) -> None:
    from shared import db

    own = await db.create_pool(database_url, min_size=1, max_size=2)
    async with api.client(api.settings(database_url), own) as c:
        await own.close()
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"]


async def test_a_request_that_gets_no_connection_in_time_is_a_prompt_503_with_retry_after(
    database_url: str, pool: asyncpg.Pool
) -> None:
    key = (await api.employer(pool))["api_key"]
    s = api.settings(database_url, api_db_acquire_timeout_s=0.3)
    one = await open_pool(s, min_size=1, max_size=1)
    try:
        async with api.client(s, one) as c:
            async with one.acquire():  # the pool's only connection, held as a stuck request would
                started = time.monotonic()
                r = await c.get("/payrolls", headers=api.auth(key))
                waited = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"] == "urn:payrun:problem:database-busy"
            assert r.headers["retry-after"] == "1"
            assert 0.25 < waited < 1.5
            assert (await c.get("/payrolls", headers=api.auth(key))).status_code == 200
    finally:
        await one.close()


def test_the_api_waits_two_seconds_for_a_connection_unless_told_otherwise() -> None:
    assert Settings.from_env({}).api_db_acquire_timeout_s == 2.0
    assert Settings.from_env({"API_DB_ACQUIRE_TIMEOUT_S": "0.5"}).api_db_acquire_timeout_s == 0.5
    with pytest.raises(errors.ConfigError, match="API_DB_ACQUIRE_TIMEOUT_S"):
        Settings.from_env({"API_DB_ACQUIRE_TIMEOUT_S": "0"})


def _terminate_without_yielding(database_url: str, pid: int) -> None:
    """End a backend from another thread while this event loop is blocked, so the pool cannot notice before
    the next request uses the connection (as when PostgreSQL restarts between two requests)."""

    async def terminate() -> None:
        conn = await asyncpg.connect(database_url)
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
        await conn.close()

    worker = threading.Thread(target=asyncio.run, args=(terminate(),))
    worker.start()
    worker.join()
    time.sleep(0.2)  # the server's goodbye reaches our socket; nothing reads it yet


async def test_a_connection_the_database_dropped_is_a_503_not_a_500(
    database_url: str, pool: asyncpg.Pool
) -> None:
    key = (await api.employer(pool))["api_key"]
    s = api.settings(database_url)
    one = await open_pool(s, min_size=1, max_size=1)
    try:
        async with api.client(s, one) as c:
            async with one.acquire() as conn:
                pid = conn.get_server_pid()
            _terminate_without_yielding(database_url, pid)
            r = await c.get("/payrolls", headers=api.auth(key))
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "urn:payrun:problem:database-unavailable"
            assert r.headers["retry-after"] == "5"
            assert (await c.get("/payrolls", headers=api.auth(key))).status_code == 200
    finally:
        await one.close()


async def test_the_app_refuses_to_start_on_an_unmigrated_database(pg_admin_dsn: str) -> None:
    name = f"payrun_empty_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        app = create_app(api.settings(pg.with_database(pg_admin_dsn, name)))
        with pytest.raises(api.LifespanFailed, match="payrun migrate"):
            async with api.running(app):
                pass
    finally:
        await pg.drop(pg_admin_dsn, name)


async def test_the_app_builds_and_closes_its_own_pool(database_url: str) -> None:
    async with api.client(api.settings(database_url)) as c:
        assert (await c.get("/readyz")).status_code == 200


async def test_openapi_describes_every_route_and_method(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An employer's API key."
    }  # fmt: skip
    routed = {
        (route.path, m.lower())
        for route in routes.ROUTES
        if route.include_in_schema  # not the dashboard's HTML page and its files
        for m in route.methods or ()
        if m != "HEAD"
    }
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert routed == documented
    create = doc["paths"]["/payrolls"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CreatePayrollIn")
    item = doc["components"]["schemas"]["PayrollItemIn"]
    assert item["additionalProperties"] is False
    assert {"name", "account", "amount"} <= set(item["required"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            if path.startswith(("/payroll", "/employer/")):  # an employer's key
                assert "security" not in op and "401" in op["responses"], (path, method)
            elif path.startswith("/ops/"):  # an operator's key, never an employer's
                assert op["security"] == [{"operator": []}] and "401" in op["responses"], (path, method)
            else:
                assert op["security"] == [], (path, method)


async def test_unknown_routes_are_404_and_wrong_methods_405_as_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    r = await client.delete("/payrolls")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    r = await client.get(f"/payrolls/{uuid.uuid4()}/process")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    assert len(r.headers["x-request-id"]) == 32
    r = await client.get("/nowhere")
    assert r.headers["x-request-id"]


async def test_one_request_finished_line_with_the_employer_and_no_secrets(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    employer = await api.employer(pool)
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        r = await client.post(
            "/payrolls",
            json=api.payroll_body(),
            headers={**api.auth(employer["api_key"]), "X-Request-ID": "req-1"},
        )
    assert r.status_code == 201
    finished = [e for e in logs if e["event"] == "request_finished"]
    assert len(finished) == 1
    line = finished[0]
    assert line["method"] == "POST" and line["path"] == "/payrolls" and line["status"] == 201
    assert line["employer_id"] == employer["id"]
    assert line["request_id"] == "req-1"
    assert isinstance(line["duration_ms"], float)
    assert employer["api_key"] not in repr(logs)
    assert "254712000000" not in repr(logs)


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert 'payrun_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert "payrun_outbox_rows" in text
