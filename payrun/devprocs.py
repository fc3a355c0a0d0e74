"""The processes `payrun dev` runs, started and stopped one by one with asyncio's subprocess support.

Why not honcho (used before) or supervisord: honcho stops every process at once and kills them after a
fixed 5 s, so the dispatcher lost its 20 s of grace and the simulator went first; supervisord orders and
waits, but brings a daemon, a generated configuration file and its own log files. The standard library does
what is needed in a page: each process starts in a session of its own, so a Ctrl-C in the terminal reaches
`payrun dev` only, which then stops them in order, each with its own grace, and kills only what outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OnLine = Callable[["Child", str], None]
MAX_LINE = 4 * 1024 * 1024  # a log line longer than asyncio's 64 KiB default must not stop the relay


@dataclass(eq=False)
class Child:
    name: str
    process: asyncio.subprocess.Process
    relay: asyncio.Task[None] | None = None
    stopping: bool = False  # payrun dev asked it to stop: its exit is expected
    events: set[str] = field(default_factory=set)  # the log events it has written so far
    seen: asyncio.Event = field(default_factory=asyncio.Event)  # set on each new event

    @property
    def pid(self) -> int:
        return self.process.pid

    async def wait_event(self, name: str) -> None:
        while name not in self.events:
            self.seen.clear()
            await self.seen.wait()


async def start(name: str, args: list[str], *, cwd: Path, env: dict[str, str], on_line: OnLine) -> Child:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # the terminal's Ctrl-C goes to payrun dev alone, which stops us in order
        limit=MAX_LINE,
    )
    child = Child(name, process)
    child.relay = asyncio.create_task(_relay(child, on_line))
    return child


async def _relay(child: Child, on_line: OnLine) -> None:
    stream = child.process.stdout
    assert stream is not None
    while line := await stream.readline():
        on_line(child, line.decode(errors="replace").rstrip("\n"))


async def stop(child: Child, grace_s: float, hurry: asyncio.Event) -> int:
    """SIGTERM, then up to grace_s (cut short when `hurry` is set) for it to exit, then SIGKILL. Returns its
    exit status; its last lines have been relayed."""
    child.stopping = True
    if child.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
        exited = asyncio.ensure_future(child.process.wait())
        hurried = asyncio.ensure_future(hurry.wait())
        await asyncio.wait({exited, hurried}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        await exited
    if child.relay is not None:
        await child.relay
    return child.process.returncode if child.process.returncode is not None else -1


async def first_exit(children: list[Child]) -> Child:
    """The first of `children` to exit."""
    waits: dict[asyncio.Future[Any], Child] = {asyncio.ensure_future(c.process.wait()): c for c in children}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return waits[next(iter(done))]
