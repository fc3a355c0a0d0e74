"""`python -m api_service` (= `payrun api`): serve the API on API_HOST:API_PORT until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvicorn

from shared import db, migrate
from shared.errors import PayrunError
from shared.logging import configure
from shared.settings import Settings


async def _preflight(settings: Settings) -> None:
    """Fail with one clear line, before uvicorn starts, when the database is unreachable or not migrated."""
    conn = await db.connect(settings.require_database_url())
    try:
        await migrate.ensure_current(conn)
    finally:
        await conn.close()


def serve(settings: Settings) -> None:
    """One process, or API_WORKERS processes sharing the port (each builds its app from the environment)."""
    from api_service.app import create_app

    asyncio.run(_preflight(settings))
    if settings.api_workers > 1:
        uvicorn.run(
            "api_service.app:create_app_from_env",
            factory=True,
            workers=settings.api_workers,
            host=settings.api_host,
            port=settings.api_port,
            lifespan="on",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
        )
        return
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        lifespan="on",
        access_log=False,  # api_service.middleware logs one request_finished line per request
        log_config=None,  # uvicorn logs through the standard library, which shared.logging configured
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(3)


def main(argv: list[str] | None = None) -> None:
    """`python -m api_service`: what `payrun api` does, without importing the `payrun` command."""
    argparse.ArgumentParser(prog="python -m api_service", description=__doc__).parse_args(argv)
    try:
        settings = Settings.from_env()
        configure(settings.log_level, settings.log_format)
        serve(settings)
    except PayrunError as exc:
        print(f"payrun api: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # connection refused, unknown host, socket missing
        print(f"payrun api: cannot reach the database: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
