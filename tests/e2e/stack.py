"""Real payrun processes for end-to-end tests: `payrun sim`, `payrun api` and any number of
`payrun dispatcher`, started as subprocesses on free ports against a fresh database, logs kept per process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        return name

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

    def dispatchers(self) -> list[str]:
        return [n for n in self.procs if n.startswith("dispatcher")]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.log_dir.glob("*.log")))


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
