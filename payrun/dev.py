"""`payrun dev` (what `make run` runs): everything on one machine, for trying payrun out.

An embedded PostgreSQL under .data/ when DATABASE_URL is unset, the simulator when INTASEND_SECRET_KEY is
unset, migrations, one API and one dispatcher, and a demo employer. honcho runs the processes, prefixes
their output and stops them all on Ctrl-C (or when one of them dies).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Printer

from shared import db, embedded_pg, employers, migrate
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "ISSecretKey_test_payrun_simulator"


async def _prepare(dsn: str) -> employers.NewEmployer:
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
        return await employers.create(conn, "Demo employer")
    finally:
        await conn.close()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_dev(settings: Settings) -> None:
    env = dict(os.environ)
    env.setdefault("LOG_FORMAT", "console")  # for people; services default to JSON lines
    server = None
    dsn = settings.database_url
    if not dsn:
        _say("payrun dev: DATABASE_URL is not set: starting an embedded PostgreSQL in .data/pg")
        server = embedded_pg.start(ROOT / ".data" / "pg")
        asyncio.run(embedded_pg.ensure_database(embedded_pg.dsn_for(server, "postgres"), "payrun"))
        dsn = embedded_pg.dsn_for(server, "payrun")
    env["DATABASE_URL"] = dsn
    employer = asyncio.run(_prepare(dsn))

    use_sim = not settings.intasend_secret_key
    if use_sim:
        env["INTASEND_BASE_URL"] = f"http://{settings.sim_host}:{settings.sim_port}"
        env["INTASEND_SECRET_KEY"] = SIM_KEY
        env.setdefault("SIM_MAX_RPS", str(int(settings.intasend_max_rps)))

    manager = Manager(Printer(sys.stdout))
    payrun = shlex.quote(sys.executable) + " -m payrun"
    if use_sim:
        manager.add_process("sim", f"{payrun} sim", env=env, cwd=str(ROOT))
    manager.add_process("api", f"{payrun} api", env=env, cwd=str(ROOT))
    manager.add_process("dispatcher", f"{payrun} dispatcher", env=env, cwd=str(ROOT))

    url = f"http://{settings.api_host}:{settings.api_port}"
    banner = [
        "",
        "=" * 78,
        f"payrun is starting at {url}",
        f"demo employer: {employer['name']} ({employer['id']})",
        f"demo API key:  {employer['api_key']}",
        "try:",
        f"  curl -s -X POST {url}/payrolls -H 'Authorization: Bearer {employer['api_key']}' \\",
        "    -H 'Content-Type: application/json' \\",
        """    -d '{"reference":"DEMO-1","currency":"KES","items":[{"name":"Jane Doe","account":"0712345678","amount":"1500.00"}]}'""",
        f"  curl -s -X POST {url}/payrolls/<id>/process -H 'Authorization: Bearer {employer['api_key']}'",
        f"  curl -s {url}/payrolls/<id>/status -H 'Authorization: Bearer {employer['api_key']}'",
        f"  or open {url}/ in a browser and log in with the key.",
    ]
    if use_sim:
        banner += [
            "",
            "!!! INTASEND_SECRET_KEY is not set: payouts go to the bundled simulator at "
            f"{env['INTASEND_BASE_URL']}. NO REAL MONEY MOVES. !!!",
        ]
    banner += ["Ctrl-C stops everything.", "=" * 78, ""]
    _say("\n".join(banner))
    try:
        manager.loop()
    finally:
        if server is not None:
            server.cleanup()
    sys.exit(manager.returncode or 0)
