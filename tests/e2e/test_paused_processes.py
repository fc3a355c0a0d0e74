"""Processes that are alive but paused past their lease (SIGSTOP: what a long GC, a VM steal or a debugger
does) send nothing more when they wake: a dispatcher frozen several times while its flows wait for send
slots, and PostgreSQL itself frozen under two dispatchers. A simulator that pays a second approve again and
counts requests in an exact sliding window checks the result, item by item.

CI runs one seed of each; `make chaos` runs many (PAYRUN_CHAOS_SEEDS="1 2 3 ...")."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import assert_ledger_agrees, payrolls_on_own_server
from tests.e2e.stack import Stack, sim_json, wait_http
from tests.e2e.test_money_moves_once import run_payrolls

SEEDS = [int(s) for s in os.environ.get("PAYRUN_CHAOS_SEEDS", "1").split()]
LEASE_S = 5.0
STRICT = {
    "INTASEND_MAX_RPS": "10",
    "SIM_MAX_RPS": "10",
    "DISPATCHER_LEASE_S": str(LEASE_S),
    "SIM_SECOND_APPROVE_PAYS": "1",  # a second approve is a second payment: the ledger check sees it
}


@contextmanager
def frozen(pids: list[int]):
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def assert_paid_once_within_the_limit(stack: Stack) -> None:
    stats = await sim_json(stack, "/sim/stats")
    assert stats["second_approves"] == 0, stats
    assert stats["rejected_429_pace"] == 0 and stats["max_in_any_window"] <= 10, stats


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_dispatcher_frozen_past_its_lease_again_and_again_sends_nothing_stale(
    make_stack, seed: int
) -> None:
    rng = random.Random(seed)
    stack, client = await make_stack(dispatchers=2, SIM_SEED=str(seed), **STRICT)
    ids = await run_payrolls(client, 40)
    victim = stack.procs[rng.choice(stack.dispatchers())].pid
    for _ in range(4):
        await asyncio.sleep(rng.uniform(0.2, 1.5))
        with frozen([victim]):
            await asyncio.sleep(LEASE_S + rng.uniform(1.0, 4.0))
    states = await client.wait_final(ids, within_s=180)
    assert set(states.values()) == {"COMPLETED"}, stack.logs()
    assert await assert_ledger_agrees(stack) == {"PAID": 400}
    await assert_paid_once_within_the_limit(stack)


def _server_pids(data_dir: Path) -> list[int]:
    """The postmaster and every backend and helper it forked."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


@pytest.mark.parametrize("seed", SEEDS)
async def test_postgres_frozen_past_the_lease_under_two_dispatchers_pays_everyone_once(
    own_server, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    server, data_dir = own_server
    dsn, payrolls = await payrolls_on_own_server(server, f"frozen_{uuid.uuid4().hex[:6]}", 40)

    stack = Stack(dsn, tmp_path, SIM_SEED=str(seed), **STRICT)
    try:
        stack.start("sim", "sim")
        await wait_http(f"{stack.sim}/sim/healthz")
        stack.start("dispatcher")
        stack.start("dispatcher")
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            with frozen(_server_pids(data_dir)):
                await asyncio.sleep(LEASE_S + rng.uniform(1.0, 4.0))
        states: dict[str, int] = {}
        for _ in range(180):
            await asyncio.sleep(1)
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch("SELECT status, count(*) FROM payrolls GROUP BY 1")
            finally:
                await conn.close()
            states = {r["status"]: r["count"] for r in rows}
            if "PROCESSING" not in states:
                break
        assert states == {"COMPLETED": len(payrolls)}, stack.logs()
        assert await assert_ledger_agrees(stack) == {"PAID": 400}
        await assert_paid_once_within_the_limit(stack)
    finally:
        stack.stop_all()
