"""throughput: payouts per second with the provider's limit lifted (INTASEND_MAX_RPS=100000, SIM_MAX_RPS=0,
SIM_PROCESSING_S=0, SIM_LATENCY_MS=0), through one dispatcher and through two, each one-dispatcher run
followed on the same server by pgqueuer draining as many no-op jobs at batch 100 (bench/pgqueuer_drain.py);
CPU per payout of the dispatcher plus PostgreSQL; where one dispatcher's time goes (py-spy, once, in an
extra run left out of the medians); and claim latency with 10,000 and with 1,000,000 done rows in the
outbox.

Payrolls of 10,000 workers are written in SQL (POST /payrolls would validate 10,000 items each and only slow
the setup), then all processed through the API at one instant; payouts per second = items paid / (last
outbox row done - first outbox row written), on the database clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from typing import Any

import asyncpg

from bench import (
    fixtures,
    host,
    pgqueuer_drain,
    postgres,
    processes,
    profiling,
    registry,
    simlog,
    stats,
    traffic,
)
from shared import db, outbox, sqlfiles
from shared.settings import Settings
from testkit.stack import ROOT

NAME = "throughput"
LIFTED = {"INTASEND_MAX_RPS": "100000", "SIM_MAX_RPS": "0", "SIM_PROCESSING_S": "0", "SIM_LATENCY_MS": "0"}
TARGET_PER_S = 5000
TARGET_VS_PGQUEUER = 1.0  # payouts/s over pgqueuer's no-op jobs/s, same server, same run
TARGET_CPU_MS = 0.145 / 3  # dispatcher + PostgreSQL CPU per payout (issue 11: a third of 0.145 ms)


async def pgqueuer_run(jobs: int) -> dict[str, Any]:
    async with postgres.fresh_database("payrun_bench_pgq") as dsn:
        return await pgqueuer_drain.drain(dsn, jobs)


async def one_run(
    opts: registry.Options, dispatchers: int, payrolls: int, workers: int, rep: int, profile_to: Any = None
) -> dict[str, Any]:
    label = f"{NAME}-{dispatchers}d-run{rep}{'-profiled' if profile_to else ''}"
    async with processes.running_stack(opts, label, dispatchers=dispatchers, **LIFTED) as st:
        conn = await db.connect(st.dsn)
        try:
            ((employer, key),) = await fixtures.create_employers(conn, 1)
            ids = await fixtures.create_payrolls_sql(conn, [employer] * payrolls, workers, tag="TP")
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        spy_cmd = None
        if profile_to is not None:
            spy_cmd = [
                profiling.py_spy(),
                "record",
                "--pid",
                str(st.pid(st.dispatchers()[0])),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(profile_to),
                "--nonblocking",
                # Only samples holding the GIL: without it, a thread preempted inside send() on a busy machine
                # (on loopback the kernel hands the bytes to the receiver in that call) counts as CPU.
                "--gil",
            ]
        before, pg_before, host_before = (
            st.resources(),
            postgres.Postgres.get().cpu_seconds(),
            host.host_busy_s(),
        )
        with (
            processes.child(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if spy_cmd
            else contextlib.nullcontext()
        ) as spy:
            if spy is not None:
                await asyncio.sleep(1.0)  # py-spy attached
            async with traffic.session(payrolls + 8) as client:
                await traffic.warm_up(client, st.api, payrolls)
                _, answers = await traffic.release_at_once(
                    [
                        traffic.post(client, f"{st.api}/payrolls/{pid}/process", traffic.auth(key))
                        for pid in ids
                    ]
                )
            assert all(a.status == 202 for a in answers), [a.status for a in answers]
            conn = await asyncpg.connect(st.dsn)
            try:
                deadline = time.monotonic() + 60 + payrolls * workers / 200
                while await conn.fetchval("SELECT count(*) FROM payrolls WHERE status = 'PROCESSING'"):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{label}: payrolls still PROCESSING; logs in {st.stack.log_dir}")
                    st.check_alive()
                    await asyncio.sleep(0.1)
                after, pg_after, host_s = (
                    st.resources(),
                    postgres.Postgres.get().cpu_seconds(),
                    host.host_busy_s() - host_before,
                )
                t = await conn.fetchrow(
                    """SELECT extract(epoch FROM min(created_at))::float8 AS first_written,
                              extract(epoch FROM min(processed_at))::float8 AS first_done,
                              extract(epoch FROM max(processed_at))::float8 AS last_done,
                              count(*) AS rows, count(*) FILTER (WHERE status <> 'done') AS not_done,
                              sum(attempts) AS attempts
                       FROM outbox"""
                )
                done_at = [
                    r["t"]
                    for r in await conn.fetch(
                        """SELECT extract(epoch FROM processed_at)::float8 AS t
                       FROM outbox, jsonb_array_elements(payload->'item_ids') ORDER BY 1"""
                    )
                ]
                stages = await conn.fetchrow(
                    """SELECT avg(extract(epoch FROM b.created_at - o.created_at))::float8 AS to_initiated,
                              avg(extract(epoch FROM b.approved_at - b.created_at))::float8 AS to_approved,
                              avg(extract(epoch FROM b.finished_at - b.approved_at))::float8 AS to_settled,
                              avg(extract(epoch FROM o.processed_at - o.created_at))::float8 AS row_total
                       FROM outbox o JOIN provider_batches b ON b.outbox_id = coalesce(o.carried_by, o.id)"""
                )
                items = await conn.fetchval("SELECT count(*) FROM payroll_items WHERE status = 'PAID'")
            finally:
                await conn.close()
        counted = await st.sim_stats()
        ledger = await simlog.ledger_check(st.dsn, st.sim)
        costs = await sql_costs(st.dsn) if profile_to is not None else []
    if spy is not None and spy.returncode not in (0, None, -2):
        stats.say(f"py-spy exited {spy.returncode}: {spy.stderr.read()[-300:] if spy.stderr else ''}")
    elapsed = t["last_done"] - t["first_written"]
    # The middle 80 % of the payouts (from the 10th to the 90th percentile of their completion times): the
    # rate once the pipeline is full and before it empties.
    t10, t90 = stats.pct(done_at, 10), stats.pct(done_at, 90)
    disp = [n for n in after if n.startswith("dispatcher")]
    cpu = {
        n: after[n]["cpu_s"] - before[n]["cpu_s"]
        for n in after
        if "cpu_s" in after[n] and "cpu_s" in before.get(n, {})
    }
    return {
        "dispatchers": dispatchers,
        "rep": rep,
        "items": items,
        "rows": t["rows"],
        "not_done": t["not_done"],
        "claims": t["attempts"],
        "elapsed_s": elapsed,
        "per_s": items / elapsed,
        "steady_per_s": 0.8 * len(done_at) / (t90 - t10) if t90 > t10 else float("nan"),
        "batches_per_s": t["rows"] / elapsed,
        "requests": counted["requests"],
        "requests_per_batch": counted["requests"] / t["rows"],
        "rejected_429": counted["rejected_429_pace"] + counted["rejected_429_storm"],
        "stages_s": dict(stages),
        "ledger": ledger,
        "cpu_s": {
            "dispatchers": sum(cpu.get(n, 0.0) for n in disp),
            "sim": cpu.get("sim", 0.0),
            "api": cpu.get("api", 0.0),
            "postgres": (pg_after - pg_before) if pg_before is not None and pg_after is not None else None,
            "whole_machine": host_s,
        },
        "dispatcher_peak_mib": max(after[n].get("peak_mib", 0.0) for n in disp),
        "sql_costs": costs,
        "api_peak_mib": after.get("api", {}).get("peak_mib"),
        "sim_peak_mib": after.get("sim", {}).get("peak_mib"),
    }


async def sql_costs(dsn: str, repeat: int = 5) -> list[tuple[str, float]]:
    """The dispatcher's per-batch statements for one real 500-item batch of the run just finished, each
    replayed in a transaction that is rolled back (its preconditions set up untimed, and committed, as
    they are when the dispatcher runs it): median wall time."""
    q = sqlfiles.load("batches")
    conn = await db.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT o.id, o.payroll_id, o.payload, b.id AS batch_id, b.initiate_response, b.initiate_body,
                      b.last_status
               FROM outbox o JOIN provider_batches b ON b.outbox_id = o.id ORDER BY o.id LIMIT 1"""
        )
        ids = [int(i) for i in row["payload"]["item_ids"]]
        refs = [
            r["request_reference_id"]
            for r in await conn.fetch(
                "SELECT request_reference_id FROM payroll_items i JOIN unnest($1::bigint[]) AS w(id) ON w.id = i.id",
                ids,
            )
        ]
        batch_id, n = row["batch_id"], len(ids)

        async def fresh_outbox_row() -> Any:
            return await conn.fetchval(
                "INSERT INTO outbox (payroll_id, kind, payload) VALUES ($1, 'send_batch', $2) RETURNING id",
                row["payroll_id"],
                row["payload"],
            )

        async def held_row() -> uuid.UUID:
            token = uuid.uuid4()
            await conn.execute(
                "UPDATE outbox SET status = 'in_progress', lease_token = $2, locked_by = 'bench', processed_at = NULL, "
                "locked_until = now() + interval '1 minute' WHERE id = $1",
                row["id"],
                token,
            )
            return token

        async def items_to(status: str) -> None:
            await conn.execute(
                "UPDATE payroll_items SET status = $2 WHERE id = ANY($1::bigint[])", ids, status
            )

        async def items_before_approving() -> None:  # PENDING, not linked to any batch yet
            await conn.execute(
                "UPDATE payroll_items SET status = 'PENDING', provider_batch_id = NULL, request_reference_id = NULL "
                "WHERE id = ANY($1::bigint[])",
                ids,
            )

        steps: list[tuple[str, Any, Any]] = [
            (f"batch_items: read the {n} items", None, lambda _: conn.fetch(q["batch_items"], ids)),
            (
                "insert_batch: store the initiate answer (its fields as jsonb, its bytes)",
                fresh_outbox_row,
                lambda oid: conn.fetchval(
                    q["insert_batch"],
                    oid,
                    row["payroll_id"],
                    f"bench-{oid}",
                    "nonce",
                    row["initiate_response"],
                    row["initiate_body"],
                    ids,
                    refs,
                ),
            ),
            (
                f"submit_items: {n} items linked and SUBMITTED at approving",
                items_before_approving,
                lambda _: conn.execute(q["submit_items"], batch_id),
            ),
            (
                "record_poll: a status answer that is not final (its code only, fenced)",
                held_row,
                lambda token: conn.fetchval(q["record_poll"], batch_id, None, "BP110", row["id"], token),
            ),
            (
                "record_final_status: the final status answer, kept once (json)",
                None,
                lambda _: conn.execute(
                    q["record_final_status"], batch_id, "finished", row["last_status"], "BC100"
                ),
            ),
            (
                f"settle_items: {n} items PAID",
                lambda: items_to("SUBMITTED"),
                lambda _: conn.execute(
                    q["settle_items"],
                    [
                        {"item_id": i, "status": "PAID", "provider_reference": r}
                        for i, r in zip(ids, refs, strict=True)
                    ],
                ),
            ),
            (
                "payroll_open_rows: rows still open for the payroll",
                None,
                lambda _: conn.fetchval(q["payroll_open_rows"], row["payroll_id"]),
            ),
        ]
        out = []
        for label, setup, stmt in steps:
            times = []
            for _ in range(repeat):
                # The set-up commits on its own (the run is over; its database is dropped next): rows written
                # earlier in the same transaction would make PostgreSQL check their foreign keys again.
                arg = await setup() if setup else None
                tx = conn.transaction()
                await tx.start()
                try:
                    t0 = time.perf_counter()
                    await stmt(arg)
                    times.append(time.perf_counter() - t0)
                finally:
                    await tx.rollback()
            out.append((label, stats.med(times)))
        tx = conn.transaction()
        await tx.start()
        try:
            t0 = time.perf_counter()
            await conn.execute("SELECT 1")
            rt = time.perf_counter() - t0
        finally:
            await tx.rollback()
        out.append(("(a round trip: SELECT 1)", rt))
        return out
    finally:
        await conn.close()


