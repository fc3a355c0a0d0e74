"""The slow re-check: IntaSend's status of batches with NEEDS_REVIEW items, asked again for days.

An item can settle late (IntaSend's TF105 "cannot be determined", a batch that gave no final answer within
24 hours, a row that died after an approve may have gone through). Each such batch has a schedule
(shared/rechecks.py); one loop per dispatcher takes a due schedule with a lease (SKIP LOCKED, so two
dispatchers never ask about one batch at once), asks `status` through the same ProviderCaller and shared
limiter as every payout, and records what IntaSend now shows final (only codes dispatcher_service/outcomes.py
knows; anything else leaves the item NEEDS_REVIEW). Not final yet, a 404 (IntaSend lost the batch) or an
error: the check is counted and the next one waits longer, from RECHECK_FIRST_S doubling up to RECHECK_MAX_S;
past RECHECK_HORIZON_S the items are left for a person.

Payouts first: each process spends at most RECHECK_SHARE of INTASEND_MAX_RPS here (its own leaky bucket) and
its requests wait behind every payout request of the process for the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
from aiolimiter import AsyncLimiter

from dispatcher_service import outcomes
from dispatcher_service.lease import Lease, LeaseExpired
from dispatcher_service.provider.protocol import Batch, PayoutProvider, ProviderError, Transaction
from dispatcher_service.retry import ProviderCaller
from shared import db, metrics, rechecks
from shared.batches import Item, LeaseLost
from shared.logging import get_logger
from shared.payrolls import ItemStatus
from shared.rechecks import End
from shared.settings import Settings

log = get_logger(__name__)

# Behind every payout request of this process (whose priority is its employer's batches in flight here).
LOWEST_PRIORITY = 1_000_000
DISCOVER_EVERY_S = 60.0
IDLE_MAX_SLEEP_S = 60.0
DB_RETRY_MAX_S = 30.0
FINAL = (ItemStatus.PAID, ItemStatus.FAILED)


def next_wait_s(checks_done: int, first_s: float, max_s: float) -> float:
    """After the n-th check (1-based) that did not settle everything: first_s · 2^(n-1), at most max_s."""
    return min(max_s, first_s * 2.0 ** min(max(checks_done - 1, 0), 40))


class Rechecker:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        provider: PayoutProvider,
        caller: ProviderCaller,
        settings: Settings,
        worker: str,
    ) -> None:
        self.pool, self.provider, self.caller, self.settings, self.worker = (
            pool,
            provider,
            caller,
            settings,
            worker,
        )
        rate = settings.intasend_max_rps * settings.recheck_share
        self._pace = AsyncLimiter(1, 1.0 / rate)  # one check per 1/rate seconds, never a burst
        # A check holds its batch for one status request and one transaction.
        self.lease_s = settings.dispatcher_lease_s + settings.intasend_timeout_s
        # Find new batches once a minute, or every RECHECK_FIRST_S when that is shorter.
        self._discover_every_s = min(DISCOVER_EVERY_S, settings.recheck_first_s)
        self._discovered_at = -self._discover_every_s
        self.log = log.bind(dispatcher=worker)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                sleep_s = await self.run_once()
                failures = 0
            except db.TRANSIENT_ERRORS as exc:
                failures += 1
                sleep_s = min(DB_RETRY_MAX_S, 0.5 * 2**failures)
                self.log.warning("recheck_db_failed", error=str(exc), retry_in_s=sleep_s)
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), sleep_s)

    async def run_once(self) -> float:
        """Find new batches to re-check (now and then), check one due batch; returns how long to sleep."""
        if time.monotonic() - self._discovered_at >= self._discover_every_s:
            added = await rechecks.discover(self.pool, self.settings.recheck_first_s)
            self._discovered_at = time.monotonic()
            if added:
                self.log.info("recheck_scheduled", batches=added, first_in_s=self.settings.recheck_first_s)
        await self._pace.acquire()
        asked_at = time.monotonic()
        claimed = await rechecks.claim(self.pool, worker=self.worker, lease_s=self.lease_s, limit=1)
        if claimed:
            await self.check(claimed[0], asked_at)
            return 0.0
        due = await rechecks.next_due_s(self.pool)
        idle = min(IDLE_MAX_SLEEP_S, self._discover_every_s)
        return idle if due is None else min(max(due, 0.05), idle)

    async def check(self, claimed: rechecks.Claimed, asked_at: float) -> None:
        """Ask IntaSend about one claimed batch and record what it says."""
        lease = Lease(claimed.batch_id, claimed.lease_token, lease_s=self.lease_s, asked_at=asked_at)
        blog = self.log.bind(tracking_id=claimed.tracking_id, check=claimed.checks + 1)
        items = await rechecks.items_to_recheck(self.pool, claimed.batch_id)
        try:
            if not items:
                await rechecks.checked(self.pool, claimed, "nothing left", next_s=0, end=End.FINISHED)
                return
            try:
                batch = await self.caller.once(
                    "status",
                    lambda: self.provider.status(claimed.tracking_id),
                    lease=lease,
                    priority=lambda: LOWEST_PRIORITY,
                )
            except LeaseExpired as exc:
                blog.warning("recheck_lease_expired", error=str(exc))
                return
            except ProviderError as exc:
                result = "not_found" if exc.status == 404 else f"error: {exc}"
                await self._not_settled(claimed, items, result, blog)
                return
            await self._answered(claimed, items, batch, blog)
        except LeaseLost as exc:
            # Paused past the lease: another dispatcher may have the batch now; its answer stands.
            blog.warning("recheck_lease_lost", error=str(exc))

    async def _not_settled(
        self, claimed: rechecks.Claimed, items: list[Item], result: str, blog: Any
    ) -> None:
        end, next_s = self._schedule(claimed)
        await rechecks.checked(self.pool, claimed, result, next_s=next_s, end=end)
        kind = result.split(":")[0]
        metrics.RECHECKS.labels(kind).inc()
        level = blog.warning if kind != "not_final" else blog.info
        level(
            "recheck_not_settled",
            result=result,
            items=len(items),
            next_in_s=None if end else round(next_s),
            gave_up=end == End.GAVE_UP,
        )
        if end == End.GAVE_UP:
            self._gave_up(claimed, items, blog)

    async def _answered(self, claimed: rechecks.Claimed, items: list[Item], batch: Batch, blog: Any) -> None:
        reading = outcomes.read_status(batch, items)
        txns = {t.request_reference_id: t for t in batch.transactions if t.request_reference_id}
        refs = {i.id: i.request_reference_id for i in items}
        answers = [
            rechecks.Late(o, *_evidence(batch, txns.get(refs[o.item_id] or "")))
            for o in reading.outcomes
            if o.status in FINAL
        ]
        left = len(items) - len(answers)
        end, next_s = self._schedule(claimed) if left else (End.FINISHED, 0.0)
        if not answers:
            await self._not_settled(claimed, items, f"not_final: {reading.summary}", blog)
            return
        recorded = await rechecks.record(
            self.pool,
            claimed,
            self.worker,
            answers,
            result=f"settled {len(answers)} of {len(items)}: {reading.summary}",
            next_s=next_s,
            end=end,
        )
        metrics.RECHECKS.labels("settled").inc()
        for w in recorded.items:
            agreement = "none" if w.agrees is None else ("agrees" if w.agrees else "overrides")
            metrics.LATE_SETTLEMENTS.labels(w.to_status, agreement).inc()
            fields = dict(
                item_id=w.item_id,
                payroll_id=str(w.payroll_id),
                from_status=w.from_status,
                to_status=w.to_status,
                payroll_status=recorded.payrolls[w.payroll_id],
            )
            if w.agrees is False:
                blog.warning("late_answer_overrides_resolution", **fields)
            elif w.agrees:
                blog.info("late_answer_agrees_with_resolution", **fields)
            else:
                blog.info("item_settled_late", **fields)
        if end == End.GAVE_UP:
            self._gave_up(claimed, items, blog)

    def _schedule(self, claimed: rechecks.Claimed) -> tuple[str | None, float]:
        s = self.settings
        if claimed.age_s >= s.recheck_horizon_s:
            return End.GAVE_UP, 0.0
        return End.GO_ON, next_wait_s(claimed.checks + 1, s.recheck_first_s, s.recheck_max_s)

    @staticmethod
    def _gave_up(claimed: rechecks.Claimed, items: list[Item], blog: Any) -> None:
        metrics.RECHECKS.labels("gave_up").inc()
        blog.warning(
            "recheck_gave_up",
            items=len(items),
            checks=claimed.checks + 1,
            age_h=round(claimed.age_s / 3600, 1),
            detail="IntaSend gave no final answer: a person resolves these items (POST /ops/items/resolve)",
        )


def _evidence(batch: Batch, txn: Transaction | None) -> tuple[str | None, dict[str, Any]]:
    """The code an item was settled from and what IntaSend said of it: its transaction as the client read
    it, or the batch's code when the answer did not list the item."""
    if txn is None:
        return batch.status_code, {
            "batch_status_code": batch.status_code,
            "batch_status": batch.status,
            "listed": False,
        }
    return txn.status_code or batch.status_code, {
        "request_reference_id": txn.request_reference_id,
        "status_code": txn.status_code,
        "status": txn.status,
        "provider_reference": txn.provider_reference,
        "failure_reason": txn.failure_reason,
        "account": txn.account,
        "amount": txn.amount,
        "name": txn.name,
    }
