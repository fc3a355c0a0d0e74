"""One claimed `deliver_event` row: POST the event to its employer's callback URL, signed, then record it.

Events never share anything with payouts but the claim and the pool: their own aiohttp session (its own
connection limit), their own share of the claim (EMPLOYER_CALLBACK_CONCURRENCY), no provider rate limiter,
and a short total timeout, so a receiver that hangs or fails holds one event slot for at most
EMPLOYER_CALLBACK_TIMEOUT_S and never a payout. No transaction is open while the request is in flight.
"""

from __future__ import annotations

import random
import time
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from dispatcher_service.lease import Lease
from shared import events, outbox, signing
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

RETRY_MAX_S = 3600.0


def retry_delay_s(first_s: float, attempts: int) -> float:
    """Exponential back-off from `first_s` after the first failed attempt, at most an hour, ±20% jitter."""
    base = min(RETRY_MAX_S, first_s * 2.0 ** max(0, attempts - 1))
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not a secret


def _shown(url: str) -> str:
    """The URL as attempts and logs show it: without its query (which may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class EventDelivery:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        session: aiohttp.ClientSession,
        settings: Settings,
        worker: str,
        row: outbox.Claimed,
        lease: Lease,
    ) -> None:
        self.pool, self.session, self.settings, self.worker = pool, session, settings, worker
        self.row, self.lease = row, lease
        self.log = log.bind(
            outbox_id=row.id, payroll_id=str(row.payroll_id), event_id=row.payload.get("event_id")
        )

    async def run(self) -> None:
        target = await events.delivery_target(self.pool, self.row.payroll_id)
        if target is None:
            await self._record(events.Outcome.NO_CALLBACK, "the employer has no callback URL any more")
            return
        outcome, detail = await self._post(target)
        await self._record(outcome, detail)

    async def _post(self, target: events.Target) -> tuple[events.Outcome, str]:
        payload = self.row.payload
        body = events.body(payload)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "payrun-events/1",
            signing.SIGNATURE_HEADER: signing.signature_header(target.secret, timestamp, body),
            signing.EVENT_ID_HEADER: str(payload["event_id"]),
            signing.EVENT_TYPE_HEADER: str(payload["type"]),
        }
        where = _shown(target.url)
        self.lease.check("an employer event")
        started = time.monotonic()
        try:
            async with self.session.post(
                target.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.settings.employer_callback_timeout_s),
            ) as response:
                status = response.status
        except TimeoutError:
            took = time.monotonic() - started
            return events.Outcome.TIMEOUT, f"no answer within {took:.1f} s from {where}"
        except aiohttp.ClientError as exc:
            return events.Outcome.UNREACHABLE, f"{type(exc).__name__}: {exc} ({where})"
        took = time.monotonic() - started
        outcome = events.Outcome.OK if 200 <= status < 300 else events.Outcome.HTTP_ERROR
        return outcome, f"HTTP {status} in {took:.3f} s from {where}"

    async def _record(self, outcome: events.Outcome, detail: str) -> None:
        s = self.settings
        status = await events.record_attempt(
            self.pool,
            self.row,
            self.worker,
            outcome,
            detail,
            max_attempts=s.employer_callback_max_attempts,
            max_age_s=s.employer_callback_max_age_s,
            retry_in_s=retry_delay_s(s.employer_callback_retry_s, self.row.attempts),
        )
        fields = {"outcome": str(outcome), "detail": detail, "attempt": self.row.attempts}
        if status is None:
            self.log.warning("event_lease_lost", **fields)
        elif status == outbox.RowStatus.DONE:
            self.log.info("event_delivered", **fields)
        elif status == outbox.RowStatus.DEAD:
            self.log.error("event_dead", **fields)
        else:
            self.log.warning("event_retry_later", **fields)