def report_profile(path: Any, run: dict[str, Any]) -> dict[str, Any]:
    by_self, by_total, samples = profiling.summarise_collapsed(path, top=15)
    if not samples:
        stats.say("the profile is empty (py-spy could not sample the dispatcher)")
        return {}
    stats.table(
        f"throughput: where one dispatcher's CPU goes (py-spy --gil, {samples} samples at 200 Hz, "
        f"{run['items']:,} payouts at {run['per_s']:,.0f}/s in the profiled run): top functions by own time",
        ["own %", "function"],
        [[f"{100 * s:.1f}", f] for f, s in by_self],
    )
    interesting = (
        "BatchFlow.run",
        "BatchFlow._initiate",
        "BatchFlow._approve",
        "BatchFlow._follow",
        "IntaSendClient",
        "parse_batch",
        "match_references",
        "read_status",
        "persist_initiated",
        "settle (shared/batches.py)",
        "items (shared/batches.py)",
        "_Fenced",
        "ProviderRateLimiter.acquire",
        "Connection.reset",
        "_SelectorSocketTransport.write",
        "json",
        "structlog",
        "BoundLogger",
        "Dispatcher._claim_loop",
        "Dispatcher._heartbeat",
        "record_poll",
        "set_stage",
        "log_attempt",
        "ClientSession._request",
        "Pool.acquire",
        "PoolConnectionHolder.release",
        "copy",
        "encode",
        "decode",
    )
    rows = [[f"{100 * s:.1f}", f] for f, s in by_total if any(k in f for k in interesting) and s >= 0.01][:30]
    stats.table(
        "throughput: the same profile, inclusive time of payrun's steps and of the libraries under them",
        ["incl. %", "function"],
        rows,
    )
    return {"samples": samples, "self": by_self, "total": [x for x in by_total if x[1] >= 0.01][:80]}


