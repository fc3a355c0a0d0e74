"""create: POST /payrolls with 10,000 items, one request at a time against the API alone (no dispatcher):
latency of each (p50, max), the API's CPU per request and its peak RSS (VmHWM) after them."""

from __future__ import annotations

import time
from typing import Any

from bench import fixtures, processes, registry, stats, traffic
from shared import db

NAME = "create"
ITEMS = 10_000


async def one_run(opts: registry.Options, rep: int, requests: int) -> dict[str, Any]:
    async with processes.running_stack(opts, f"{NAME}-run{rep}", dispatchers=0) as st:
        conn = await db.connect(st.dsn)
        try:
            ((_, key),) = await fixtures.create_employers(conn, 1)
        finally:
            await conn.close()
        before = st.resources()["api"]
        took = []
        async with traffic.session(4) as client:
            for i in range(requests):
                started = time.perf_counter()
                await traffic.create_payroll_api(client, st.api, key, f"C-{rep}-{i}", i * ITEMS, ITEMS)
                took.append(time.perf_counter() - started)
        after = st.resources()["api"]
    return {
        "rep": rep,
        "p50_s": stats.pct(took, 50),
        "max_s": max(took),
        "api_cpu_s_per_request": (after["cpu_s"] - before["cpu_s"]) / requests,
        "api_peak_mib": after["peak_mib"],
    }


async def run(opts: registry.Options) -> list[dict[str, Any]]:
    requests = 3 if opts.quick else 10
    runs = [await one_run(opts, rep, requests) for rep in range(1, opts.reps() + 1)]
    rows = [
        [
            str(r["rep"]),
            stats.ms(r["p50_s"]),
            stats.ms(r["max_s"]),
            round(1000 * r["api_cpu_s_per_request"]),
            round(r["api_peak_mib"], 1),
        ]
        for r in runs
    ]
    p50 = stats.med(r["p50_s"] for r in runs)
    peak = stats.med(r["api_peak_mib"] for r in runs)
    rows.append(["median", stats.ms(p50), "", "", round(peak, 1)])
    stats.table(
        f"create: POST /payrolls with {ITEMS:,} items, {requests} one after another per run (API alone)",
        ["run", "p50 ms", "max ms", "API CPU ms/request", "API peak MiB"],
        rows,
    )
    registry.record(NAME, f"POST /payrolls with {ITEMS:,} items: p50", round(p50 * 1000), "ms")
    registry.record(NAME, f"API peak RSS after {requests} such requests", round(peak, 1), "MiB")
    registry.DETAILS[NAME] = runs
    registry.summary(
        f"{NAME}: POST /payrolls with {ITEMS:,} items: p50 {p50 * 1000:.0f} ms, API peak {peak:.0f} MiB "
        f"(medians of {len(runs)} runs)"
    )
    return runs
