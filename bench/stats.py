"""Numbers and how they are printed: percentiles, medians, rates over time, tables and progress lines."""

from __future__ import annotations

import math
import re
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Any


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


def utilisation(times: Sequence[float], rps: float, until: float | None = None) -> float:
    """Share of the limit used between the first request and `until` (default: the last request): requests
    after the first one, over the time they took at `rps`."""
    if until is not None:
        times = [t for t in times if t <= until]
    if len(times) < 2 or times[-1] <= times[0]:
        return math.nan
    return (len(times) - 1) / ((times[-1] - times[0]) * rps)


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