async def claim_latency(opts: registry.Options) -> dict[str, Any]:
    """claim_batch (shared.outbox.claim, limit 32) with 200 pending rows ready, timed in a transaction that is
    rolled back (so each call sees the same rows), with 10,000 and then 1,000,000 done rows in the table."""
    sizes = (10_000, 100_000) if opts.quick else (10_000, 1_000_000)
    iterations = 100 if opts.quick else 500
    out: dict[str, Any] = {}
    async with postgres.fresh_database() as dsn:
        conn = await db.connect(dsn)
        try:
            ((employer, _),) = await fixtures.create_employers(conn, 1)
            await conn.execute(
                """INSERT INTO payrolls (id, employer_id, reference, currency, status, item_count, total_amount)
                   SELECT gen_random_uuid(), $1, 'DONE-' || g, 'KES', 'COMPLETED', 500, 50000
                   FROM generate_series(1, 1000) g""",
                employer,
            )
            payroll_ids = [r["id"] for r in await conn.fetch("SELECT id FROM payrolls ORDER BY reference")]
            have = 0
            for size in sizes:
                started = time.perf_counter()
                await conn.execute(
                    """INSERT INTO outbox (payroll_id, kind, payload, status, attempts, created_at, available_at, processed_at)
                       SELECT ($1::uuid[])[1 + g % 1000], 'send_batch',
                              jsonb_build_object('provider', 'MPESA-B2C', 'currency', 'KES', 'item_ids', jsonb_build_array(g)),
                              'done', 1, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
                       FROM generate_series($2::bigint + 1, $3::bigint) g""",
                    payroll_ids,
                    have,
                    size,
                )
                fill_s = time.perf_counter() - started
                have = size
                await conn.execute("DELETE FROM outbox WHERE status <> 'done'")
                await conn.execute(
                    """INSERT INTO outbox (payroll_id, kind, payload)
                       SELECT ($1::uuid[])[1 + g % 1000], 'send_batch',
                              jsonb_build_object('provider', 'MPESA-B2C', 'currency', 'KES', 'item_ids', jsonb_build_array(g))
                       FROM generate_series(1, 200) g""",
                    payroll_ids,
                )
                await conn.execute("VACUUM ANALYZE outbox")
                timings: list[float] = []
                next_due: list[float] = []
                for _ in range(iterations):
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        t0 = time.perf_counter()
                        claimed = await outbox.claim(conn, worker="bench", lease_s=30, limit=32)
                        timings.append(time.perf_counter() - t0)
                        assert len(claimed) == 32, len(claimed)
                    finally:
                        await tx.rollback()  # the next call finds the same 200 pending rows
                for _ in range(iterations):
                    t0 = time.perf_counter()
                    await conn.fetchval(_next_due_sql())
                    next_due.append(time.perf_counter() - t0)
                plan = await conn.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + _claim_sql(), "bench", 30.0, 32, [], 0
                )
                backlog_t0 = time.perf_counter()
                await conn.fetchrow(_BACKLOG_SQL)
                backlog_s = time.perf_counter() - backlog_t0
                buffers = _plan_buffers(plan)
                out[str(size)] = {
                    "done_rows": size,
                    "fill_s": fill_s,
                    "claim_p50_s": stats.pct(timings, 50),
                    "claim_p99_s": stats.pct(timings, 99),
                    "next_due_p50_s": stats.pct(next_due, 50),
                    "plan_buffers": buffers,
                    "plan_indexes": sorted(_plan_indexes(plan)),
                    "metrics_backlog_query_s": backlog_s,
                }
                stats.say(
                    f"claim with {size:,} done rows: p50 {stats.pct(timings, 50) * 1000:.3f} ms (filled in {fill_s:.1f} s)"
                )
        finally:
            await conn.close()
    return out


