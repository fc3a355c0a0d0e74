"""HTTP traffic to the API: a keep-alive client session, warming its connections up, calls released at one
instant, payrolls created through POST /payrolls, bounded concurrency."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.fixtures import account_of, amount_of


def session(limit: int) -> aiohttp.ClientSession:
    """One client session holding up to `limit` keep-alive connections to the API."""
    # uvicorn closes a keep-alive connection idle for 5 s; closing ours after 4 s avoids reusing one the
    # server is closing at that moment (a "Server disconnected" that is the client's race, not an error).
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit, keepalive_timeout=4, force_close=False
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300))


async def warm_up(client: aiohttp.ClientSession, base: str, n: int) -> int:
    """Open n connections (n requests in flight at once) so that TCP connects are not part of what is timed.
    uvicorn closes idle connections after 5 s: call this right before the release. Returns the pool size."""

    async def one() -> None:
        async with client.get(f"{base}/healthz") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(n)))
    conns = getattr(client.connector, "_conns", {})
    return sum(len(v) for v in conns.values())


@dataclass
class Call:
    status: int | str
    latency_s: float  # from this call's own send to its full answer
    done_at: float  # perf_counter when the answer was read
    body: bytes = b""


async def release_at_once(
    make: Sequence[Callable[[], Awaitable[tuple[int, bytes]]]],
) -> tuple[float, list[Call]]:
    """Start every call at one instant (all waiting on one event); returns (release perf_counter, calls)."""
    go = asyncio.Event()

    async def one(fn: Callable[[], Awaitable[tuple[int, bytes]]]) -> Call:
        await go.wait()
        started = time.perf_counter()
        try:
            status, body = await fn()
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, body = type(exc).__name__, b""
        now = time.perf_counter()
        return Call(status, now - started, now, body)

    tasks = [asyncio.create_task(one(fn)) for fn in make]
    await asyncio.sleep(0.05)  # every task is now parked on the event
    released = time.perf_counter()
    go.set()
    return released, list(await asyncio.gather(*tasks))


def post(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: Any = None
) -> Callable[[], Awaitable[tuple[int, bytes]]]:
    async def fn() -> tuple[int, bytes]:
        async with client.post(url, headers=headers, json=body) as resp:
            return resp.status, await resp.read()

    return fn


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


async def create_payroll_api(
    client: aiohttp.ClientSession, base: str, api_key: str, reference: str, first_worker: int, workers: int
) -> str:
    body = {
        "reference": reference,
        "currency": "KES",
        "items": [
            {"name": f"Worker {k}", "account": account_of(k), "amount": str(amount_of(k))}
            for k in range(first_worker, first_worker + workers)
        ],
    }
    async with client.post(f"{base}/payrolls", json=body, headers=auth(api_key)) as resp:
        text = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"POST /payrolls answered {resp.status}: {text[:300]}")
        return str(json.loads(text)["id"])


async def create_payrolls_api(
    client: aiohttp.ClientSession,
    base: str,
    keys: Sequence[str],
    prefix: str,
    workers: int,
    concurrency: int,
) -> list[str]:
    """One payroll of `workers` per API key (worker numbers follow on), at most `concurrency` at once."""
    return await bounded(
        concurrency,
        (
            create_payroll_api(client, base, key, f"{prefix}-{i}", i * workers, workers)
            for i, key in enumerate(keys)
        ),
    )


async def bounded(n: int, coros: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await the coroutines with at most n running at once, results in order."""
    sem = asyncio.Semaphore(n)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


# -- the simulator's view -------------------------------------------------------------------------------------
