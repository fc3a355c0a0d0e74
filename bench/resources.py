"""resources: peak RSS (VmHWM, from /proc/<pid>/status) of the API and of each dispatcher during the runs
above, per benchmark and case. Run alone (`python -m bench resources`), it runs one hundred_users case
first to have something to report."""

from __future__ import annotations

from typing import Any

from bench import registry, stats
from bench.scenario import Case, run_cases

NAME = "resources"


def _rows() -> list[list[Any]]:
    rows: list[list[Any]] = []
    for bench in ("hundred_users", "scale"):
        for case, runs in registry.DETAILS.get(bench, {}).items():
            rows.append(
                [
                    bench,
                    case,
                    len(runs),
                    max(r["api_peak_mib"] or 0 for r in runs),
                    max(r["dispatcher_peak_mib"] or 0 for r in runs),
                    max(r["sim_peak_mib"] or 0 for r in runs),
                ]
            )
    for n, runs in registry.DETAILS.get("burst", {}).get("simultaneous", {}).items():
        rows.append(
            [
                "burst",
                f"{n} at once (no dispatcher)",
                len(runs),
                max(r["api_peak_mib"] or 0 for r in runs),
                None,
                None,
            ]
        )
    for d, runs in registry.DETAILS.get("throughput", {}).get("runs", {}).items():
        rows.append(
            [
                "throughput",
                f"{d} dispatcher(s), limit lifted",
                len(runs),
                max(r["api_peak_mib"] or 0 for r in runs),
                max(r["dispatcher_peak_mib"] or 0 for r in runs),
                max(r["sim_peak_mib"] or 0 for r in runs),
            ]
        )
    return rows


async def run(opts: registry.Options) -> list[list[Any]]:
    if not _rows():
        stats.say("no benchmark ran before this one: running hundred_users once to measure")
        await run_cases(opts, "hundred_users", [Case("100x10", employers=100, workers=10, rps=50)], 1)
    rows = _rows()
    stats.table(
        "resources: peak RSS (VmHWM) in MiB, the largest over the runs of each case",
        ["bench", "case", "runs", "api", "dispatcher (each)", "simulator"],
        rows,
    )
    api = max(r[3] for r in rows)
    disp = max((r[4] for r in rows if r[4] is not None), default=0.0)
    worst_api = next(r for r in rows if r[3] == api)
    worst_disp = next((r for r in rows if r[4] == disp), rows[0])
    registry.record(
        NAME,
        "peak RSS of the API (largest case)",
        round(api, 1),
        "MiB",
        note=f"{worst_api[0]} {worst_api[1]}",
    )
    registry.record(
        NAME,
        "peak RSS of one dispatcher (largest case)",
        round(disp, 1),
        "MiB",
        note=f"{worst_disp[0]} {worst_disp[1]}",
    )
    registry.DETAILS[NAME] = rows
    registry.summary(
        f"{NAME}: peak RSS of the API {api:.0f} MiB ({worst_api[0]} {worst_api[1]}), of one dispatcher "
        f"{disp:.0f} MiB ({worst_disp[0]} {worst_disp[1]})"
    )
    return rows
