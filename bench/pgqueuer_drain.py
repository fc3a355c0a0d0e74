"""pgqueuer's drain of no-op jobs, the yardstick `throughput` puts beside payrun's payouts per second: the
best Python PostgreSQL queue doing nothing per job, on the same server in the same run.

pgqueuer is not a dependency of payrun: `ensure_installed` pip-installs it into the running venv when it
is missing. Each phase runs in a child process (`python -m bench.pgqueuer_drain enqueue|drain DSN N`) so
that its CPU time is its own: the enqueue is not timed; the drain is one QueueManager, batch 100,
`mode=drain`, timed from its start until the queue is empty."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import asyncpg

from bench import postgres, stats

PACKAGE = "pgqueuer"
BATCH = 100
ENTRYPOINT = "noop"


def ensure_installed() -> str:
    """pgqueuer's version, installing it into this venv first when it is missing."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError:
        stats.say(f"installing {PACKAGE} into {sys.prefix} (a bench-only dependency)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)
        importlib.invalidate_caches()
        module = importlib.import_module(PACKAGE)
    from importlib.metadata import version  # noqa: PLC0415

    return version(PACKAGE) if module else ""


async def drain(dsn: str, jobs: int) -> dict[str, Any]:
    """Enqueue `jobs` no-op jobs, then time pgqueuer draining them (its CPU and the server's)."""
    await asyncio.to_thread(_child, "enqueue", dsn, jobs)
    pg = postgres.Postgres.get()
    pg_before = pg.cpu_seconds()
    out = await asyncio.to_thread(_child, "drain", dsn, jobs)
    pg_after = pg.cpu_seconds()
    out["postgres_cpu_s"] = None if pg_before is None or pg_after is None else pg_after - pg_before
    return out


def _child(phase: str, dsn: str, jobs: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.pgqueuer_drain", phase, dsn, str(jobs)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def _enqueue(dsn: str, jobs: int) -> dict[str, Any]:
    pgq = importlib.import_module(PACKAGE)
    conn = await asyncpg.connect(dsn)
    try:
        queries = pgq.Queries(pgq.AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
        chunk = 10_000
        for start in range(0, jobs, chunk):
            n = min(chunk, jobs - start)
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        queued = await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status = 'queued'")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return {"queued": queued}


async def _drain(dsn: str, jobs: int) -> dict[str, Any]:
    pgq = importlib.import_module(PACKAGE)
    types = importlib.import_module("pgqueuer.types")
    conn = await asyncpg.connect(dsn)
    try:
        qm = pgq.QueueManager(pgq.Queries(pgq.AsyncpgDriver(conn)))
        done = 0

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        cpu0, t0 = time.process_time(), time.perf_counter()
        await qm.run(
            batch_size=BATCH,
            mode=types.QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=0.2),
            log_aggregation_interval=timedelta(0),
        )
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    finally:
        await conn.close()
    return {"jobs": done, "left": left, "elapsed_s": elapsed, "per_s": done / elapsed, "cpu_s": cpu}


def main() -> None:
    phase, dsn, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        import uvloop  # noqa: PLC0415

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_enqueue(dsn, jobs) if phase == "enqueue" else _drain(dsn, jobs))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
