from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared import db, embedded_pg, migrate
from testkit import ledger
from testkit import postgres as pg
from testkit.stack import ROOT, Client, Stack, sim_json, wait_http
from tests import factories

__all__ = ["Client", "Stack", "assert_ledger_agrees", "make_stack", "own_server", "sim_json", "wait_http"]


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
        name = await pg.create_from_template(pg_admin_dsn, pg_template)
        databases.append(name)
        log_dir = tmp_path / f"stack{len(started)}"
        log_dir.mkdir()
        stack = Stack(pg.with_database(pg_admin_dsn, name), log_dir, **env)
        session = aiohttp.ClientSession()
        started.append((stack, session))
        await stack.boot(dispatchers)
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
        await pg.drop(pg_admin_dsn, name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


async def assert_ledger_agrees(stack: Stack) -> dict[str, int]:
    """Item by item, payrun's states and the simulator's ledger agree (testkit/ledger.py's rules: nobody paid
    twice, PAID paid once to its account and amount, FAILED not paid, every payment accounted for); returns
    the items' states with their counts."""
    result = await ledger.reconcile(stack.database_url, stack.sim)
    assert result.ok, result.problems()
    return result.states


@pytest.fixture
def own_server() -> Iterator[tuple[Any, Path]]:
    """A PostgreSQL server of the test's own, to restart or freeze without touching the others."""
    with pg.own_server() as (server, data_dir):
        yield server, data_dir


async def payrolls_on_own_server(server: Any, database: str, count: int) -> tuple[str, list[uuid.UUID]]:
    """A migrated database on the test's own server, with `count` 10-worker payrolls already PROCESSING."""
    await embedded_pg.ensure_database(embedded_pg.dsn_for(server, "postgres"), database)
    dsn = embedded_pg.dsn_for(server, database)
    pool = await db.create_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await migrate.apply(conn)
        employer = await factories.employer(pool)
        payrolls = [
            await factories.processing_payroll(
                pool, employer_id=employer, accounts=[f"2547{p:04d}{i:04d}" for i in range(10)]
            )
            for p in range(count)
        ]
    finally:
        await pool.close()
    return dsn, payrolls
