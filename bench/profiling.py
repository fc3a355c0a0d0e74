"""py-spy: where to find it, and its collapsed-stack output summarised by self and total time."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from testkit.stack import ROOT


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
