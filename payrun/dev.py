"""`payrun dev` (what `make run` runs): everything on one machine, for trying payrun out.

An embedded PostgreSQL under .data/pg when DATABASE_URL is unset, the simulator when INTASEND_SECRET_KEY is
unset (its state kept in .data/simulator-state.pickle, so a restart forgets no batch), migrations, one API
and one dispatcher, and one demo employer whose key is kept in .data/demo.json.

- Start-up: one `payrun dev` per data directory (a lock on .data/dev.lock) and free ports, checked before
  anything starts; then the simulator, the API and the dispatcher, each waited for; then the banner.
- Output: routine lines (one per request or poll) are left out unless `--verbose` (payrun/devlog.py).
- Stopping (Ctrl-C, SIGTERM, SIGHUP, or one process dying): the dispatcher first, with DISPATCHER_GRACE_S to
  finish the requests it sent, then the API, then the simulator, then the embedded PostgreSQL. A stop asked
  for exits 0; a second Ctrl-C kills what is left at once (safe: the outbox resumes from its stage).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from payrun import demo, devlog, devprocs, terminal
from shared import db, embedded_pg, employers, migrate
from shared import logging as payrun_logging
from shared.errors import PayrunError
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "ISSecretKey_test_payrun_simulator"
START_WITHIN_S = 60.0
API_STOP_S = 10.0
SIM_STOP_S = 5.0
DISPATCHER_STOP_MARGIN_S = 10.0  # beyond its grace: handing rows back, closing the pool


class DevError(PayrunError):
    """`payrun dev` cannot start; the message says why and what to do."""


class Stopped(Exception):
    """A stop was asked for (Ctrl-C) while starting."""


def _say(text: str) -> None:
    with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP): stopping matters more
        print(text, file=sys.stderr, flush=True)


def data_dir() -> Path:
    return Path(os.environ.get("PAYRUN_DEV_DIR") or ROOT / ".data")


@contextmanager
def only_instance(directory: Path) -> Iterator[None]:
    """Hold .data/dev.lock while running: a second `payrun dev` on the same data gets a clear error."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dev.lock"
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            pid = lock.read().strip() or "?"
            raise DevError(
                f"already running (pid {pid}, data in {directory}): stop it first (Ctrl-C in its terminal, "
                f"or kill {pid})"
            ) from None
        left = leftovers(directory)
        if left:
            pids = " ".join(str(p) for p in left)
            raise DevError(
                f"processes of a payrun dev that was killed still run (pids {pids}): stop them "
                f"first (kill {pids})"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def _pids_file(directory: Path) -> Path:
    return directory / "dev.pids"


def leftovers(directory: Path) -> list[int]:
    """Processes a `payrun dev` started and did not stop (it was killed with SIGKILL): still running, and
    still `python -m payrun ...` (a pid may have been reused)."""
    try:
        listed = [int(p) for p in _pids_file(directory).read_text().split()]
    except (OSError, ValueError):
        return []
    alive = []
    for pid in listed:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone (or no /proc: nothing is reported)
        if any(b"payrun" in part for part in command):
            alive.append(pid)
    return alive


def _remember(directory: Path, children: list[devprocs.Child]) -> None:
    _pids_file(directory).write_text("".join(f"{c.pid}\n" for c in children if c.process.returncode is None))


def check_port_free(host: str, port: int, variable: str) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise DevError(f"cannot listen on {host}:{port} ({variable}): {exc.strerror}") from None
            raise DevError(
                f"{host}:{port} ({variable}) is already in use: another `payrun dev` (or another program) "
                f"runs there. Stop it, or choose another port: {variable}={port + 1} make run"
            ) from None


@dataclass
class Plan:
    settings: Settings
    env: dict[str, str]
    dsn: str
    employer: employers.NewEmployer
    employer_created: bool
    directory: Path
    use_sim: bool
    embedded: bool
    view: devlog.LineView
    out: IO[str] = field(default_factory=lambda: sys.stderr)

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://{self.settings.sim_host}:{self.settings.sim_port}"


async def _prepare(dsn: str, directory: Path) -> tuple[employers.NewEmployer, bool]:
    conn = await db.connect(dsn)
    try:
        await migrate.apply(conn)
        return await demo.keep(conn, directory / "demo.json", dsn)
    finally:
        await conn.close()


def banner(plan: Plan) -> str:
    key, url = plan.employer["api_key"], plan.url
    auth = f"-H 'Authorization: Bearer {key}'"
    kept = "created now" if plan.employer_created else "the same as before"
    psql = f"psql '{plan.dsn}'" if plan.embedded else 'psql "$DATABASE_URL"'
    lines = [
        "",
        "=" * 78,
        f"payrun is READY at {url}",
        f"dashboard:     {url}/  (log in with the demo API key)",
        f"demo employer: {plan.employer['name']} ({plan.employer['id']}), {kept}",
        f"demo API key:  {key}",
        f"               (kept in {plan.directory / 'demo.json'})",
        f"database:      {psql}",
        "try:",
        f"  curl -s -X POST {url}/payrolls {auth} \\",
        "    -H 'Content-Type: application/json' \\",
        """    -d '{"reference":"DEMO-1","currency":"KES","items":[{"name":"Jane Doe","account":"0712345678","amount":"1500.00"}]}'""",
        f"  curl -s -X POST {url}/payrolls/<id>/process {auth}",
        f"  curl -s {url}/payrolls/<id>/status {auth}",
    ]
    if plan.use_sim:
        lines += [
            "",
            f"!!! INTASEND_SECRET_KEY is not set: payouts go to the bundled simulator at {plan.sim_url}"
            " (what it paid: /sim/ledger). NO REAL MONEY MOVES. !!!",
        ]
    if not plan.view.verbose:
        lines.append("Logs show state changes; every request and poll: PAYRUN_DEV_VERBOSE=1 make run.")
    lines += [
        "Ctrl-C stops everything: the dispatcher first (it may take up to "
        f"{plan.settings.dispatcher_grace_s:g} s to finish what it sent).",
        "=" * 78,
        "",
    ]
    return "\n".join(lines)


class Session:
    """The processes of one `payrun dev`, from start to the ordered stop."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.children: list[devprocs.Child] = []
        self.stop_asked = asyncio.Event()
        self.hurry = asyncio.Event()
        self.signals = 0

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signals += 1
        if self.signals == 1:
            self.stop_asked.set()
            _say(f"\npayrun dev: {sig.name}: stopping (the dispatcher first); Ctrl-C again stops at once")
        else:
            self.hurry.set()
            _say("payrun dev: stopping at once")

    def _on_line(self, child: devprocs.Child, line: str) -> None:
        event = devlog.parse(line)
        if event is not None:
            child.events.add(str(event["event"]))
            child.seen.set()
        text = self.plan.view.show(line, event)
        if text is not None:
            with contextlib.suppress(OSError):
                print(f"{child.name:<10} | {text}", file=self.plan.out, flush=True)

    async def _start(self, name: str, command: str) -> devprocs.Child:
        args = [sys.executable, "-m", "payrun", command]
        child = await devprocs.start(name, args, cwd=ROOT, env=self.plan.env, on_line=self._on_line)
        self.children.append(child)
        _remember(self.plan.directory, self.children)
        return child

    async def _until(self, child: devprocs.Child, ready: Awaitable[Any], what: str) -> None:
        """Wait for `ready`, or fail when the child exits first, a stop is asked for, or time runs out."""
        waiting = asyncio.ensure_future(ready)
        exited = asyncio.ensure_future(child.process.wait())
        stop = asyncio.ensure_future(self.stop_asked.wait())
        try:
            done, _ = await asyncio.wait(
                {waiting, exited, stop}, timeout=START_WITHIN_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for f in (waiting, exited, stop):
                f.cancel()
        if stop in done:
            raise Stopped
        if waiting in done:
            return
        if exited in done:
            raise DevError(
                f"{child.name} exited with status {child.process.returncode} while starting (waiting for "
                f"{what}); its last lines are above"
            )
        raise DevError(f"{child.name} was not ready within {START_WITHIN_S:.0f} s (waiting for {what})")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            code = await self._run()
        finally:
            stopped = await self._stop_all()
            _remember(self.plan.directory, self.children)
            if stopped:
                _say("payrun dev: a process did not stop cleanly (see above)")
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return code or (0 if self.hurry.is_set() else stopped)

    async def _run(self) -> int:
        plan = self.plan
        _say(
            f"payrun dev: starting at {plan.url} with the demo API key {plan.employer['api_key']}"
            " (all of it again once everything is up)"
        )
        try:
            if plan.use_sim:
                sim = await self._start("sim", "sim")
                await self._until(sim, _healthy(f"{plan.sim_url}/sim/healthz"), "/sim/healthz")
            api = await self._start("api", "api")
            await self._until(api, _healthy(f"{plan.url}/healthz"), "/healthz")
            dispatcher = await self._start("dispatcher", "dispatcher")
            await self._until(dispatcher, dispatcher.wait_event("dispatcher_started"), "dispatcher_started")
        except Stopped:
            return 0
        _say(banner(plan))
        exits = asyncio.ensure_future(devprocs.first_exit(self.children))
        stop = asyncio.ensure_future(self.stop_asked.wait())
        await asyncio.wait({exits, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if self.stop_asked.is_set():
            exits.cancel()
            return 0
        died = exits.result()
        _say(f"payrun dev: {died.name} exited with status {died.process.returncode}: stopping the rest")
        return 1

    async def _stop_all(self) -> int:
        """Dispatcher, API, simulator: each given its grace before the next; returns 1 when one was killed
        or exited with an error."""
        grace = {
            "dispatcher": self.plan.settings.dispatcher_grace_s + DISPATCHER_STOP_MARGIN_S,
            "api": API_STOP_S,
            "sim": SIM_STOP_S,
        }
        status = 0
        for name in ("dispatcher", "api", "sim"):
            for child in [c for c in self.children if c.name == name]:
                running = child.process.returncode is None
                code = await devprocs.stop(child, grace[name], self.hurry)
                clean = code in (0, -signal.SIGTERM)  # uvicorn ends by the SIGTERM it handled
                if running:
                    _say(f"payrun dev: {name} stopped" + ("" if clean else f" (exit status {code})"))
                if not clean:
                    status = 1
        return status


async def _healthy(url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.1)


def _environment(settings: Settings, directory: Path, dsn: str) -> tuple[dict[str, str], bool]:
    env = dict(os.environ)
    env["LOG_FORMAT"] = "json"  # read back and shown by payrun/devlog.py
    env["PYTHONUNBUFFERED"] = "1"
    env["DATABASE_URL"] = dsn
    use_sim = not settings.intasend_secret_key
    if use_sim:
        env["INTASEND_BASE_URL"] = f"http://{settings.sim_host}:{settings.sim_port}"
        env["INTASEND_SECRET_KEY"] = SIM_KEY
        env.setdefault("SIM_MAX_RPS", str(int(settings.intasend_max_rps)))
        env.setdefault("SIM_STATE_FILE", str(directory / "simulator-state.pickle"))
    return env, use_sim


def _verbose(flag: bool) -> bool:
    return flag or os.environ.get("PAYRUN_DEV_VERBOSE", "").strip().lower() in ("1", "true", "yes")


def run_dev(settings: Settings, *, verbose: bool = False) -> None:
    """Run until Ctrl-C. Exits 0 when stopped as asked, 1 when a process died or could not start."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # until the loop's handlers: same as Ctrl-C
    payrun_logging.configure(settings.log_level, os.environ.get("LOG_FORMAT") or "console")
    directory = data_dir()
    server = None
    try:
        with terminal.own_foreground(), only_instance(directory):
            check_port_free(settings.api_host, settings.api_port, "API_PORT")
            if not settings.intasend_secret_key:
                check_port_free(settings.sim_host, settings.sim_port, "SIM_PORT")
            dsn = settings.database_url
            if not dsn:
                _say(
                    f"payrun dev: DATABASE_URL is not set: starting an embedded PostgreSQL in {directory}/pg"
                )
                server = embedded_pg.start(directory / "pg")
                asyncio.run(embedded_pg.ensure_database(embedded_pg.dsn_for(server, "postgres"), "payrun"))
                dsn = embedded_pg.dsn_for(server, "payrun")
            employer, created = asyncio.run(_prepare(dsn, directory))
            env, use_sim = _environment(settings, directory, dsn)
            view = devlog.LineView(
                verbose=_verbose(verbose),
                as_json=os.environ.get("LOG_FORMAT") == "json",
                colors=sys.stderr.isatty(),
            )
            plan = Plan(settings, env, dsn, employer, created, directory, use_sim, server is not None, view)
            code = asyncio.run(Session(plan).run())
    except KeyboardInterrupt:  # Ctrl-C before the processes started
        _say("payrun dev: stopped before it started")
        code = 0
    except DevError as exc:
        _say(f"payrun dev: {exc}")
        code = 1
    finally:
        if server is not None:
            _say("payrun dev: stopping the embedded PostgreSQL")
            server.cleanup()
    if code == 0:
        _say("payrun dev: stopped")
    sys.exit(code)
