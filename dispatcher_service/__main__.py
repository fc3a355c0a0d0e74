"""`payrun dispatcher` / `python -m dispatcher_service`: the composition root of one dispatcher process."""

from __future__ import annotations

import asyncio
import signal
import sys

import aiohttp

from dispatcher_service import metrics_server
from dispatcher_service.dispatcher import Dispatcher
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.provider.intasend import IntaSendClient
from dispatcher_service.provider.protocol import ProviderError
from dispatcher_service.retry import ProviderCaller
from shared import db, migrate
from shared.errors import PayrunError
from shared.logging import configure, get_logger
from shared.settings import Settings

log = get_logger(__name__)


async def main(settings: Settings) -> None:
    dsn = settings.require_database_url()
    secret = settings.require_secret_key()
    pool = await db.create_pool(
        dsn, min_size=2, max_size=max(4, min(20, settings.dispatcher_concurrency // 2 + 4))
    )
    try:
        async with pool.acquire() as conn:
            await migrate.ensure_current(conn)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A connection for every flow and for the re-check (one at a time): no request waits in the connector's
        # queue after its lease was checked. Long keep-alive: a request on a fresh connection leaves later than
        # the limiter logged it.
        connector = aiohttp.TCPConnector(
            limit=max(10, settings.dispatcher_concurrency + 1), keepalive_timeout=60
        )
        # Employer events: a session of their own, so a receiver that hangs holds none of IntaSend's connections.
        callback_connector = aiohttp.TCPConnector(limit=settings.employer_callback_concurrency)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            aiohttp.ClientSession(
                connector=callback_connector, cookie_jar=aiohttp.DummyCookieJar()
            ) as callbacks,
            metrics_server.serving(pool, settings.api_host, settings.dispatcher_metrics_port),
        ):
            provider = IntaSendClient(
                session,
                base_url=settings.intasend_base_url,
                secret_key=secret,
                timeout_s=settings.intasend_timeout_s,
            )
            limiter = ProviderRateLimiter(pool, max_rps=settings.intasend_max_rps)
            caller = ProviderCaller(limiter)
            await _check_provider(caller, provider)
            dispatcher = Dispatcher(
                pool=pool, dsn=dsn, provider=provider, caller=caller, settings=settings, callbacks=callbacks
            )
            await dispatcher.run(stop)
    finally:
        await pool.close()


async def _check_provider(caller: ProviderCaller, provider: IntaSendClient) -> None:
    """One wallets request at start (counted by the limiter): opens the connection the first payouts reuse,
    and says at once, in the log, when the provider is unreachable or refuses the secret key."""
    try:
        wallets = await caller.once("wallets", provider.wallets)
    except ProviderError as exc:
        log.error("provider_check_failed", error=str(exc), http_status=exc.status)
        return
    log.info("provider_check_ok", wallets=len(wallets))


def run(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT. Configuration errors and an unmigrated database exit non-zero at once."""
    try:
        asyncio.run(main(settings))
    except OSError as exc:
        print(f"payrun dispatcher: cannot reach the database: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _settings = Settings.from_env()
    configure(_settings.log_level, _settings.log_format)
    try:
        run(_settings)
    except PayrunError as _exc:
        print(f"payrun dispatcher: {_exc}", file=sys.stderr)
        sys.exit(2)
