"""burst: the API alone under process calls. 100 and 1,000 process calls released at one instant (one
employer each, 10-worker payrolls, connections pre-opened), then sustained process calls from many clients
over many payrolls, against what pgbench does with the same transaction on the same server, in the same run.

No dispatcher runs here (the outbox rows stay pending), so the figures are the API's and PostgreSQL's own;
hundred_users and scale measure the same calls with a dispatcher at work."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import subprocess
import tempfile
import time
from typing import Any

from bench import fixtures, postgres, processes, registry, stats, traffic
from shared import db, sqlfiles

NAME = "burst"
SUSTAINED_EMPLOYERS = 100
SUSTAINED_CLIENTS = 64
PGBENCH_CLIENTS = (8, 20)  # 20 = the API's pool size; the better of the two is the reference
TARGET_SHARE = 0.20


# -- simultaneous calls -----------------------------------------------------------------------------------


async def simultaneous(opts: registry.Options, n: int, reps: int) -> list[dict[str, Any]]:
    runs = []
    async with processes.running_stack(opts, f"{NAME}-{n}", dispatchers=0) as st:
        conn = await db.connect(st.dsn)
        try:
            made = await fixtures.create_employers(conn, n)
        finally:
            await conn.close()
        async with traffic.session(n + 16) as client:
            for rep in range(1, reps + 1):
                ids = await traffic.bounded(
                    16,
                    (
                        traffic.create_payroll_api(client, st.api, key, f"B{rep}-{i}", (rep * n + i) * 10, 10)
                        for i, (_, key) in enumerate(made)
                    ),
                )
                opened = await traffic.warm_up(client, st.api, n)
                before, pg_before = st.resources(), postgres.Postgres.get().cpu_seconds()
                client_before = time.process_time()
                released, answers = await traffic.release_at_once(
                    [
                        traffic.post(client, f"{st.api}/payrolls/{pid}/process", traffic.auth(key))
                        for pid, (_, key) in zip(ids, made, strict=True)
                    ]
                )
                client_s = time.process_time() - client_before
                await asyncio.sleep(0.2)
                after, pg_after = st.resources(), postgres.Postgres.get().cpu_seconds()
                lat = [a.latency_s for a in answers]
                from_release = [a.done_at - released for a in answers]
                statuses = collections.Counter(str(a.status) for a in answers)
                runs.append(
                    {
                        "n": n,
                        "rep": rep,
                        "opened": opened,
                        "ok": statuses.get("202", 0),
                        "non_202": {k: v for k, v in statuses.items() if k != "202"},
                        "p50_s": stats.pct(lat, 50),
                        "p99_s": stats.pct(lat, 99),
                        "max_s": max(lat),
                        "release_p50_s": stats.pct(from_release, 50),
                        "release_p99_s": stats.pct(from_release, 99),
                        "makespan_s": max(from_release),
                        "api_cpu_ms_per_call": 1000 * (after["api"]["cpu_s"] - before["api"]["cpu_s"]) / n,
                        "pg_cpu_ms_per_call": 1000 * (pg_after - pg_before) / n
                        if pg_before is not None and pg_after is not None
                        else None,
                        "client_cpu_ms_per_call": 1000 * client_s / n,
                        "api_peak_mib": after["api"].get("peak_mib"),
                    }
                )
                st.check_alive()
    return runs


# -- sustained calls, and pgbench ---------------------------------------------------------------------------


def _statement(text: str) -> str:
    """A named query from sql/queries as one line, its comments dropped (pgbench reads a line per command)."""
    return " ".join(part for line in text.splitlines() if (part := line.split("--")[0].strip()))


PICK_NEXT = "SELECT payroll_id AS pid, employer_id AS eid FROM bench_targets WHERE n = (SELECT nextval('bench_seq')) \\gset"


def pgbench_script(notify: bool) -> str:
    """What the API commits for an unkeyed process call, read from payrun's own sql/queries: today the one
    statement `start_payroll` (UPDATE + outbox INSERT + pg_notify) in autocommit; for older code the
    transaction of `start_processing`, `enqueue_payroll` and `SELECT pg_notify`. Without `notify`, the
    pg_notify is left out. The first line picks the next DRAFT payroll (like the API's key lookup, outside
    the transaction)."""
    outbox_sql = sqlfiles.load("outbox")
    if "start_payroll" in outbox_sql:
        statement = _statement(outbox_sql["start_payroll"])
        if not notify:
            statement, found = re.subn(r"pg_notify\([^)]*\)", "NULL", statement)
            assert found == 1, "start_payroll no longer has exactly one pg_notify(...)"
        statement = statement.replace("$1", ":pid").replace("$2", ":eid").replace("$3", "500")
        return f"{PICK_NEXT}\n{statement};\n"
    update = (
        _statement(sqlfiles.load("payrolls")["start_processing"]).replace("$1", ":pid").replace("$2", ":eid")
    )
    insert = _statement(outbox_sql["enqueue_payroll"]).replace("$1", ":pid").replace("$2", "500")
    lines = [PICK_NEXT, "BEGIN;", update + ";", insert + ";"]
    if notify:
        lines.append("SELECT pg_notify('payrun_outbox', :pid);")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


async def run_pgbench(
    conn: Any, dsn: str, owners: list[Any], clients: int, per_client: int, notify: bool, worker_base: int
) -> dict[str, Any]:
    total = clients * per_client
    chosen = [owners[i % len(owners)] for i in range(total)]
    ids = await fixtures.create_payrolls_sql(conn, chosen, 10, first_worker=worker_base, tag="PGB")
    await conn.execute(
        """DROP TABLE IF EXISTS bench_targets; DROP SEQUENCE IF EXISTS bench_seq;
           CREATE TABLE bench_targets (n bigint PRIMARY KEY, payroll_id uuid NOT NULL, employer_id uuid NOT NULL);
           CREATE SEQUENCE bench_seq"""
    )
    await conn.copy_records_to_table(
        "bench_targets", records=[(i + 1, pid, chosen[i]) for i, pid in enumerate(ids)]
    )
    await conn.execute("ANALYZE bench_targets")
    pgbench = postgres.Postgres.get().pgbench()
    assert pgbench, "pgbench not found"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(pgbench_script(notify))
        script = f.name
    try:
        cmd = [
            pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            "2",
            "-t",
            str(per_client),
            "-f",
            script,
            dsn,
        ]
        with processes.child(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            out, err = await asyncio.to_thread(proc.communicate)
    finally:
        os.unlink(script)
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {out[-800:]} {err[-800:]}")
    started = await conn.fetchval(
        "SELECT count(*) FROM payrolls p WHERE p.id = ANY($1::uuid[]) AND p.status = 'PROCESSING' "
        "AND EXISTS (SELECT 1 FROM outbox o WHERE o.payroll_id = p.id)",
        ids,
    )
    if started != total:
        raise RuntimeError(f"pgbench started {started} of {total} payrolls: the script did not do the work")
    return {"tps": float(found.group(1)), "clients": clients, "transactions": total, "notify": notify}


async def drive(
    client: Any,
    api: str,
    queue: collections.deque[Any],
    key_of: dict[Any, str],
    statuses: collections.Counter[str],
    lat: list[float],
) -> None:
    """One client: process the next payroll in the shared queue, one call at a time, until it is empty."""
    while queue:
        pid, owner = queue.popleft()
        t = time.perf_counter()
        async with client.post(f"{api}/payrolls/{pid}/process", headers=traffic.auth(key_of[owner])) as resp:
            await resp.read()
            statuses[str(resp.status)] += 1
        lat.append(time.perf_counter() - t)


async def sustained(opts: registry.Options, reps: int) -> list[dict[str, Any]]:
    calls = 600 if opts.quick else 4000
    per_client = 100 if opts.quick else 400
    runs = []
    async with processes.running_stack(opts, f"{NAME}-sustained", dispatchers=0) as st:
        conn = await db.connect(st.dsn)
        try:
            made = await fixtures.create_employers(conn, SUSTAINED_EMPLOYERS)
            owners = [e for e, _ in made]
            key_of = {e: k for e, k in made}
            worker_base = 0
            for rep in range(1, reps + 1):
                chosen = [owners[i % len(owners)] for i in range(calls)]
                ids = await fixtures.create_payrolls_sql(
                    conn, chosen, 10, first_worker=worker_base, tag="SUS"
                )
                worker_base += calls * 10
                queue = collections.deque(zip(ids, chosen, strict=True))
                statuses: collections.Counter[str] = collections.Counter()
                lat: list[float] = []
                async with traffic.session(SUSTAINED_CLIENTS + 8) as client:
                    await traffic.warm_up(client, st.api, SUSTAINED_CLIENTS)
                    before = st.resources()
                    pg_before = postgres.Postgres.get().cpu_seconds()

                    started = time.perf_counter()
                    await asyncio.gather(
                        *(
                            drive(client, st.api, queue, key_of, statuses, lat)
                            for _ in range(SUSTAINED_CLIENTS)
                        )
                    )
                    elapsed = time.perf_counter() - started
                    after = st.resources()
                    pg_after = postgres.Postgres.get().cpu_seconds()
                st.check_alive()
                api = {
                    "calls": calls,
                    "elapsed_s": elapsed,
                    "rate": calls / elapsed,
                    "p50_s": stats.pct(lat, 50),
                    "p99_s": stats.pct(lat, 99),
                    "non_202": {k: v for k, v in statuses.items() if k != "202"},
                    "api_cpu_ms_per_call": 1000 * (after["api"]["cpu_s"] - before["api"]["cpu_s"]) / calls,
                    "pg_cpu_ms_per_call": 1000 * (pg_after - pg_before) / calls
                    if pg_before is not None and pg_after is not None
                    else None,
                }
                benches = []
                for notify in (False, True):
                    for clients in PGBENCH_CLIENTS:
                        result = await run_pgbench(
                            conn, st.dsn, owners, clients, per_client, notify, worker_base
                        )
                        worker_base += result["transactions"] * 10
                        benches.append(result)
                best = max(b["tps"] for b in benches if not b["notify"])
                best_notify = max(b["tps"] for b in benches if b["notify"])
                runs.append(
                    {
                        "rep": rep,
                        "api": api,
                        "pgbench": benches,
                        "pgbench_best": best,
                        "pgbench_best_notify": best_notify,
                        "share": api["rate"] / best,
                        "share_notify": api["rate"] / best_notify,
                    }
                )
                stats.say(
                    f"sustained run {rep}: API {api['rate']:.0f} process calls/s; pgbench best {best:.0f} tps "
                    f"(with pg_notify {best_notify:.0f}); {100 * api['rate'] / best:.1f} %"
                )
        finally:
            await conn.close()
    return runs


async def run(opts: registry.Options) -> dict[str, Any]:
    reps = opts.reps()
    out: dict[str, Any] = {}
    for n in (100, 1000):
        runs = await simultaneous(opts, n, reps)
        out[n] = runs
        rows = [
            [
                str(r["rep"]),
                f"{r['ok']}/{n}",
                stats.ms(r["p50_s"]),
                stats.ms(r["p99_s"]),
                stats.ms(r["max_s"]),
                stats.ms(r["release_p99_s"]),
                stats.ms(r["makespan_s"]),
                sum(r["non_202"].values()),
                round(r["api_cpu_ms_per_call"], 2),
                stats.fmt(r["pg_cpu_ms_per_call"], 2),
                round(r["client_cpu_ms_per_call"], 2),
                r["opened"],
            ]
            for r in runs
        ]
        m = {
            k: stats.med(r[k] for r in runs)
            for k in (
                "p50_s",
                "p99_s",
                "max_s",
                "release_p99_s",
                "makespan_s",
                "api_cpu_ms_per_call",
                "pg_cpu_ms_per_call",
                "client_cpu_ms_per_call",
            )
        }
        non202 = sum(sum(r["non_202"].values()) for r in runs)
        if len(runs) > 1:
            rows.append(
                [
                    "median",
                    f"{min(r['ok'] for r in runs)}/{n}",
                    stats.ms(m["p50_s"]),
                    stats.ms(m["p99_s"]),
                    stats.ms(m["max_s"]),
                    stats.ms(m["release_p99_s"]),
                    stats.ms(m["makespan_s"]),
                    non202,
                    round(m["api_cpu_ms_per_call"], 2),
                    stats.fmt(m["pg_cpu_ms_per_call"], 2),
                    round(m["client_cpu_ms_per_call"], 2),
                    "",
                ]
            )
        stats.table(
            f"burst: {n} process calls released at one instant (no dispatcher)",
            [
                "run",
                "202s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "p99 from release",
                "last answer ms",
                "non-202",
                "api CPU ms/call",
                "pg CPU ms/call",
                "client CPU ms/call",
                "conns",
            ],
            rows,
        )
        target = 0.1 if n == 100 else 1.0
        registry.record(NAME, f"{n} simultaneous: non-202 answers (all runs)", non202, "", "0", non202 == 0)
        registry.record(
            NAME,
            f"{n} simultaneous: p50 / p99",
            f"{m['p50_s'] * 1000:.1f} / {m['p99_s'] * 1000:.1f}",
            "ms",
            f"p99 < {target * 1000:.0f} ms",
            m["p99_s"] < target,
            note=f"API CPU {m['api_cpu_ms_per_call']:.2f} ms/call, PostgreSQL {m['pg_cpu_ms_per_call']:.2f} ms/call",
        )
        out[f"{n}_median"] = {**m, "non_202": non202}
    registry.DETAILS[NAME] = {"simultaneous": {str(k): v for k, v in out.items() if isinstance(k, int)}}

    runs = await sustained(opts, reps)
    registry.DETAILS[NAME]["sustained"] = runs
    rows = []
    for r in runs:
        a = r["api"]
        rows.append(
            [
                str(r["rep"]),
                round(a["rate"]),
                stats.ms(a["p50_s"]),
                stats.ms(a["p99_s"]),
                sum(a["non_202"].values()),
                round(a["api_cpu_ms_per_call"], 2),
                stats.fmt(a["pg_cpu_ms_per_call"], 2),
                " / ".join(f"{b['tps']:.0f}" for b in r["pgbench"] if not b["notify"]),
                " / ".join(f"{b['tps']:.0f}" for b in r["pgbench"] if b["notify"]),
                round(100 * r["share"], 1),
                round(100 * r["share_notify"], 1),
            ]
        )
    rate = stats.med(r["api"]["rate"] for r in runs)
    best = stats.med(r["pgbench_best"] for r in runs)
    best_n = stats.med(r["pgbench_best_notify"] for r in runs)
    share = stats.med(r["share"] for r in runs)
    share_n = stats.med(r["share_notify"] for r in runs)
    if len(runs) > 1:
        rows.append(
            [
                "median",
                round(rate),
                stats.ms(stats.med(r["api"]["p50_s"] for r in runs)),
                stats.ms(stats.med(r["api"]["p99_s"] for r in runs)),
                sum(sum(r["api"]["non_202"].values()) for r in runs),
                round(stats.med(r["api"]["api_cpu_ms_per_call"] for r in runs), 2),
                stats.fmt(stats.med(r["api"]["pg_cpu_ms_per_call"] for r in runs), 2),
                f"best {best:.0f}",
                f"best {best_n:.0f}",
                round(100 * share, 1),
                round(100 * share_n, 1),
            ]
        )
    stats.table(
        f"burst: sustained process calls ({SUSTAINED_CLIENTS} clients, {SUSTAINED_EMPLOYERS} employers, "
        f"{runs[0]['api']['calls']} payrolls a run) vs pgbench with the same transaction "
        f"(-M prepared, -c {' and '.join(map(str, PGBENCH_CLIENTS))}, -j 2)",
        [
            "run",
            "API calls/s",
            "p50 ms",
            "p99 ms",
            "non-202",
            "api CPU ms/call",
            "pg CPU ms/call",
            f"pgbench tps UPDATE+INSERT (c={'/'.join(map(str, PGBENCH_CLIENTS))})",
            "... + pg_notify",
            "API % of pgbench",
            "% of pgbench w/ notify",
        ],
        rows,
    )
    registry.record(
        NAME,
        "sustained process calls/s vs pgbench (UPDATE + INSERT)",
        round(100 * share, 1),
        "%",
        f">= {100 * TARGET_SHARE:.0f} %",
        share >= TARGET_SHARE,
        note=f"API {rate:.0f}/s, pgbench {best:.0f} tps; with pg_notify in pgbench too: {100 * share_n:.1f} % of {best_n:.0f}",
    )
    m100, m1000 = out["100_median"], out["1000_median"]
    registry.summary(
        f"{NAME}: 100 at once: p50/p99 {stats.ms(m100['p50_s'])}/{stats.ms(m100['p99_s'])} ms, {m100['non_202']} non-202; "
        f"1,000 at once: p50/p99 {stats.ms(m1000['p50_s'])}/{stats.ms(m1000['p99_s'])} ms, {m1000['non_202']} non-202; "
        f"sustained {rate:.0f} process calls/s = {100 * share:.1f} % of pgbench's {best:.0f} tps with the same "
        f"UPDATE + INSERT ({100 * share_n:.1f} % of {best_n:.0f} with pg_notify) (medians of {len(runs)} runs)"
    )
    return out