def _claim_sql() -> str:
    from shared import sqlfiles

    return sqlfiles.load("outbox")["claim_batch"]


def _next_due_sql() -> str:
    from shared import sqlfiles

    return sqlfiles.load("outbox")["next_due"]


def _backlog_sql() -> str:
    from shared import metrics

    return str(getattr(metrics, "_BACKLOG", "SELECT 1"))


_BACKLOG_SQL = _backlog_sql()


def _plan_buffers(plan: Any) -> int:
    doc = json.loads(plan) if isinstance(plan, str) else plan
    top = doc[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def _plan_indexes(plan: Any) -> set[str]:
    doc = json.loads(plan) if isinstance(plan, str) else plan
    found: set[str] = set()

    def walk(node: dict[str, Any]) -> None:
        if "Index Name" in node:
            found.add(f"{node['Node Type']} on {node['Index Name']}")
        elif node.get("Node Type") == "Seq Scan":
            found.add(f"Seq Scan on {node.get('Relation Name')}")
        for sub in node.get("Plans", []):
            walk(sub)

    walk(doc[0]["Plan"])
    return found


def _report_against_pgqueuer(
    runs: list[dict[str, Any]], pgq_runs: list[dict[str, Any]], pgq_version: str
) -> None:
    def cpu_ms(r: dict[str, Any]) -> float:
        pg = r["cpu_s"]["postgres"]
        return 1000 * (r["cpu_s"]["dispatchers"] + (pg or 0.0)) / r["items"]

    rows = []
    for r, q in zip(runs, pgq_runs, strict=True):
        pgq_ms = 1000 * (q["cpu_s"] + (q["postgres_cpu_s"] or 0.0)) / q["jobs"]
        rows.append(
            [
                str(r["rep"]),
                round(r["per_s"]),
                round(q["per_s"]),
                f"{r['per_s'] / q['per_s']:.2f}",
                f"{cpu_ms(r):.4f}",
                f"{pgq_ms:.4f}",
            ]
        )
    ratio = stats.med(r["per_s"] / q["per_s"] for r, q in zip(runs, pgq_runs, strict=True))
    m_cpu = stats.med(cpu_ms(r) for r in runs)
    rows.append(
        [
            "median",
            round(stats.med(r["per_s"] for r in runs)),
            round(stats.med(q["per_s"] for q in pgq_runs)),
            f"{ratio:.2f}",
            f"{m_cpu:.4f}",
            "",
        ]
    )
    stats.table(
        f"throughput: payrun (one dispatcher) beside pgqueuer {pgq_version} draining as many no-op jobs at "
        f"batch {pgqueuer_drain.BATCH}, same server, right after each run",
        [
            "run",
            "payouts/s",
            "pgqueuer jobs/s",
            "ratio",
            "payrun CPU ms/payout (dispatcher + postgres)",
            "pgqueuer CPU ms/job (worker + postgres)",
        ],
        rows,
    )
    registry.record(
        NAME,
        "payouts/s over pgqueuer's no-op jobs/s (batch 100)",
        round(ratio, 2),
        "x",
        f">= {TARGET_VS_PGQUEUER}",
        ratio >= TARGET_VS_PGQUEUER,
    )
    registry.record(
        NAME,
        "CPU per payout, dispatcher + PostgreSQL",
        round(m_cpu, 4),
        "ms",
        f"<= {TARGET_CPU_MS:.4f}",
        m_cpu <= TARGET_CPU_MS,
    )


async def run(opts: registry.Options) -> dict[str, Any]:
    payrolls, workers = (4, 10_000) if opts.quick else (8, 10_000)
    reps = opts.reps()
    results: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    if opts.profile and profiling.py_spy():
        path = registry.RESULTS_DIR / "throughput-dispatcher.pyspy.txt"
        registry.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        run0 = await one_run(opts, 1, 4, workers, 0, profile_to=path)  # smaller: py-spy shares the cores
        if path.exists():
            profile = report_profile(path, run0)
            profile["run"] = {k: run0[k] for k in ("items", "per_s", "elapsed_s", "cpu_s")}
        if run0["sql_costs"]:
            stats.table(
                "throughput: the dispatcher's statements for one 500-item batch, replayed (median of 5, rolled back)",
                ["statement", "ms"],
                [[label, f"{s * 1000:.2f}"] for label, s in run0["sql_costs"]],
            )
            profile["sql_costs"] = run0["sql_costs"]
        cpu = run0["cpu_s"]
        stats.table(
            "throughput: CPU seconds per 1,000 payouts in the profiled run (all processes share the 2 cores)",
            ["dispatcher", "simulator", "postgres", "whole machine"],
            [
                [
                    f"{1000 * cpu[k] / run0['items']:.2f}" if cpu[k] is not None else "-"
                    for k in ("dispatchers", "sim", "postgres", "whole_machine")
                ]
            ],
        )
        stats.say(f"raw profile (collapsed stacks): {path.relative_to(ROOT)}")
    elif opts.profile:
        stats.say(
            "py-spy is not installed (pip install py-spy into the venv to profile); no profile this time"
        )
    pgq_version = pgqueuer_drain.ensure_installed()
    pgq_runs: list[dict[str, Any]] = []
    for dispatchers in (1,) if opts.one_dispatcher else (1, 2):
        runs = []
        for rep in range(1, reps + 1):
            runs.append(await one_run(opts, dispatchers, payrolls, workers, rep))
            if dispatchers == 1:  # side by side: the same number of no-op jobs right after each run
                pgq_runs.append(await pgqueuer_run(runs[-1]["items"]))
        results[str(dispatchers)] = runs
        rows = [
            [
                str(r["rep"]),
                r["items"],
                round(r["elapsed_s"], 2),
                round(r["per_s"]),
                round(r["steady_per_s"]),
                round(r["batches_per_s"], 1),
                r["requests"],
                r["rejected_429"],
                " / ".join(
                    stats.fmt(r["stages_s"][k], 2) for k in ("to_initiated", "to_approved", "to_settled")
                ),
                " / ".join(
                    stats.fmt(r["cpu_s"][k], 1) for k in ("dispatchers", "sim", "postgres", "whole_machine")
                ),
                round(r["dispatcher_peak_mib"], 1),
                "ok" if r["ledger"]["ok"] else "FAIL",
            ]
            for r in runs
        ]
        m_per_s = stats.med(r["per_s"] for r in runs)
        m_steady = stats.med(r["steady_per_s"] for r in runs)
        if len(runs) > 1:
            rows.append(
                [
                    "median",
                    "",
                    round(stats.med(r["elapsed_s"] for r in runs), 2),
                    round(m_per_s),
                    round(m_steady),
                    round(stats.med(r["batches_per_s"] for r in runs), 1),
                    "",
                    "",
                    "",
                    "",
                    round(stats.med(r["dispatcher_peak_mib"] for r in runs), 1),
                    "",
                ]
            )
        stats.table(
            f"throughput: {dispatchers} dispatcher(s), limit lifted, {payrolls} payrolls x {workers:,} workers "
            f"in 500-item batches (DISPATCHER_CONCURRENCY={Settings.from_env(os.environ).dispatcher_concurrency})",
            [
                "run",
                "payouts",
                "s",
                "payouts/s",
                "middle 80 %/s",
                "batches/s",
                "provider req",
                "429s",
                "row: written→initiated / →approved / →settled s",
                "CPU s: dispatchers / sim / postgres / machine",
                "disp MiB",
                "ledger",
            ],
            rows,
        )
        ok = all(r["ledger"]["ok"] for r in runs)
        if dispatchers == 1:
            _report_against_pgqueuer(runs, pgq_runs, pgq_version)
            registry.record(
                NAME,
                "payouts/s through one dispatcher (limit lifted)",
                round(m_per_s),
                "/s",
                f">= {TARGET_PER_S:,}",
                m_per_s >= TARGET_PER_S,
                note=f"{m_steady:,.0f}/s over the middle 80 % of the payouts",
            )
        else:
            registry.record(
                NAME,
                "payouts/s through two dispatchers (limit lifted)",
                round(m_per_s),
                "/s",
                note=f"{m_steady:,.0f}/s over the middle 80 % of the payouts",
            )
        registry.record(
            NAME, f"ledger with {dispatchers} dispatcher(s)", "ok" if ok else "FAIL", "", "ok", ok
        )
    results["pgqueuer"] = pgq_runs
    if opts.one_dispatcher:
        registry.DETAILS[NAME] = {"runs": results, "profile": profile}
        one = stats.med(r["per_s"] for r in results["1"])
        registry.summary(
            f"{NAME}: limit lifted, {one:,.0f} payouts/s through one dispatcher (medians of {reps} runs)"
        )
        return results
    claim = await claim_latency(opts)
    rows = [
        [
            f"{v['done_rows']:,}",
            f"{v['claim_p50_s'] * 1000:.3f}",
            f"{v['claim_p99_s'] * 1000:.3f}",
            f"{v['next_due_p50_s'] * 1000:.3f}",
            v["plan_buffers"],
            ", ".join(v["plan_indexes"]),
            f"{v['metrics_backlog_query_s'] * 1000:.1f}",
        ]
        for v in claim.values()
    ]
    stats.table(
        "throughput: claim_batch (limit 32, 200 pending rows) against the number of done rows",
        [
            "done rows",
            "claim p50 ms",
            "claim p99 ms",
            "next-due query p50 ms",
            "buffers touched",
            "plan",
            "/metrics backlog query ms",
        ],
        rows,
    )
    small, large = list(claim.values())
    growth = large["claim_p50_s"] / small["claim_p50_s"]
    registry.record(
        NAME,
        f"claim p50 with {small['done_rows']:,} → {large['done_rows']:,} done rows",
        f"{small['claim_p50_s'] * 1000:.2f} → {large['claim_p50_s'] * 1000:.2f}",
        "ms",
        "does not grow",
        growth < 1.5,
        note=f"x{growth:.2f}; buffers {small['plan_buffers']} → {large['plan_buffers']}",
    )
    registry.DETAILS[NAME] = {"runs": results, "claim": claim, "profile": profile}
    one = stats.med(r["per_s"] for r in results["1"])
    two = stats.med(r["per_s"] for r in results["2"])
    registry.summary(
        f"{NAME}: limit lifted, {one:,.0f} payouts/s through one dispatcher, {two:,.0f}/s through two "
        f"(target >= {TARGET_PER_S:,} through one); claim p50 {small['claim_p50_s'] * 1000:.2f} ms with "
        f"{small['done_rows']:,} done rows, {large['claim_p50_s'] * 1000:.2f} ms with {large['done_rows']:,} "
        f"(medians of {reps} runs)"
    )
    return results
