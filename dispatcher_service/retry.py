"""The retry policy for provider requests, in one place.

Short, bounded retries inside one claim use tenacity with exponential back-off and jitter, honouring
`Retry-After`. Anything longer goes back to the outbox row's `available_at` (see dispatcher_service/batch_flow.py):
no coroutine sleeps for minutes while holding a lease.

What may be retried depends on the request, not only on the error:
- reads (status, wallets) and initiate (requires_approval=YES: a repeated initiate can at worst leave an
  orphan batch that payrun never approves) are retried on transient and ambiguous failures;
- approve is never retried blindly: after any failure the batch's status is asked first (batch_flow).

Every attempt checks, after every wait and immediately before it leaves, that its grant from the send log is
fresh and that the row's lease still holds (dispatcher_service/lease.py): a flow paused past its lease sends
nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import tenacity
from tenacity import AsyncRetrying, RetryCallState

from dispatcher_service.lease import Lease, LeaseExpired
from dispatcher_service.limiter import ProviderRateLimiter, Send
from dispatcher_service.provider.protocol import ProviderAmbiguous, ProviderRateLimited, ProviderUnavailable
from shared import metrics
from shared.logging import get_logger

T = TypeVar("T")
log = get_logger(__name__)

INLINE_ATTEMPTS = 4
INLINE_MAX_WAIT_S = 8.0
_backoff = tenacity.wait_exponential_jitter(multiplier=0.5, max=INLINE_MAX_WAIT_S, jitter=0.5)


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    return getattr(exc, "retry_after", None)


def _wait(state: RetryCallState) -> float:
    return max(_backoff(state), _retry_after(state) or 0.0)


def _stop_if_long_wait(state: RetryCallState) -> bool:
    """A Retry-After longer than we keep a lease for: give the row back instead of sleeping."""
    return (_retry_after(state) or 0.0) > INLINE_MAX_WAIT_S


def _log_retry(endpoint: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        metrics.PROVIDER_RETRIES.labels(endpoint).inc()
        log.info(
            "provider_retry",
            endpoint=endpoint,
            attempt=state.attempt_number,
            error=str(exc),
            wait_s=round(state.upcoming_sleep, 3),
        )

    return before_sleep


def policy(endpoint: str, *, retry_ambiguous: bool, attempts: int = INLINE_ATTEMPTS) -> AsyncRetrying:
    retryable: tuple[type[BaseException], ...] = (ProviderUnavailable,)
    if retry_ambiguous:
        retryable += (ProviderAmbiguous,)
    return AsyncRetrying(
        retry=tenacity.retry_if_exception_type(retryable),
        # tenacity combines a stop with any callable of the call state; its annotation names stop_base only.
        stop=tenacity.stop_after_attempt(attempts) | _stop_if_long_wait,  # type: ignore[operator]
        wait=_wait,
        before_sleep=_log_retry(endpoint),
        reraise=True,
    )


class ProviderCaller:
    """Every provider request goes through here: the shared rate limit, then the request, then 429 handling."""

    def __init__(self, limiter: ProviderRateLimiter) -> None:
        self._limiter = limiter

    async def call(
        self,
        endpoint: str,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_ambiguous: bool,
        lease: Lease | None = None,
        priority: Callable[[], int] | None = None,
    ) -> T:
        async for attempt in policy(endpoint, retry_ambiguous=retry_ambiguous):
            with attempt:
                return await self.once(endpoint, fn, lease=lease, priority=priority)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def once(
        self,
        endpoint: str,
        fn: Callable[[], Awaitable[T]],
        *,
        lease: Lease | None = None,
        priority: Callable[[], int] | None = None,
    ) -> T:
        """One request: `lease` is the claimed row's it acts for (None for requests of no row); among the
        requests of this process waiting for the rate limit, those with a lower `priority()` go first."""
        send = await self._granted(endpoint, lease, priority() if priority else 0)
        try:
            try:
                result = await fn()
            finally:
                await self._limiter.answered(send)
        except ProviderRateLimited as exc:
            await self._limiter.rate_limited(exc.retry_after)
            self._record(endpoint, "rate_limited", send.waited_s)
            raise
        except ProviderUnavailable:
            self._record(endpoint, "unavailable", send.waited_s)
            raise
        except ProviderAmbiguous:
            self._record(endpoint, "ambiguous", send.waited_s)
            raise
        except Exception:
            self._record(endpoint, "rejected", send.waited_s)
            raise
        self._limiter.succeeded()
        self._record(endpoint, "ok", send.waited_s)
        return result

    async def _granted(self, endpoint: str, lease: Lease | None, priority: int) -> Send:
        """A place in the send log that is fresh, under a lease that still holds. Nothing may be awaited
        between this returning and the request being handed to the HTTP client."""
        while True:
            send = await self._limiter.acquire(priority)
            if lease is not None:
                try:
                    lease.check(endpoint)
                except LeaseExpired:
                    await self._limiter.unused(send)
                    metrics.PROVIDER_REQUESTS.labels(endpoint, "lease_expired").inc()
                    raise
            if self._limiter.fresh(send):
                return send
            await self._limiter.unused(send)
            log.warning(
                "send_grant_stale",
                endpoint=endpoint,
                granted_s_ago=round(time.monotonic() - send.granted_at, 3),
            )

    @staticmethod
    def _record(endpoint: str, outcome: str, waited: float) -> None:
        metrics.PROVIDER_REQUESTS.labels(endpoint, outcome).inc()
        metrics.LIMITER_WAIT.observe(waited)
