from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from shared import embedded_pg
from tests import dbutil
from tests.e2e.stack import ROOT, Client, Stack, sim_json, wait_http


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def make_stack(
    pg_admin_dsn: str, pg_template: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """Start the real processes on a fresh database: make_stack(dispatchers=2, SIM_ERROR_RATE_AFTER="0.2")
    -> (stack, client)."""
    started: list[tuple[Stack, aiohttp.ClientSession]] = []
    databases: list[str] = []

    async def make(dispatchers: int = 1, **env: str) -> tuple[Stack, Client]:
        name = await dbutil.create_from_template(pg_admin_dsn, pg_template)
        databases.append(name)
        log_dir = tmp_path / f"stack{len(started)}"
        log_dir.mkdir()
        stack = Stack(dbutil.with_database(pg_admin_dsn, name), log_dir, **env)
        session = aiohttp.ClientSession()
        started.append((stack, session))
        stack.start("sim", "sim")
        stack.start("api", "api")
        await wait_http(f"{stack.sim}/sim/healthz")
        await wait_http(f"{stack.api}/healthz")
        for _ in range(dispatchers):
            stack.start("dispatcher")
        created = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "payrun", "employer", "create", "--name", "E2E Ltd"],
            cwd=ROOT,
            env=stack.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return stack, Client(session, stack.api, json.loads(created.stdout)["api_key"])

    yield make
    failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
    for stack, session in started:
        await session.close()
        await asyncio.to_thread(stack.stop_all)
        if failed:
            print(stack.logs())
    for name in databases:
        await dbutil.drop(pg_admin_dsn, name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


async def assert_ledger_agrees(stack: Stack) -> dict[str, int]:
    """Item by item, payrun's states and the simulator's ledger agree; nobody was paid twice."""
    ledger = (await sim_json(stack, "/sim/ledger"))["payments"]
    paid_refs = Counter(p["request_reference_id"] for p in ledger if p["paid"])
    assert all(n == 1 for n in paid_refs.values()), (
        f"paid twice: {[r for r, n in paid_refs.items() if n > 1]}"
    )
    conn = await asyncpg.connect(stack.database_url)
    try:
        items = await conn.fetch(
            "SELECT id, status, request_reference_id, amount, account FROM payroll_items"
        )
    finally:
        await conn.close()
    by_ref = {p["request_reference_id"]: p for p in ledger}
    states: Counter[str] = Counter()
    for item in items:
        states[item["status"]] += 1
        ref = item["request_reference_id"]
        if item["status"] == "PAID":
            assert paid_refs.get(ref) == 1, f"item {item['id']} is PAID but the provider did not pay it"
            assert str(by_ref[ref]["account"]) == item["account"]
        elif item["status"] == "FAILED":
            assert not paid_refs.get(ref), f"item {item['id']} is FAILED but the provider paid it"
        else:
            assert item["status"] == "NEEDS_REVIEW", f"item {item['id']} ended {item['status']}"
    # Every payment the provider made belongs to an item payrun knows as PAID or NEEDS_REVIEW.
    known = {i["request_reference_id"] for i in items if i["status"] in ("PAID", "NEEDS_REVIEW")}
    stray = [r for r in paid_refs if r not in known]
    assert not stray, f"the provider paid requests payrun does not account for: {stray[:5]}"
    return dict(states)


@pytest.fixture
def own_server():
    """A PostgreSQL server of the test's own, to restart or freeze without touching the others."""
    data_dir = ROOT / ".data" / f"restart-{uuid.uuid4().hex[:8]}"
    server = embedded_pg.start(data_dir)
    yield server, data_dir
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)
