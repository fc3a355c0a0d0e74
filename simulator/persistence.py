"""The simulator's state kept across restarts in one file (``SIM_STATE_FILE``), as a real provider keeps its.

Without it a restarted simulator has forgotten every batch: status answers 404 for batches payrun approved,
and their items end ``NEEDS_REVIEW``. With it, a restarted simulator answers as before and settles the
batches it had in flight.

- **What**: every attribute of :class:`~simulator.ledger.SimState` except its config and clocks, pickled
  whole, so attributes added later (wallet balances, ...) are kept without a change here. Attributes that a
  newer ``SimState.reset`` creates and an older file lacks keep their fresh value.
- **When**: after every request that may act (any method but GET) before its answer leaves, and at
  shutdown. Status (a POST) changes the state only by settling, which always changes the length of one of the
  state's collections (batches in flight, late TF105 outcomes, ledger): it writes only when those lengths
  (or the amounts) differ from the last write's, since a write costs some
  10 ms per thousand transactions the simulator has ever seen (100 ms for 10,000). Writes are atomic (a temporary file, then ``os.replace``), so
  a killed process leaves the previous snapshot or the new one, never half of one; no fsync, so a machine
  that loses power may lose the last writes. Concurrent requests share one write.
- **Time**: the state's timestamps are read on a monotonic clock, which restarts with the machine. The file
  keeps the clock's reading and the wall-clock time at the write; :func:`resumed_clock` continues that
  clock, counting the time the simulator was down, so a batch due during the downtime settles at once.

The file is a pickle: only ever load one this simulator wrote (it lives in ``.data/`` for ``payrun dev``).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from simulator.ledger import SimState

FORMAT = 1
# Not state: how the state was built, given again at every start.
NOT_STATE = frozenset({"config", "clock", "wall"})


class StateFileError(Exception):
    """The state file exists but cannot be read back; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    attributes: dict[str, Any]
    clock: float  # the state's clock at the write
    wall: float  # time.time() at the write


def capture(state: SimState) -> Snapshot:
    attributes = {k: v for k, v in vars(state).items() if k not in NOT_STATE}
    return Snapshot(attributes, state.clock(), time.time())


def counts(state: SimState) -> tuple[object, ...]:
    """What settling always changes: the length of some collection of the state (batches in flight,
    repeats, transactions waiting to show their outcome, the ledger). Read from every attribute, so a
    queue added to SimState later counts too; the amounts (balance, reserved) as well."""
    return tuple(
        len(value) if isinstance(value, list | dict | set) else value
        for _, value in sorted(vars(state).items())
        if isinstance(value, list | dict | set | int | float | Decimal)
    )


def restore(state: SimState, snapshot: Snapshot) -> None:
    state.reset()
    state.__dict__.update(snapshot.attributes)
    state.upgrade_restored()


def resumed_clock(snapshot: Snapshot, base: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """A clock that goes on from the snapshot's reading, plus the time that passed since it was written."""
    offset = snapshot.clock + max(0.0, time.time() - snapshot.wall) - base()
    return lambda: base() + offset


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = asyncio.Lock()
        self._wanted = 0
        self._written = 0
        self._counts: tuple[object, ...] | None = None

    def load(self) -> Snapshot | None:
        """The last snapshot written, or None when there is none yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            stored = pickle.loads(raw)  # noqa: S301 - a file this simulator wrote (module docstring)
            if stored.get("format") != FORMAT:
                raise ValueError(f"format {stored.get('format')!r}, expected {FORMAT}")
            snapshot = stored["snapshot"]
            if not isinstance(snapshot, Snapshot):
                raise TypeError(f"holds a {type(snapshot).__name__}, not a Snapshot")
        except Exception as exc:  # noqa: BLE001 - whatever the unpickling raised, say it in one line
            raise StateFileError(
                f"cannot read the simulator's state from {self.path}: {type(exc).__name__}: {exc}. "
                "Delete the file to start the simulator empty (it then forgets every batch)"
            ) from None
        return snapshot

    def write(self, state: SimState) -> None:
        """Write the state now (at shutdown, or from synchronous code)."""
        self._replace(self._dump(state))

    async def save(self, state: SimState, *, unless_unchanged: bool = False) -> None:
        """Write the state as it is now; returns once a write at least this recent is on disk. Requests that
        wait for the same write share it. With unless_unchanged, only if the state's counts have changed
        since the last write (for requests that can only settle batches)."""
        if unless_unchanged and counts(state) == self._counts:
            return
        self._wanted += 1
        wanted = self._wanted
        async with self._lock:
            if self._written >= wanted:
                return
            covers = self._wanted
            self._counts = counts(state)
            data = self._dump(state)
            await asyncio.to_thread(self._replace, data)
            self._written = covers

    def _dump(self, state: SimState) -> bytes:
        return pickle.dumps({"format": FORMAT, "snapshot": capture(state)}, protocol=pickle.HIGHEST_PROTOCOL)

    def _replace(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
