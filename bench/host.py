"""The machine a run measured and the code it measured: CPU, memory, load, the last commit of payrun's code."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from testkit.stack import ROOT


def host_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, ours and others')."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem.total / 2**30, 1),
        "memory_available_gib": round(mem.available / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


CODE_PATHS = ("api_service", "dispatcher_service", "payrun", "shared", "simulator", "sql", "pyproject.toml")


def code_version() -> str:
    """The last commit that touched payrun's code (not docs or tests), and whether that code has local
    changes: what a run measured."""
    try:
        last = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", *CODE_PATHS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return (last or "unknown") + (" with local changes" if dirty else "")
