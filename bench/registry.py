"""The results registry: the run's options, every figure a benchmark records (against its target), the
SUMMARY lines, raw per-run details, and bench/results/bench-<time>.json made from them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from testkit.stack import ROOT

LOG_ROOT = ROOT / ".data" / "bench-logs"
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Options:
    quick: bool = False
    runs: int = 3
    log_dir: Path = LOG_ROOT / "latest"
    profile: bool = True
    one_dispatcher: bool = False
    cases: tuple[str, ...] = ()  # scale: only these cases (all when empty)

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
