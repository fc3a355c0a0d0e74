"""The real payrun processes: `payrun sim`, `payrun api` and any number of `payrun dispatcher`, started as
subprocesses on free ports against one database, each with its own log file; and a payroll clerk's client.

Whatever a Stack started is stopped by stop_all(); an atexit hook kills what might still run when the
interpreter exits (a benchmark interrupted, a test run killed).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

_LIVE: set[Stack] = set()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: the kernel may give a port just closed
    again, and two stack processes were once given the same one (the API then died on "address in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class StartFailed(AssertionError):
    """A payrun process died or stayed silent before it answered its health check."""


class Stack:
    def __init__(self, database_url: str, log_dir: Path, **env: str) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.api_port, self.sim_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "API_PORT": str(self.api_port),
            "SIM_PORT": str(self.sim_port),
            "INTASEND_BASE_URL": f"http://127.0.0.1:{self.sim_port}",
            "INTASEND_SECRET_KEY": "ISSecretKey_test_e2e",
            "INTASEND_MAX_RPS": "20",
            "SIM_MAX_RPS": "20",
            "DISPATCHER_LEASE_S": "5",
            "DISPATCHER_GRACE_S": "3",
            "API_KEY_RATE": "1000",
            "API_KEY_BURST": "1000",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}  # dispatcher name -> DISPATCHER_METRICS_PORT
        self._count = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def sim(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def start(self, command: str, name: str | None = None, **env: str) -> str:
        self._count += 1
        name = name or f"{command}{self._count}"
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "payrun", command],
            cwd=ROOT,
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _LIVE.add(self)
        return name

    async def boot(
        self, dispatchers: int = 1, *, api: bool = True, wait_dispatchers: bool = False
    ) -> list[str]:
        """Start the simulator, the API (unless api=False) and `dispatchers` dispatchers; wait until the
        simulator and the API answer (and the dispatchers' /metrics with wait_dispatchers). A process that
        exits or stays silent raises StartFailed, saying which and the end of its log. Returns the
        dispatchers' names."""
        self.start("sim", "sim")
        if api:
            self.start("api", "api")
        await self.wait_up("sim", f"{self.sim}/sim/healthz")
        if api:
            await self.wait_up("api", f"{self.api}/healthz")
        return await self.start_dispatchers(dispatchers, wait=wait_dispatchers)

    async def start_dispatchers(self, n: int, *, wait: bool = True, **env: str) -> list[str]:
        """n more dispatchers; with wait, each on a DISPATCHER_METRICS_PORT of its own, waited for."""
        names = []
        for _ in range(n):
            if wait:
                port = free_port()
                name = self.start("dispatcher", DISPATCHER_METRICS_PORT=str(port), **env)
                self.metrics_ports[name] = port
            else:
                name = self.start("dispatcher", **env)
            names.append(name)
        if wait:
            for name in names:
                await self.wait_up(name, f"http://127.0.0.1:{self.metrics_ports[name]}/metrics")
        return names

    async def wait_up(self, name: str, url: str, within_s: float = 30) -> None:
        """Wait for `url` to answer 200, noticing at once when the process `name` behind it has exited."""
        proc = self.procs[name]
        deadline = time.monotonic() + within_s
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as client:
            while True:
                if proc.poll() is not None:
                    raise StartFailed(
                        f"{name} exited with code {proc.returncode} before answering {url}: {self.tail(name)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with client.get(url) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"{name} (pid {proc.pid}, running) did not answer {url} in {within_s:.0f} s: "
                        f"{self.tail(name)}"
                    )
                await asyncio.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.procs.pop(name, None)
        _LIVE.discard(self)

    def dispatchers(self) -> list[str]:
        return [n for n in self.procs if n.startswith("dispatcher")]

    def dead(self) -> dict[str, int]:
        """The processes that have exited, with their exit codes."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def tail(self, name: str, chars: int = 400) -> str:
        with contextlib.suppress(OSError):
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:].strip()
            return text or "(its log is empty)"
        return "(no log)"

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.log_dir.glob("*.log")))


def _kill_leftovers() -> None:
    for stack in list(_LIVE):
        for proc in list(stack.procs.values()):
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.kill()


atexit.register(_kill_leftovers)


async def wait_http(url: str, within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not come up")
            await asyncio.sleep(0.1)


class Client:
    """A payroll clerk's UI: create payrolls, click Run, poll the status endpoint."""

    def __init__(self, session: aiohttp.ClientSession, base: str, api_key: str) -> None:
        self.session, self.base = session, base
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def create(self, reference: str, accounts: list[str], amount: str = "100.00") -> str:
        body = {
            "reference": reference,
            "currency": "KES",
            "items": [
                {"name": f"Worker {n}", "account": a, "amount": amount} for n, a in enumerate(accounts)
            ],
        }
        async with self.session.post(f"{self.base}/payrolls", json=body, headers=self.headers) as resp:
            assert resp.status == 201, await resp.text()
            return str((await resp.json())["id"])

    async def process(self, payroll_id: str) -> int:
        async with self.session.post(
            f"{self.base}/payrolls/{payroll_id}/process", headers=self.headers
        ) as resp:
            return resp.status

    async def status(self, payroll_id: str) -> dict[str, Any]:
        async with self.session.get(
            f"{self.base}/payrolls/{payroll_id}/status", headers=self.headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def wait_final(self, payroll_ids: list[str], within_s: float) -> dict[str, str]:
        deadline = time.monotonic() + within_s
        states: dict[str, str] = {}
        while True:
            for pid in payroll_ids:
                if states.get(pid, "PROCESSING") == "PROCESSING":
                    states[pid] = (await self.status(pid))["status"]
            if all(s != "PROCESSING" for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"still processing after {within_s}s: {states}")
            await asyncio.sleep(0.5)


async def sim_json(stack: Stack, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{stack.sim}{path}") as resp:
        return dict(await resp.json())
