"""One claimed outbox row, carried through IntaSend's two-step flow to a final state.

Exactly once, step by step (the promise: docs/api.md section 6):
1. initiate with requires_approval="YES": nothing moves. A lost or repeated initiate leaves at most an orphan
   batch waiting for approval, which payrun never approves.
2. persist tracking_id, nonce, the answer's bytes and each item's request_reference_id (fenced, one batch row
   per outbox row) BEFORE approving.
3. funds: right before approving, the batch's total estimate (charges included) is compared with its wallet's
   available balance, read after the last wait (the initiate response's balance only when approve follows
   at once; otherwise a wallets request through the same limiter). A short batch is not approved: its row
   goes back to `available_at` with back-off, its stage stays `initiated`, the shortfall is recorded.
   stage `approving` is written (fenced) before the approve request goes out, and with it the items are linked
   to the batch and become SUBMITTED (one write of each); a batch carrying an item its
   employer cancelled is abandoned unapproved instead (shared/cancellation.py: the same lock decides). Whoever finds a batch in
   `approving` (this dispatcher after an error, or another after a crash) asks `status` first and approves
   only a batch the provider still shows as waiting for approval.
4. follow the batch with `status` until every item is final, then record items, the row and (if it was the
   last row) the payroll in one transaction.
Long waits go back to the row's `available_at`; no coroutine holds a lease across minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from dispatcher_service import outcomes
from dispatcher_service.lease import Lease, LeaseExpired
from dispatcher_service.provider.protocol import (
    Batch,
    PayoutProvider,
    ProviderAmbiguous,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from dispatcher_service.retry import ProviderCaller
from shared import batches, db, metrics, outbox
from shared.batches import BatchCancelled, FundsCheck, LeaseLost, Stage
from shared.logging import get_logger
from shared.outbox import RowStatus
from shared.payrolls import ItemStatus
from shared.settings import Settings

log = get_logger(__name__)

POLL_DELAYS_S = (1.0, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
INLINE_WAIT_LIMIT_S = 5.0
# Initiates of one row that may come back refusing only some named transactions before the whole row is
# failed instead (a provider that refuses one item per request would otherwise cost a request per item).
MAX_ITEM_REFUSALS = 3
FOLLOW_HORIZON_S = 24 * 3600.0
AUTH_STATUSES = (401, 403)


def poll_delay(polls_done: int) -> float:
    return POLL_DELAYS_S[min(polls_done, len(POLL_DELAYS_S) - 1)]


def row_backoff(errors: int) -> float:
    """Back-off before a row that failed is tried again: 2, 4, 8 ... 300 s, with jitter."""
    base = min(300.0, 2.0 ** (errors + 1))
    return base * random.uniform(0.8, 1.2)


class BatchFlow:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        provider: PayoutProvider,
        caller: ProviderCaller,
        settings: Settings,
        worker: str,
        row: outbox.Claimed,
        lease: Lease,
        stopping: asyncio.Event | None = None,
        on_formed: Callable[[], None] | None = None,
        priority: Callable[[], int] | None = None,
    ) -> None:
        self.pool, self.provider, self.caller, self.settings = pool, provider, caller, settings
        self.worker, self.row, self.lease = worker, row, lease
        self.stopping = stopping or asyncio.Event()
        # The rows this row's provider batch carries besides its own (gathered before initiate).
        self.carried: list[outbox.Carried] = []
        # Until its batch is initiated the flow may still gather rows: the dispatcher claims few such flows
        # at a time, so that rows waiting for the rate limit wait as rows, to be gathered into one batch.
        self.forming = True
        self._on_formed = on_formed
        # Fair across employers at the rate limit too: this process's requests for employers with fewer
        # batches in flight go first (dispatcher.Dispatcher._employer_load).
        self._priority = priority
        self.log = log.bind(outbox_id=row.id, payroll_id=str(row.payroll_id), attempt=row.attempts)
        # The initiate answer of this run, whose wallet balance is fresh only if approve follows at once.
        self._fresh: Batch | None = None
        # The batch's items with their references, once this flow has them (read once per claim).
        self.sent_items: list[batches.Item] | None = None
        # The batch code last recorded: a status answer is kept whole only when its code differs.
        self.recorded_code: str | None = None

    @property
    def item_ids(self) -> list[int]:
        own = [int(i) for i in self.row.payload["item_ids"]]
        return own + [i for c in self.carried for i in c.item_ids]

    def _formed(self) -> None:
        if self.forming:
            self.forming = False
            if self._on_formed is not None:
                self._on_formed()

    async def run(self) -> None:
        try:
            self.carried = await outbox.carried_rows(self.pool, self.row.id)
            stored = await batches.for_row(self.pool, self.row.id)
            if stored is None:
                if await self._hand_back_if_stopping("initiate"):
                    return
                try:
                    stored = await self._initiate()
                finally:
                    self._formed()
                if stored is None:
                    return
            self._formed()
            self.recorded_code = stored.status_code
            self.log = self.log.bind(tracking_id=stored.tracking_id)
            if stored.stage == Stage.INITIATED:
                if await self._hand_back_if_stopping("approve"):
                    return
                if not await self._funds_cover(stored) or not await self._approve(stored, first=True):
                    return
            elif stored.stage == Stage.APPROVING:
                if not await self._resolve_approving(stored, approve_error=None):
                    return
            elif stored.stage in (Stage.FINISHED, Stage.REJECTED):
                # Settled but the row not finished: cannot happen (one transaction). Settle nothing twice.
                await self._give_up(f"the batch was already {stored.stage}")
                return
            await self._follow(stored)
        except LeaseExpired as exc:
            # Paused past the lease (or its heartbeats failed): nothing was sent. Hand the row back at once if
            # it is still ours, to be resumed from its recorded stage; if not, its new holder goes on.
            self.log.warning("lease_expired", detail=str(exc))
            with contextlib.suppress(*db.TRANSIENT_ERRORS):
                await outbox.release(self.pool, self.row.id, self.row.lease_token, delay_s=0.0)
        except BatchCancelled as exc:
            self.log.warning("batch_abandoned", detail=str(exc))
        except LeaseLost as exc:
            self.log.warning("lease_lost", detail=str(exc))

    # -- step 1 and 2: initiate, then persist before anything else -------------------------------------

    async def _initiate(self) -> batches.StoredBatch | None:
        provider_name = self.row.payload["provider"]
        currency = self.row.payload.get("currency", "KES")
        wallet_id = self.row.payload.get("wallet_id")
        # Rows that wait anyway (the rate limit is busy, or they came in together) go out in one batch.
        gathered = await batches.gather(
            self.pool,
            self.row,
            provider=provider_name,
            currency=currency,
            wallet_id=wallet_id,
            room=self.settings.intasend_batch_size - len(self.item_ids),
        )
        if gathered:
            self.carried += gathered
            self.log.info("rows_gathered", rows=len(gathered), carried=len(self.carried))
        # Items refused one by one on an earlier initiate of this row are FAILED already: never sent again.
        items = [i for i in await batches.items(self.pool, self.item_ids) if i.status == ItemStatus.PENDING]
        for refusals in range(MAX_ITEM_REFUSALS + 1):
            if not items:
                final = await batches.settle(self.pool, self.row, [], batch_id=None, carried=self.carried)
                self.log.warning("batch_no_item_left", payroll_status=final)
                return None
            transactions = [_transaction(i) for i in items]
            try:
                batch = await self.caller.call(
                    "initiate",
                    functools.partial(
                        self.provider.initiate,
                        provider=provider_name,
                        currency=currency,
                        transactions=transactions,
                        requires_approval="YES",
                        callback_url=self.settings.intasend_callback_url,
                        wallet_id=wallet_id or self.settings.intasend_wallet_id,
                    ),
                    retry_ambiguous=True,
                    lease=self.lease,
                    priority=self._priority,
                )
            except ProviderRejected as exc:
                if exc.status in AUTH_STATUSES:
                    await self._retry_later(f"IntaSend refused our credentials on initiate: {exc}")
                    return None
                refused = outcomes.refused_items(exc.body, items) if refusals < MAX_ITEM_REFUSALS else None
                if refused and len(refused) < len(items):
                    # IntaSend named the transactions it will not take: fail those, send the others.
                    await batches.fail_items(
                        self.pool,
                        self.row,
                        [batches.ItemOutcome(i, ItemStatus.FAILED, r) for i, r in refused.items()],
                    )
                    await batches.log_attempt(
                        self.pool, self.row, self.worker, "initiate", "items_refused", str(exc)
                    )
                    self.log.warning("items_refused", items=len(refused), reason=str(exc))
                    items = [i for i in items if i.id not in refused]
                    continue
                reason = f"IntaSend refused the batch: {exc}"
                await batches.log_attempt(self.pool, self.row, self.worker, "initiate", "rejected", str(exc))
                final = await self._refused(reason, batch_id=None)
                self.log.warning("batch_rejected", reason=reason, payroll_status=final)
                return None
            except (ProviderUnavailable, ProviderAmbiguous) as exc:
                await self._retry_later(f"initiate failed: {exc}")
                return None
            break
        refs = outcomes.match_references(items, batch.transactions)
        if refs is None:
            await self._retry_later(
                f"initiate response for batch {batch.tracking_id} does not list the items sent; it is abandoned unapproved"
            )
            return None
        stored = await batches.persist_initiated(
            self.pool,
            self.row,
            tracking_id=batch.tracking_id,
            nonce=batch.nonce,
            response=batch.raw,
            refs=refs,
            approve_body=batch.body,
        )
        self._fresh = batch
        self.sent_items = batches.with_references(items, refs)
        await batches.log_attempt(self.pool, self.row, self.worker, "initiate", "ok", batch.tracking_id)
        self.log.info(
            "batch_initiated", tracking_id=batch.tracking_id, items=len(items), rows=1 + len(self.carried)
        )
        return stored

    # -- step 3: funds, then approve exactly the persisted batch ----------------------------------------

    async def _items_sent(self, stored: batches.StoredBatch) -> list[batches.Item]:
        """The items the batch was initiated with, with their references (read once per claim)."""
        if self.sent_items is None:
            self.sent_items = await batches.sent_items(self.pool, stored.id)
        if self.sent_items is None:  # initiated before migration 0020: its items were linked then
            self.sent_items = [
                i for i in await batches.items(self.pool, self.item_ids) if i.request_reference_id
            ]
        return self.sent_items

    async def _funds_cover(self, stored: batches.StoredBatch) -> bool:
        """True when the wallet, read now, covers the batch (or the provider does not say): approve. False
        when the row went back to wait (short: re-checked later with back-off; or the wallet read failed)."""
        fresh, self._fresh = self._fresh, None
        wallet_id = _wallet_id(stored.initiate_response) or self.row.payload.get("wallet_id")
        wallet_id = wallet_id or self.settings.intasend_wallet_id
        available = _available(fresh.raw.get("wallet")) if fresh is not None else None
        if available is None:
            try:
                wallets = await self.caller.call(
                    "wallets",
                    self.provider.wallets,
                    retry_ambiguous=True,
                    lease=self.lease,
                    priority=self._priority,
                )
            except ProviderError as exc:
                await self._retry_later(f"reading the wallet balance before approve failed: {exc}")
                return False
            available = _available(_find_wallet(wallets, wallet_id))
        required = _estimate(stored.initiate_response, [i.amount for i in await self._items_sent(stored)])
        if available is None or required is None:
            metrics.FUNDS_CHECKS.labels("unknown").inc()
            self.log.warning(
                "funds_unknown", wallet_id=wallet_id, detail="the provider gave no balance or estimate"
            )
            return True
        check = FundsCheck(required, available, wallet_id)
        short_checks = await batches.record_funds(self.pool, self.row, stored.id, check)
        if check.short_by <= 0:
            metrics.FUNDS_CHECKS.labels("covered").inc()
            self.log.info(
                "funds_covered", required=str(required), available=str(available), wallet_id=wallet_id
            )
            return True
        metrics.FUNDS_CHECKS.labels("short").inc()
        delay = funds_backoff(
            short_checks,
            self.settings.dispatcher_funds_recheck_s,
            self.settings.dispatcher_funds_recheck_max_s,
        )
        detail = (
            f"waiting for funds: wallet {wallet_id or '(default)'} has {available} available, batch "
            f"{stored.tracking_id} needs {required} (charges included): {check.short_by} short"
        )
        await batches.log_attempt(self.pool, self.row, self.worker, "funds_check", "short", detail)
        await outbox.release(self.pool, self.row.id, self.row.lease_token, delay_s=delay, error=detail)
        self.log.warning(
            "batch_waiting_for_funds",
            wallet_id=wallet_id,
            required=str(required),
            available=str(available),
            short_by=str(check.short_by),
            checks=short_checks,
            recheck_in_s=round(delay, 1),
        )
        return False

    async def _approve(self, stored: batches.StoredBatch, *, first: bool) -> bool:
        """`first`: no approve of this batch can have gone out before (it was still `initiated`)."""
        await batches.set_stage(self.pool, self.row, stored.id, Stage.APPROVING, self.carried)
        try:
            await self.caller.once(
                "approve",
                lambda: self.provider.approve(_stored_batch(stored)),
                lease=self.lease,
                priority=self._priority,
            )
        except ProviderError as exc:
            self.log.warning("approve_uncertain", error=str(exc), http_status=exc.status)
            await batches.log_attempt(
                self.pool, self.row, self.worker, "approve", type(exc).__name__, str(exc)
            )
            return await self._resolve_approving(stored, approve_error=exc, first_approve=first)
        await batches.set_stage(self.pool, self.row, stored.id, Stage.APPROVED, self.carried)
        await batches.log_attempt(self.pool, self.row, self.worker, "approve", "ok", stored.tracking_id)
        self.log.info("batch_approved")
        return True

    async def _resolve_approving(
        self, stored: batches.StoredBatch, approve_error: ProviderError | None, first_approve: bool = False
    ) -> bool:
        """We may or may not have approved: the provider's status decides, before anything is sent again.

        A refused approve means nothing moved only if it was the batch's first: after an approve whose
        answer was lost, a provider whose status lags behind may refuse the next one because the first went
        through. Then only a later status can tell, and the batch is asked again later (NEEDS_REVIEW, never
        FAILED, if it never tells)."""
        try:
            batch = await self.caller.call(
                "status",
                lambda: self.provider.status(stored.tracking_id),
                retry_ambiguous=True,
                lease=self.lease,
                priority=self._priority,
            )
        except ProviderError as exc:
            await self._retry_later(f"status after approve failed: {exc}")
            return False
        await self._record_poll(stored, batch)
        if not outcomes.awaiting_approval(batch):
            await batches.set_stage(self.pool, self.row, stored.id, Stage.APPROVED, self.carried)
            self.log.info("batch_approval_confirmed", status_code=batch.status_code)
            return True
        refused = isinstance(approve_error, ProviderRejected) and approve_error.status not in AUTH_STATUSES
        if refused and not first_approve:
            await self._retry_later(
                f"IntaSend refused to approve batch {stored.tracking_id} again ({approve_error}) while its "
                "status still shows it waiting: an earlier approve may have gone through; asking status later"
            )
            return False
        if refused:
            reason = f"IntaSend refused to approve batch {stored.tracking_id}: {approve_error}"
            final = await self._refused(reason, batch_id=stored.id)
            self.log.warning("batch_approval_refused", reason=reason, payroll_status=final)
            return False
        if approve_error is None:
            # Found in `approving` after a crash, still waiting: approve it now (same batch, same items), on a
            # balance read now: the check made before `approving` was written may be long stale.
            if not await self._funds_cover(stored):
                return False
            return await self._approve(stored, first=False)
        await self._retry_later(
            f"approve not accepted yet ({approve_error}); the batch still waits for approval"
        )
        return False

    # -- step 4: follow the batch to the end -----------------------------------------------------------

    async def _follow(self, stored: batches.StoredBatch) -> None:
        # The batch's items: those it was initiated with (not those IntaSend refused one by one).
        items = await self._items_sent(stored)
        polls = stored.status_polls
        # Just approved: give the provider a moment. Back from a long wait: ask at once.
        delay = poll_delay(0) if polls == 0 else 0.0
        while True:
            if delay > INLINE_WAIT_LIMIT_S:
                await outbox.release(self.pool, self.row.id, self.row.lease_token, delay_s=delay)
                self.log.info("batch_poll_later", wait_s=delay, polls=polls)
                return
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
            if await self._hand_back_if_stopping("status"):
                return
            try:
                batch = await self.caller.call(
                    "status",
                    lambda: self.provider.status(stored.tracking_id),
                    retry_ambiguous=True,
                    lease=self.lease,
                    priority=self._priority,
                )
            except ProviderError as exc:
                await self._retry_later(f"status failed: {exc}")
                return
            polls += 1
            reading = outcomes.read_status(batch, items)
            if reading.final:
                # The final answer is recorded, and kept whole, in the same transaction as the outcomes.
                final = await batches.settle(
                    self.pool,
                    self.row,
                    reading.outcomes,
                    batch_id=stored.id,
                    carried=self.carried,
                    final_status=(batch.body if batch.body is not None else batch.raw, batch.status_code),
                )
                counts: dict[str, int] = {}
                for o in reading.outcomes:
                    counts[o.status] = counts.get(o.status, 0) + 1
                self.log.info(
                    "batch_settled", polls=polls, status=reading.summary, items=counts, payroll_status=final
                )
                return
            await self._record_poll(stored, batch)
            if await self._past_horizon(stored):
                settled = {o.item_id for o in reading.outcomes}
                reason = "the provider gave no final outcome within 24 hours"
                rest = [
                    batches.ItemOutcome(i.id, ItemStatus.NEEDS_REVIEW, reason)
                    for i in items
                    if i.id not in settled
                ]
                await batches.settle(
                    self.pool,
                    self.row,
                    list(reading.outcomes) + rest,
                    batch_id=stored.id,
                    carried=self.carried,
                )
                self.log.warning("batch_needs_review", reason=reason)
                return
            delay = poll_delay(polls)

    async def _record_poll(self, stored: batches.StoredBatch, batch: Batch) -> None:
        """A status answer that is not final: its body is kept (docs/audit.md) only when the batch's code
        moved, so a batch polled for hours keeps one copy per code, not one per poll."""
        changed = batch.status_code != self.recorded_code
        body = (batch.body if batch.body is not None else batch.raw) if changed else None
        await batches.record_poll(self.pool, self.row, stored.id, body, batch.status_code)
        self.recorded_code = batch.status_code

    async def _past_horizon(self, stored: batches.StoredBatch) -> bool:
        approved_age = await batches.approved_age_s(self.pool, stored.id)
        return approved_age is not None and approved_age > FOLLOW_HORIZON_S

    # -- stopping and failures -------------------------------------------------------------------------

    async def _hand_back_if_stopping(self, next_step: str) -> bool:
        """The dispatcher is stopping: start no new step, give the row back to be resumed from its stage."""
        if not self.stopping.is_set():
            return False
        await outbox.release(self.pool, self.row.id, self.row.lease_token, delay_s=0.0)
        self.log.info("batch_handed_back", next_step=next_step)
        return True

    async def _refused(self, reason: str, *, batch_id: int | None) -> str | None:
        """IntaSend refused the batch before anything moved: every item not yet final FAILED, row done."""
        return await batches.settle_all(
            self.pool,
            self.row,
            self.item_ids,
            status=ItemStatus.FAILED,
            reason=reason,
            batch_id=batch_id,
            batch_stage=Stage.REJECTED,
            row_status=RowStatus.DONE,
            carried=self.carried,
        )

    async def _retry_later(self, error: str) -> None:
        errors = self.row.errors + 1
        if errors >= self.settings.dispatcher_max_errors:
            await self._give_up(f"gave up after {errors} failed attempts; last: {error}")
            return
        delay = row_backoff(self.row.errors)
        await batches.log_attempt(self.pool, self.row, self.worker, "retry_later", "error", error)
        await outbox.release(
            self.pool, self.row.id, self.row.lease_token, delay_s=delay, error=error, count_error=True
        )
        self.log.warning("batch_retry_later", error=error, wait_s=round(delay, 1), errors=errors)

    async def give_up(self, reason: str) -> None:
        """Used by the dispatcher when the flow itself keeps crashing on this row."""
        await self._give_up(reason)

    async def _give_up(self, reason: str) -> None:
        """The row goes `dead`, with the rows its batch carries (read again: the flow may have crashed before
        it knew them). Items of a batch that may have been approved need a person; others failed."""
        self.carried = await outbox.carried_rows(self.pool, self.row.id)
        stored = await batches.for_row(self.pool, self.row.id)
        may_have_moved = stored is not None and stored.stage in (
            Stage.APPROVING,
            Stage.APPROVED,
            Stage.FINISHED,
        )
        status = ItemStatus.NEEDS_REVIEW if may_have_moved else ItemStatus.FAILED
        final = await batches.settle_all(
            self.pool,
            self.row,
            self.item_ids,
            status=status,
            reason=reason,
            batch_id=stored.id if stored else None,
            batch_stage=Stage.FINISHED if may_have_moved else Stage.REJECTED,
            row_status=RowStatus.DEAD,
            carried=self.carried,
        )
        self.log.error("batch_dead", reason=reason, items_status=status, payroll_status=final)


def funds_backoff(short_checks: int, first_s: float, max_s: float) -> float:
    """Wait before a short batch's next funds check: first_s, doubling, at most max_s, with jitter."""
    base = min(max_s, first_s * 2.0 ** max(0, short_checks - 1))
    return base * random.uniform(0.9, 1.1)


