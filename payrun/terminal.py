"""Ctrl-C for `payrun dev` alone, so that `make run` stopped with Ctrl-C exits 0.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group: to make as well as to `payrun dev`.
make then waits for its child and kills itself with SIGINT, whatever the child's exit status (so the shell
sees 130, or make prints "Error 130" when the child exits 130). Job-control shells avoid this by giving each
job a process group of its own and the terminal to it; `payrun dev` does the same while it runs: its own
process group, in the foreground of its terminal, then the terminal given back to the group that had it.
Nothing changes when there is no terminal or `payrun dev` runs in the background.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


def _give_terminal(fd: int, group: int) -> None:
    # A process outside the foreground group that sets it gets SIGTTOU unless it ignores it.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)


@contextlib.contextmanager
def own_foreground() -> Iterator[bool]:
    """Run the block as the terminal's foreground process group; yields whether it does."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield False
        return
    try:
        before = os.tcgetpgrp(fd)
        if before != os.getpgrp() or os.getpid() == os.getsid(0):
            yield False  # in the background, or a session leader that cannot move to another group
            return
        os.setpgid(0, 0)
        _give_terminal(fd, os.getpgrp())
        # Ctrl-Z would stop payrun dev alone, leaving make waiting for it with no prompt to resume it.
        suspend = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
        try:
            yield True
        finally:
            signal.signal(signal.SIGTSTP, suspend)
            with contextlib.suppress(OSError):  # the group that had it may be gone
                _give_terminal(fd, before)
    finally:
        os.close(fd)
