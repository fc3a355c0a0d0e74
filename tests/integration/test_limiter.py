from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from dispatcher_service.limiter import ProviderRateLimiter


def most_in_any_window(stamps: list[float], window: float = 1.0) -> int:
    stamps = sorted(stamps)
    best, start = 0, 0
    for end, t in enumerate(stamps):
        while t - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_three_processes_together_stay_within_the_limit_in_every_sliding_window(
    pool: asyncpg.Pool,
) -> None:
    """Three limiters (as in three dispatcher processes) share one budget through PostgreSQL."""
    limiters = [ProviderRateLimiter(pool, max_rps=10) for _ in range(3)]
    stamps: list[float] = []

    async def worker(limiter: ProviderRateLimiter) -> None:
        for _ in range(8):
            send = await limiter.acquire()
            stamps.append(time.monotonic())
            await limiter.answered(send)

    await asyncio.gather(*(worker(limiter) for limiter in limiters for _ in range(3)))
    assert len(stamps) == 72
    assert most_in_any_window(stamps) <= 10
    # How much of the budget is used is measured by bench/, not asserted here (this machine is noisy).


async def test_no_burst_after_an_idle_period(pool: asyncpg.Pool) -> None:
    limiter = ProviderRateLimiter(pool, max_rps=5)
    await asyncio.sleep(1.2)
    stamps = []
    for _ in range(6):
        send = await limiter.acquire()
        stamps.append(time.monotonic())
        await limiter.answered(send)
    assert most_in_any_window(stamps) <= 5


async def test_a_429_pauses_every_process(pool: asyncpg.Pool) -> None:
    first, second = ProviderRateLimiter(pool, max_rps=50), ProviderRateLimiter(pool, max_rps=50)
    await first.answered(await first.acquire())
    await first.rate_limited(retry_after=1.0)
    started = time.monotonic()
    await second.acquire()
    assert time.monotonic() - started >= 0.9


async def test_a_request_that_wakes_late_does_not_bunch_the_next_ones(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy machine wakes a waiting request late; the schedule moves with it instead of catching up."""
    from dispatcher_service import limiter as limiter_module

    real_sleep = asyncio.sleep
    calls = 0

    async def late_sleep(delay: float) -> None:
        nonlocal calls
        calls += 1
        await real_sleep(delay + (0.09 if calls % 4 == 0 else 0.0))

    monkeypatch.setattr(limiter_module.asyncio, "sleep", late_sleep)
    limiters = [ProviderRateLimiter(pool, max_rps=10) for _ in range(2)]  # two processes
    stamps: list[float] = []

    async def worker(limiter: ProviderRateLimiter) -> None:
        for _ in range(15):
            send = await limiter.acquire()
            stamps.append(time.monotonic())
            await limiter.answered(send)

    await asyncio.gather(*(worker(limiter) for limiter in limiters))
    assert most_in_any_window(stamps) <= 10


async def test_requests_the_provider_stamps_late_never_make_it_see_more_than_the_limit(
    pool: asyncpg.Pool,
) -> None:
    """The provider counts a request when it reads it, anywhere between our send and its answer. Here every
    third request reaches it 150 ms late (a busy machine, a slow network); the others at once. Counting each
    request until a window after its answer keeps every one-second window of the provider's stamps within
    the limit, whatever the lateness."""
    limiters = [ProviderRateLimiter(pool, max_rps=10) for _ in range(2)]
    provider_stamps: list[float] = []
    count = 0

    async def request() -> None:
        nonlocal count
        count += 1
        if count % 3 == 1:
            await asyncio.sleep(0.15)
        provider_stamps.append(time.monotonic())
        await asyncio.sleep(0.002)  # the answer travels back

    async def worker(limiter: ProviderRateLimiter) -> None:
        for _ in range(12):
            send = await limiter.acquire()
            try:
                await request()
            finally:
                await limiter.answered(send)

    await asyncio.gather(*(worker(limiter) for limiter in limiters for _ in range(4)))
    assert len(provider_stamps) == 96
    assert most_in_any_window(provider_stamps) <= 10


async def test_a_request_never_answered_stops_counting_after_the_stamp_bound(pool: asyncpg.Pool) -> None:
    """A dispatcher killed mid-request never records the answer: its requests hold their places in the
    window for STAMP_BOUND_S + one window, not forever."""
    from dispatcher_service.limiter import STAMP_BOUND_S, WINDOW_S

    dead = ProviderRateLimiter(pool, max_rps=3)
    for _ in range(3):
        await dead.acquire()  # never answered
    alive = ProviderRateLimiter(pool, max_rps=3)
    started = time.monotonic()
    await alive.answered(await alive.acquire())
    waited = time.monotonic() - started
    assert STAMP_BOUND_S + WINDOW_S - 0.8 <= waited <= STAMP_BOUND_S + WINDOW_S + 1.0


async def test_waiting_requests_of_one_process_go_by_priority_then_arrival(pool: asyncpg.Pool) -> None:
    """Requests queued first with a higher priority number (an employer with more batches in flight) do not
    hold back those with a lower one that come after them (status0 already holds the turn, waiting for its
    slot, when they come)."""
    limiter = ProviderRateLimiter(pool, max_rps=5)
    order: list[str] = []

    async def request(name: str, priority: int) -> None:
        await limiter.answered(await limiter.acquire(priority))
        order.append(name)

    first = asyncio.create_task(request("first", 2))
    await asyncio.sleep(0.05)
    waiting = [asyncio.create_task(request(f"status{n}", 2)) for n in range(3)]
    await asyncio.sleep(0.01)
    waiting += [asyncio.create_task(request("initiate", 1)), asyncio.create_task(request("approve", 0))]
    await asyncio.gather(first, *waiting)
    assert order == ["first", "status0", "approve", "initiate", "status1", "status2"]


async def test_a_request_cancelled_while_it_waits_for_its_turn_hands_the_turn_on(pool: asyncpg.Pool) -> None:
    limiter = ProviderRateLimiter(pool, max_rps=5)
    first = asyncio.create_task(limiter.acquire(2))
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(limiter.acquire(0))
    after = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.wait_for(asyncio.gather(first, after), 5)