def _decimal(value: Any) -> Decimal | None:
    try:
        amount = None if value is None or isinstance(value, bool) else Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount is not None and amount.is_finite() else None


def _wallet_id(response: dict[str, Any]) -> str | None:
    wallet = response.get("wallet")
    found = wallet.get("wallet_id") if isinstance(wallet, dict) else None
    return str(found) if found else None


def _available(wallet: Any) -> Decimal | None:
    return _decimal(wallet.get("available_balance")) if isinstance(wallet, dict) else None


def _find_wallet(wallets: list[dict[str, Any]], wallet_id: str | None) -> dict[str, Any] | None:
    """The named wallet; without a name, the account's default (its SETTLEMENT wallet, else the first)."""
    if wallet_id is not None:
        return next((w for w in wallets if str(w.get("wallet_id", w.get("id"))) == wallet_id), None)
    settlement = [w for w in wallets if w.get("wallet_type") == "SETTLEMENT"]
    candidates = settlement or wallets
    return candidates[0] if candidates else None


def _estimate(response: dict[str, Any], amounts: list[Decimal]) -> Decimal | None:
    """The batch's total estimate, charges included: `total_amount_estimate`, else the amounts of the items it
    carries plus `charge_estimate` (None when IntaSend gave neither estimate)."""
    estimate = _decimal(response.get("total_amount_estimate"))
    if estimate is not None:
        return estimate
    charges = _decimal(response.get("charge_estimate"))
    if charges is None or not amounts:
        return None
    return sum(amounts, Decimal(0)) + charges


def _transaction(item: batches.Item) -> dict[str, Any]:
    txn: dict[str, Any] = {"name": item.name, "account": item.account, "amount": _json_amount(item.amount)}
    if item.narrative:
        txn["narrative"] = item.narrative
    if item.bank_code:
        txn["bank_code"] = item.bank_code
    return txn


def _json_amount(amount: Decimal) -> int | Decimal:
    """IntaSend types amounts as numbers: a whole amount goes as an integer, any other as the Decimal's own
    digits (jsonvalues writes Decimals as JSON numbers, never through a binary float)."""
    return int(amount) if amount == amount.to_integral_value() else amount


def _stored_batch(stored: batches.StoredBatch) -> Batch:
    return Batch(
        tracking_id=stored.tracking_id,
        status_code=stored.initiate_response.get("status_code"),
        status=stored.initiate_response.get("status"),
        nonce=stored.nonce,
        transactions=(),
        raw=stored.initiate_response,
        body=stored.approve_body,
    )
