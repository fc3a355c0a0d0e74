"""The processes a benchmark runs: payrun's (sim, API, dispatchers, through testkit/stack.py) on a fresh
database with payrun's shipped timings, helper processes (pgbench, py-spy), and per-process CPU and peak RSS.

Everything started here is stopped by the context managers, on success, on an exception and on
Ctrl-C/SIGTERM (the bench's main task is cancelled, so every `finally` runs); atexit hooks (here and in
testkit/stack.py) kill what might still be left. Traffic goes to 127.0.0.1 (and PostgreSQL's Unix socket)
only.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.postgres import fresh_database
from bench.registry import Options
from bench.stats import say
from testkit.stack import Stack, StartFailed, sim_json

__all__ = ["BENCH_ENV", "BenchStack", "StartFailed", "child", "proc_stats", "running_stack"]

# payrun's own defaults for what the e2e harness shortens (tests want quick take-overs; a benchmark wants
# the configuration payrun ships with), and a per-key throttle high enough not to shape the measurement. All
# simulated users come from 127.0.0.1 and a key the API has not seen yet spends the unknown-key budget until
# its lookup finds it (API_AUTH_FAILURE_*, a tenth per client address): 100 first requests at once would be
# 429s, so that budget is lifted too.
BENCH_ENV = {
    "DISPATCHER_LEASE_S": "30",
    "DISPATCHER_GRACE_S": "5",
    "API_KEY_RATE": "100000",
    "API_KEY_BURST": "100000",
    "API_AUTH_FAILURE_RATE": "100000",
    "API_AUTH_FAILURE_BURST": "100000",
    "LOG_LEVEL": "info",
}


_CHILDREN: set[subprocess.Popen[Any]] = set()


def _kill_children() -> None:
    for proc in list(_CHILDREN):
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                proc.kill()


atexit.register(_kill_children)


def proc_stats(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM, the largest of the process and its children, e.g. uvicorn's workers with
    API_WORKERS > 1), current RSS (MiB, summed) and CPU seconds (summed) of a process tree; empty when the
    process is gone."""
    out: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return out
    peak = rss = cpu = 0.0
    for proc in procs:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) / 1024
            t = proc.cpu_times()
            cpu += t.user + t.system
        except (OSError, psutil.Error):
            continue
    out.update(peak_mib=peak, rss_mib=rss, cpu_s=cpu, processes=float(len(procs)))
    return out


@dataclass
class BenchStack:
    """A running sim + API (+ dispatchers) on a fresh database."""

    stack: Stack
    dsn: str
    name: str

    @property
    def api(self) -> str:
        return self.stack.api

    @property
    def sim(self) -> str:
        return self.stack.sim

    @property
    def metrics_ports(self) -> dict[str, int]:
        return self.stack.metrics_ports

    def pid(self, name: str) -> int:
        return self.stack.procs[name].pid

    def dispatchers(self) -> list[str]:
        return self.stack.dispatchers()

    async def start_dispatchers(self, n: int, **env: str) -> list[str]:
        """n more dispatchers, each with its /metrics port, waited for."""
        return await self.stack.start_dispatchers(n, wait=True, **env)

    def resources(self) -> dict[str, dict[str, float]]:
        return {name: proc_stats(proc.pid) for name, proc in self.stack.procs.items() if proc.poll() is None}

    async def sim_stats(self) -> dict[str, Any]:
        return await sim_json(self.stack, "/sim/stats")

    async def sim_reset(self) -> None:
        async with aiohttp.ClientSession() as session, session.post(f"{self.sim}/sim/reset") as resp:
            assert resp.status == 200

    def sim_log(self) -> Path:
        return self.stack.log_dir / "sim.log"

    def check_alive(self) -> None:
        dead = self.stack.dead()
        if dead:
            raise RuntimeError(
                f"payrun processes exited during the benchmark: {dead}; logs in {self.stack.log_dir}"
            )


@contextlib.asynccontextmanager
async def running_stack(
    opts: Options, name: str, *, dispatchers: int = 1, api: bool = True, **env: str
) -> AsyncIterator[BenchStack]:
    """sim + api + `dispatchers` dispatcher processes on a fresh database; all stopped and dropped after.
    A stack whose processes die before they are up is started once more (new ports), saying why."""
    async with fresh_database() as dsn:
        log_dir = opts.log_dir / name
        if log_dir.exists():
            shutil.rmtree(log_dir)
        log_dir.mkdir(parents=True)
        for attempt in (1, 2):
            stack = Stack(dsn, log_dir, **{**BENCH_ENV, **env})
            try:
                await stack.boot(dispatchers, api=api, wait_dispatchers=True)
                break
            except StartFailed as exc:
                stack.stop_all()
                if attempt == 2:
                    raise
                say(f"{name}: {exc}; starting the processes again")
            except BaseException:
                stack.stop_all()
                raise
        try:
            yield BenchStack(stack, dsn, name)
        finally:
            stack.stop_all()


@contextlib.contextmanager
def child(args: Sequence[str], **kwargs: Any) -> Any:
    """A helper process (pgbench, py-spy) that is stopped with its parent."""
    proc = subprocess.Popen(list(args), **kwargs)
    _CHILDREN.add(proc)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _CHILDREN.discard(proc)
