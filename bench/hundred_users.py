"""hundred_users: 100 employers x 10 workers, all 100 process calls released at the same instant, then every
employer's UI polls its status endpoint until the payroll is final. INTASEND_MAX_RPS = SIM_MAX_RPS = 10.

Prints the 202 count, p50/p99/max process latency, upstream 429s, provider requests (total and per payroll),
the most requests in any one-second window against the limit, the share of the limit used, the drain time
against the least time those requests take at the limit, the ledger check, and peak RSS. Then the rate
limiter alone (dispatcher_service.limiter.ProviderRateLimiter on a bench database, no HTTP), to tell its own
pacing from the rest of the dispatcher's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import postgres, registry, stats
from bench.scenario import Case, run_cases
from dispatcher_service.limiter import ProviderRateLimiter
from shared import db

NAME = "hundred_users"


def cases(opts: registry.Options) -> list[Case]:
    return [Case("100x10", employers=100, workers=10, rps=10)]


class _NoLocalBucket:
    async def acquire(self) -> None:
        return None


async def limiter_alone(opts: registry.Options) -> list[dict[str, Any]]:
    """8 tasks acquiring send slots as fast as the limiter hands them out: the rate it achieves against
    max_rps, and the most slots in any 1 s. Also, as a what-if, the same limiter with its in-process
    AsyncLimiter replaced by a no-op in this process only (the PostgreSQL GCRA row alone)."""
    out = []
    async with postgres.fresh_database() as dsn:
        pool = await db.create_pool(dsn, min_size=2, max_size=4)
        try:
            for rps, n in ((10, 40 if opts.quick else 80), (50, 150 if opts.quick else 300)):
                for variant in ("as shipped", "what-if: no in-process AsyncLimiter"):
                    limiter = ProviderRateLimiter(pool, max_rps=rps)
                    if variant != "as shipped":
                        limiter._local = _NoLocalBucket()  # type: ignore[assignment]
                    await pool.execute(
                        "UPDATE provider_rate SET next_slot = '-infinity', paused_until = '-infinity'"
                    )
                    stamps: list[float] = []

                    async def take(
                        lim: ProviderRateLimiter = limiter, got: list[float] = stamps, want: int = n
                    ) -> None:
                        while len(got) < want:
                            send = await lim.acquire()
                            got.append(time.perf_counter())
                            await lim.answered(send)

                    await asyncio.gather(*(take() for _ in range(8)))
                    stamps = sorted(stamps)[:n]
                    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
                    rate = (n - 1) / (stamps[-1] - stamps[0])
                    out.append(
                        {
                            "max_rps": rps,
                            "variant": variant,
                            "rate": rate,
                            "share": rate / rps,
                            "max_in_1s": stats.max_in_window(stamps),
                            "median_gap_s": gaps[len(gaps) // 2],
                            "min_gap_s": gaps[0],
                        }
                    )
        finally:
            await pool.close()
    stats.table(
        "hundred_users: the rate limiter alone (8 tasks taking slots, no HTTP, no other load)",
        [
            "max_rps",
            "limiter",
            "slots/s",
            "% of max_rps",
            "most in any 1 s",
            "median gap ms",
            "smallest gap ms",
        ],
        [
            [
                r["max_rps"],
                r["variant"],
                round(r["rate"], 2),
                round(100 * r["share"], 1),
                r["max_in_1s"],
                round(r["median_gap_s"] * 1000, 1),
                round(r["min_gap_s"] * 1000, 1),
            ]
            for r in out
        ],
    )
    for r in out:
        registry.record(
            NAME,
            f"limiter alone at {r['max_rps']} rps, {r['variant']}",
            round(100 * r["share"], 1),
            "% of max_rps",
            note=f"median gap {r['median_gap_s'] * 1000:.1f} ms",
        )
    return out


async def run(opts: registry.Options) -> list[dict[str, Any]]:
    (m,) = await run_cases(opts, NAME, cases(opts), opts.reps())
    registry.DETAILS.setdefault(NAME + "_limiter", await limiter_alone(opts))
    registry.summary(
        f"{NAME}: {m['accepted']}/100 accepted, process p50/p99/max {stats.ms(m['p50_s'])}/{stats.ms(m['p99_s'])}/"
        f"{stats.ms(m['max_s'])} ms, {m['rejected_429']} upstream 429s, {m['requests_per_payroll']:.2f} provider "
        f"requests per payroll, at most {m['max_in_any_window']}/{m['rps']} in any 1 s, "
        f"{100 * m['utilisation_backlog']:.1f}% of the limit used during the backlog, drain {m['drain_s']:.1f} s vs {m['least_s']:.1f} s "
        f"least ({m['drain_over_least']:.3f}x), ledger {'ok' if m['ledger']['ok'] else 'FAIL'} "
        f"(medians of {len(registry.DETAILS[NAME]['100x10'])} runs)"
    )
    return [m]
