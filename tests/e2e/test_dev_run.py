"""`payrun dev` (`make run`) as a person uses it: Ctrl-C in the middle of a payroll, start it again.

Each `payrun dev` runs on a fresh database (DATABASE_URL, as `payrun dev` takes it when set) with its data
directory (PAYRUN_DEV_DIR: demo key, simulator state, lock) in the test's tmp_path, on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from payrun import devprocs
from payrun.dev import leftovers
from testkit import ledger
from testkit import postgres as pg
from testkit.stack import ROOT, Client, free_port

READY = "payrun is READY"


class Dev:
    """One `payrun dev`, in a session of its own as a shell would start it, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Dev:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "payrun", "dev"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def ready(self, within_s: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within_s
        while self.output().count(READY) < self.starts:
            assert self.proc.poll() is None, f"payrun dev exited {self.proc.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"payrun dev not ready in {within_s} s:\n{self.output()}"
            await asyncio.sleep(0.2)

    def interrupt(self) -> None:
        """Ctrl-C in its terminal: SIGINT to its process group."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)

    async def exit_status(self, within_s: float) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, within_s)

    def kill(self) -> None:
        """After a failure: payrun dev and the processes it started (each in a session of its own)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in leftovers(Path(self.env["PAYRUN_DEV_DIR"])):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
async def dev_env(pg_admin_dsn: str, pg_template: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    name = await pg.create_from_template(pg_admin_dsn, pg_template)
    env = {k: v for k, v in os.environ.items() if k not in ("INTASEND_SECRET_KEY", "LOG_FORMAT")}
    env.update(
        {
            "DATABASE_URL": pg.with_database(pg_admin_dsn, name),
            "PAYRUN_DEV_DIR": str(tmp_path / "data"),
            "API_PORT": str(free_port()),
            "SIM_PORT": str(free_port()),
            "INTASEND_BATCH_SIZE": "5",
            "INTASEND_MAX_RPS": "20",
            "SIM_PROCESSING_S": "2",
            "DISPATCHER_GRACE_S": "3",
            "DISPATCHER_LEASE_S": "5",
            "API_KEY_RATE": "1000",
            "API_KEY_BURST": "1000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    yield env
    await pg.drop(pg_admin_dsn, name)


def demo_key(env: dict[str, str]) -> str:
    kept = json.loads((Path(env["PAYRUN_DEV_DIR"]) / "demo.json").read_text())
    (entry,) = kept.values()
    return str(entry["api_key"])


async def sim(env: dict[str, str], path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{env['SIM_PORT']}{path}") as r,
    ):
        return dict(await r.json())


async def payroll_status(dsn: str, payroll_id: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT status FROM payrolls WHERE id = $1::uuid", payroll_id))
    finally:
        await conn.close()


async def test_stopped_with_ctrl_c_mid_payroll_and_started_again_pays_everyone_once(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C while the simulator has approved batches in flight exits 0 after stopping the dispatcher first;
    started again, `payrun dev` has the same demo key, the simulator still knows every batch, and the payroll
    ends with every worker paid exactly once and nobody in review. A second `payrun dev` meanwhile is
    refused with one clear line."""
    dev = Dev(dev_env, tmp_path / "dev.log").start()
    try:
        await dev.ready()
        key = demo_key(dev_env)
        assert f"demo API key:  {key}" in dev.output()

        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "payrun", "dev"],
            cwd=ROOT,
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr and "Traceback" not in second.stderr, second.stderr

        workers = [f"25471{n:07d}" for n in range(40)]
        api = f"http://127.0.0.1:{dev_env['API_PORT']}"
        async with aiohttp.ClientSession() as session:
            client = Client(session, api, key)
            payroll = await client.create("DEV-RESTART", workers)
            assert await client.process(payroll) == 202
            deadline = time.monotonic() + 30
            while (await sim(dev_env, "/sim/stats"))["by_endpoint"].get("approve", 0) < 2:
                assert time.monotonic() < deadline, "the simulator saw no approve"
                await asyncio.sleep(0.05)
        paid_before_stop = len((await sim(dev_env, "/sim/ledger"))["payments"])
        dev.interrupt()
        assert await dev.exit_status(within_s=40) == 0, dev.output()
        first_run = dev.output()
        assert paid_before_stop < len(workers)
        assert await payroll_status(dev_env["DATABASE_URL"], payroll) == "PROCESSING"
        assert first_run.index("payrun dev: dispatcher stopped") < first_run.index("payrun dev: api stopped")
        assert first_run.index("payrun dev: api stopped") < first_run.index("payrun dev: sim stopped")
        assert "Traceback" not in first_run

        dev.start()
        await dev.ready()
        assert demo_key(dev_env) == key
        assert dev.output().count(f"demo API key:  {key}") == 2
        async with aiohttp.ClientSession() as session:
            states = await Client(session, api, key).wait_final([payroll], within_s=60)
        assert states == {payroll: "COMPLETED"}
        result = await ledger.reconcile(dev_env["DATABASE_URL"], f"http://127.0.0.1:{dev_env['SIM_PORT']}")
        assert result.ok, result.problems()
        assert result.states == {"PAID": len(workers)}
        assert result.paid_once == len(workers)

        dev.interrupt()
        assert await dev.exit_status(within_s=40) == 0, dev.output()
        assert "Traceback" not in dev.output()
    finally:
        dev.kill()


def _run_in_terminal(command: list[str], env: dict[str, str], ready: str, within_s: float) -> tuple[int, str]:
    """Run `command` on a new pseudo-terminal as a shell's foreground job, type Ctrl-C once `ready` shows,
    and return its exit status and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader on the terminal, like a job started from an interactive shell
        os.chdir(ROOT)
        os.execvpe(command[0], command, env)
    output = b""
    typed = False
    deadline = time.monotonic() + within_s
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the terminal closed: everything exited
                    break
                if not chunk:
                    break
                output += chunk
            if not typed and ready.encode() in output:
                os.write(fd, b"\x03")
                typed = True
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
async def test_ctrl_c_in_the_terminal_ends_make_run_with_status_0(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """The terminal's Ctrl-C reaches make too; make ends with status 0 and prints no error, because only
    `payrun dev` (in the terminal's foreground) gets it and exits 0."""
    makefile = tmp_path / "Makefile"
    makefile.write_text(f"run:\n\t{sys.executable} -m payrun dev\n")
    status, output = await asyncio.to_thread(
        _run_in_terminal, ["make", "-f", str(makefile), "run"], dev_env, READY, 90
    )
    assert READY in output, output
    assert "payrun dev: stopped" in output, output
    assert status == 0, output
    assert "Error" not in output and "Interrupt" not in output, output


async def test_processes_left_by_a_killed_payrun_dev_are_named_at_the_next_start(
    dev_env: dict[str, str], tmp_path: Path
) -> None:
    """A `payrun dev` killed with SIGKILL cannot stop its processes; the next one says which still run."""
    dev = Dev(dev_env, tmp_path / "dev.log").start()
    left: list[int] = []
    try:
        await dev.ready()
        assert dev.proc is not None
        os.kill(dev.proc.pid, signal.SIGKILL)
        dev.proc.wait()
        again = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "payrun", "dev"],
            cwd=ROOT,
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 1, again.stderr
        assert "processes of a payrun dev that was killed still run" in again.stderr, again.stderr
        assert "Traceback" not in again.stderr
        left = [int(p) for p in again.stderr.split("(pids ")[1].split(")")[0].split()]
        assert len(left) == 3  # simulator, API, dispatcher
    finally:
        dev.kill()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


SLOW_TO_STOP = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(5.5), sys.exit(0)))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("hurried", [False, True])
async def test_a_process_gets_its_whole_grace_and_a_second_ctrl_c_cuts_it_short(hurried: bool) -> None:
    """A process that needs 5.5 s after SIGTERM (honcho killed at 5 s) is waited for; `hurry` (the second
    Ctrl-C) kills it at once."""
    ready = asyncio.Event()
    child = await devprocs.start(
        "slow",
        [sys.executable, "-c", SLOW_TO_STOP],
        cwd=ROOT,
        env=dict(os.environ),
        on_line=lambda _child, line: ready.set() if line == "ready" else None,
    )
    await asyncio.wait_for(ready.wait(), 30)
    hurry = asyncio.Event()
    if hurried:
        asyncio.get_running_loop().call_later(1.0, hurry.set)
    started = time.monotonic()
    status = await devprocs.stop(child, grace_s=15, hurry=hurry)
    took = time.monotonic() - started
    if hurried:
        assert status == -signal.SIGKILL and took < 3
    else:
        assert status == 0 and 5.5 <= took < 10
