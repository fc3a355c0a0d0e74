"""`python -m bench [NAME ...] [--quick] [--runs N]`: run payrun's benchmarks (all of them by default).

Each benchmark starts what it needs (a fresh database on DATABASE_URL's server or on an embedded PostgreSQL
under .data/bench-pg, `payrun sim`, `payrun api`, `payrun dispatcher`s), prints a table per case and a
SUMMARY line, and stops everything it started, also on Ctrl-C. At the end: every figure against its target,
and the raw results in bench/results/bench-<time>.json. Process logs of the last invocation are kept in
.data/bench-logs/latest/.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import shutil
import signal
import sys
import time
import traceback
from typing import Any

from bench import host, postgres, registry, stats
from shared import logging as payrun_logging
from testkit.stack import ROOT

BENCHES = ("burst", "hundred_users", "scale", "throughput", "resources", "coalescing", "create")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHES)}"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: one repetition, smaller sizes (checks that the scripts work; figures are not the ones to quote)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="repetitions of each measurement; medians are printed (default 3)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile in throughput")
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        help="scale: run only this case (repeatable), e.g. --case 10x10000",
    )
    parser.add_argument(
        "--one-dispatcher",
        action="store_true",
        help="throughput: only one dispatcher beside pgqueuer (no two-dispatcher runs, no claim latency)",
    )
    return parser


async def _main(names: list[str], opts: registry.Options) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # SIGTERM stops like Ctrl-C: every finally runs
    server = postgres.Postgres.get()
    await server.inspect()
    print(f"  database: {server.describe()}", flush=True)
    for name in names:
        module: Any = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        intro = (module.__doc__ or name).strip().split("\n\n")[0]
        print(f"\n{'=' * 100}\n{intro}\n{'=' * 100}", flush=True)
        try:
            await module.run(opts)
        except Exception as exc:  # one broken benchmark does not hide the others' figures
            traceback.print_exc()
            registry.record(name, "benchmark run", f"FAILED: {type(exc).__name__}: {exc}"[:200], ok=False)
            registry.summary(f"{name}: FAILED ({type(exc).__name__}: {exc})"[:300])
        print(f"  ({name} took {time.monotonic() - started:.0f} s)", flush=True)


def _final_table() -> None:
    rows = []
    for r in registry.RESULTS:
        verdict = "" if r.ok is None else ("met" if r.ok else "MISSED")
        value = (
            f"{r.value:,.3f}".rstrip("0").rstrip(".") if isinstance(r.value, float) else stats.fmt(r.value)
        )
        rows.append([r.bench, r.metric, f"{value} {r.unit}".strip(), r.target, verdict, r.note])
    stats.table(
        "All figures against their targets", ["bench", "figure", "measured", "target", "", "note"], rows
    )
    print("\nSUMMARY lines:")
    for line in registry.SUMMARIES:
        print(f"  {line}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    names = args.names or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        _parser().error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    payrun_logging.configure("warning", "console")  # migrations log through structlog: keep stdout for tables
    opts = registry.Options(
        quick=args.quick,
        runs=max(1, args.runs),
        profile=not args.no_profile,
        one_dispatcher=args.one_dispatcher,
        cases=tuple(args.case),
    )
    if opts.log_dir.exists():
        shutil.rmtree(opts.log_dir)
    opts.log_dir.mkdir(parents=True)
    started = time.time()
    info = host.machine()
    info["code_at_start"] = host.code_version()
    print(
        f"payrun benchmarks{' (--quick: smoke run, not figures to quote)' if opts.quick else ''}: {', '.join(names)}"
    )
    print(
        f"  machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM "
        f"({info['memory_available_gib']} GiB available), Python {info['python']}, Linux {info['kernel']}, "
        f"load average at start {info['loadavg_at_start']}"
    )
    print(f"  code: {info['code_at_start']}")
    interrupted = False
    try:
        asyncio.run(_main(names, opts))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
        print("\ninterrupted: everything started has been stopped", file=sys.stderr)
    finally:
        server = postgres.Postgres._instance
        if server is not None:
            info["postgres"] = server.describe()
        info["loadavg_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
        info["code_at_end"] = host.code_version()
        if info["code_at_end"] != info["code_at_start"]:
            print(
                f"\nNOTE: payrun's code changed during the run: {info['code_at_start']} -> {info['code_at_end']}"
            )
        if registry.RESULTS:
            _final_table()
            path = registry.write_results(opts, started, info)
            print(f"\nresults: {path.relative_to(ROOT)}; process logs: {opts.log_dir.relative_to(ROOT)}/")
        print(f"total time {time.time() - started:.0f} s")
    if interrupted:
        sys.exit(130)


if __name__ == "__main__":
    main()
