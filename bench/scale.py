"""scale: the hundred_users run at 100 x 10, 1,000 x 10 and 10 x 10,000 (employers x workers), to show how
accept latency, drain time and memory grow with the work.

All three at INTASEND_MAX_RPS = SIM_MAX_RPS = 50 (not 10), so that the 3,000 provider requests of 1,000
payrolls take one minute rather than five; the drain is judged against the same bound (requests / limit).
Payrolls are created through POST /payrolls (10,000-item payrolls too)."""

from __future__ import annotations

from typing import Any

from bench import registry, stats
from bench.scenario import Case, run_cases

NAME = "scale"


def cases(opts: registry.Options) -> list[Case]:
    if opts.quick:
        return [
            Case("100x10", 100, 10, rps=100),
            Case("300x10", 300, 10, rps=100),
            Case("2x10000", 2, 10_000, rps=100, create_concurrency=2),
        ]
    return [
        Case("100x10", 100, 10, rps=50),
        Case("1000x10", 1000, 10, rps=50),
        Case("10x10000", 10, 10_000, rps=50, create_concurrency=2),
        # IntaSend paying each batch in 10 s: a batch holds its place in flight through its polls.
        Case("10x10000-slow", 10, 10_000, rps=50, processing_s=10.0, create_concurrency=2),
    ]


async def run(opts: registry.Options) -> list[dict[str, Any]]:
    chosen = [c for c in cases(opts) if not opts.cases or c.label in opts.cases]
    medians = await run_cases(opts, NAME, chosen, opts.reps())
    rows = [
        [
            m["case"],
            m["employers"] * m["workers"],
            f"{m['accepted']}/{m['employers']}",
            stats.ms(m["p50_s"]),
            stats.ms(m["p99_s"]),
            stats.ms(m["max_s"]),
            m["requests"],
            round(m["drain_s"], 1),
            round(m["least_s"], 1),
            round(m["drain_over_least"], 3),
            round(100 * m["utilisation_backlog"], 1),
            m["rejected_429"],
            round(m["api_peak_mib"], 1),
            round(m["dispatcher_peak_mib"], 1),
            round(m["sim_peak_mib"], 1),
            "ok" if m["ledger"]["ok"] else "FAIL",
        ]
        for m in medians
    ]
    stats.table(
        "scale: growth with the work (medians)",
        [
            "case",
            "items",
            "202s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "requests",
            "drain s",
            "least s",
            "drain/least",
            "used %",
            "429s",
            "api MiB",
            "disp MiB",
            "sim MiB",
            "ledger",
        ],
        rows,
    )
    registry.summary(
        f"{NAME}: "
        + "; ".join(
            f"{m['case']}: {m['accepted']}/{m['employers']} accepted, p99 {stats.ms(m['p99_s'])} ms, drain {m['drain_s']:.1f} s "
            f"vs {m['least_s']:.1f} s ({m['drain_over_least']:.3f}x), {m['rejected_429']} 429s, "
            f"api {m['api_peak_mib']:.0f} MiB, dispatcher {m['dispatcher_peak_mib']:.0f} MiB, "
            f"ledger {'ok' if m['ledger']['ok'] else 'FAIL'}"
            for m in medians
        )
    )
    return medians
