"""The claim → send → record loop of one dispatcher process.

- Wakes on NOTIFY from the API (new rows) and otherwise sleeps until the next row is due (a back-off or a
  lease running out), so an idle dispatcher costs one cheap query every IDLE_MAX_SLEEP_S at most.
- Keeps at most DISPATCHER_CONCURRENCY rows in flight, one task each, and never two for one row: a claim
  skips rows whose flow still runs here. Employer events (`deliver_event` rows) take a share of the same
  claim of their own, EMPLOYER_CALLBACK_CONCURRENCY, and run on their own HTTP session
  (dispatcher_service/event_delivery.py): they never take a payout's place. Without a callback session
  (`callbacks=None`) the process claims no events. Each row's lease is also kept locally (dispatcher_service/lease.py),
  checked before every provider request; the heartbeat extends it only when the database did, and cancels
  the task of any row that was taken over.
- On stop: claims nothing more, lets in-flight batches finish within the grace period, then cancels the rest
  and gives their rows back (they resume from their recorded stage).
- Survives PostgreSQL restarts: every database error in the loop is logged and retried with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid

import aiohttp
import asyncpg

from dispatcher_service import batch_flow
from dispatcher_service.batch_flow import BatchFlow
from dispatcher_service.event_delivery import EventDelivery
from dispatcher_service.lease import Lease
from dispatcher_service.provider.protocol import PayoutProvider
from dispatcher_service.recheck import Rechecker
from dispatcher_service.retry import ProviderCaller
from shared import batches, db, outbox
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger(__name__)

IDLE_MAX_SLEEP_S = 30.0
# After a NOTIFY, wait this long before claiming: a burst of process calls (a hundred clerks at once)
# becomes one claim of many rows, and the API gets the cores while it answers them. The provider's rate
# limit, not the claim, decides when payouts leave.
WAKE_COALESCE_S = 0.2
DB_RETRY_MAX_S = 10.0
FORMING_SHARE_S = 0.2


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Dispatcher:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dsn: str,
        provider: PayoutProvider,
        caller: ProviderCaller,
        settings: Settings,
        worker: str | None = None,
        callbacks: aiohttp.ClientSession | None = None,
    ) -> None:
        self.pool, self.dsn, self.provider, self.caller, self.settings = pool, dsn, provider, caller, settings
        self.callbacks = callbacks
        self.worker = worker or worker_id()
        self._wake = asyncio.Event()
        self._notified = False  # woken by the API's NOTIFY (new rows), not by a flow that ended
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._leases: dict[int, Lease] = {}
        self._flows: dict[int, BatchFlow] = {}
        self._events: dict[int, asyncio.Task[None]] = {}  # deliver_event rows in flight (leases in _leases)
        # Flows still forming their batch (before initiate) claimed at once: about a fifth of a second of the
        # provider's limit. Rows beyond wait as rows and are gathered into the batches of the next flows.
        self._forming_max = max(
            1, min(settings.dispatcher_concurrency, math.ceil(settings.intasend_max_rps * FORMING_SHARE_S))
        )
        self._stopping = asyncio.Event()
        self.rechecker = Rechecker(
            pool=pool, provider=provider, caller=caller, settings=settings, worker=self.worker
        )
        self.log = log.bind(dispatcher=self.worker)

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(
            "dispatcher_started",
            concurrency=self.settings.dispatcher_concurrency,
            lease_s=self.settings.dispatcher_lease_s,
            max_rps=self.settings.intasend_max_rps,
        )
        side = [
            asyncio.create_task(self._listen(stop), name="listen for new outbox rows"),
            asyncio.create_task(self._heartbeat(stop), name="extend leases"),
            asyncio.create_task(self.rechecker.run(stop), name="re-check NEEDS_REVIEW batches"),
        ]
        try:
            await self._claim_loop(stop)
        finally:
            self._stopping.set()
            await self._drain()
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            self.log.info("dispatcher_stopped")

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        db_failures = 0
        while not stop.is_set():
            self._wake.clear()
            free = min(
                self.settings.dispatcher_concurrency - len(self._tasks),
                self._forming_max - sum(1 for flow in self._flows.values() if flow.forming),
            )
            free = max(0, free)
            free_events = (
                max(0, self.settings.employer_callback_concurrency - len(self._events))
                if self.callbacks
                else 0
            )
            sleep_s = 0.0
            try:
                asked_at = time.monotonic()
                claimed = (
                    await outbox.claim(
                        self.pool,
                        worker=self.worker,
                        lease_s=self.settings.dispatcher_lease_s,
                        limit=free,
                        running=[*self._tasks, *self._events],
                        events=free_events,
                    )
                    if free > 0 or free_events > 0
                    else []
                )
                payouts = [row for row in claimed if row.kind != outbox.Kind.DELIVER_EVENT]
                for row in claimed:
                    if row.kind == outbox.Kind.DELIVER_EVENT:
                        self._start_event(row, asked_at)
                    else:
                        self._start(row, asked_at)
                if (free > 0 and len(payouts) == free) or (
                    free_events > 0 and len(claimed) - len(payouts) == free_events
                ):
                    continue  # there may be more: claim again as soon as there is room
                if free > 0 or free_events > 0:
                    due = await outbox.next_due_s(self.pool, payouts=free > 0, events=free_events > 0)
                    sleep_s = IDLE_MAX_SLEEP_S if due is None else min(max(due, 0.05), IDLE_MAX_SLEEP_S)
                else:
                    sleep_s = IDLE_MAX_SLEEP_S
                db_failures = 0
            except db.TRANSIENT_ERRORS as exc:
                db_failures += 1
                sleep_s = min(DB_RETRY_MAX_S, 0.5 * 2**db_failures)
                self.log.warning("claim_failed", error=str(exc), retry_in_s=sleep_s)
            await self._wait(stop, sleep_s)

    async def _wait(self, stop: asyncio.Event, at_most_s: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=at_most_s, return_when=asyncio.FIRST_COMPLETED)
            if self._notified and not stop.is_set():
                self._notified = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WAKE_COALESCE_S)
        finally:
            for w in waiters:
                w.cancel()

    def _start(self, row: outbox.Claimed, asked_at: float) -> None:
        lease = Lease(row.id, row.lease_token, lease_s=self.settings.dispatcher_lease_s, asked_at=asked_at)
        flow = BatchFlow(
            pool=self.pool,
            provider=self.provider,
            caller=self.caller,
            settings=self.settings,
            worker=self.worker,
            row=row,
            lease=lease,
            stopping=self._stopping,
            on_formed=self._wake.set,
            priority=lambda: self._employer_load(row.employer_id),
        )
        task = asyncio.create_task(self._run_flow(flow), name=f"outbox row {row.id} payroll {row.payroll_id}")
        self._tasks[row.id] = task
        self._leases[row.id] = lease
        self._flows[row.id] = flow

    def _start_event(self, row: outbox.Claimed, asked_at: float) -> None:
        assert self.callbacks is not None  # events are claimed only with a session to send them
        lease = Lease(row.id, row.lease_token, lease_s=self.settings.dispatcher_lease_s, asked_at=asked_at)
        delivery = EventDelivery(
            pool=self.pool, session=self.callbacks, settings=self.settings, worker=self.worker, row=row,
            lease=lease,
        )  # fmt: skip
        task = asyncio.create_task(
            self._run_event(delivery), name=f"event row {row.id} payroll {row.payroll_id}"
        )
        self._events[row.id] = task
        self._leases[row.id] = lease

    async def _run_event(self, delivery: EventDelivery) -> None:
        row = delivery.row
        try:
            await delivery.run()
        except asyncio.CancelledError:
            raise
        except batches.LeaseLost as exc:
            delivery.log.warning("event_lease_lost", error=str(exc))
        except Exception as exc:  # a database outage or a bug: the row is due again after a back-off
            delivery.log.exception("event_delivery_crashed", error=str(exc))
            with contextlib.suppress(Exception):
                await outbox.release(
                    self.pool,
                    row.id,
                    row.lease_token,
                    delay_s=batch_flow.row_backoff(row.errors),
                    error=f"dispatcher error: {type(exc).__name__}: {exc}",
                    count_error=True,
                )
        finally:
            if self._leases.get(row.id) is delivery.lease:
                del self._events[row.id], self._leases[row.id]
            self._wake.set()

    def _employer_load(self, employer_id: uuid.UUID | None) -> int:
        """How many of this process's flows lead a batch for this employer: the fewer, the sooner its
        requests leave (one employer's 10,000-worker payroll does not hold back the small ones)."""
        return sum(1 for flow in self._flows.values() if flow.row.employer_id == employer_id)

    async def _run_flow(self, flow: BatchFlow) -> None:
        row = flow.row
        try:
            await flow.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a database outage: give the row back, it resumes from its stage
            flow.log.exception("batch_flow_crashed", error=str(exc))
            error = f"dispatcher error: {type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                flow.lease.check("a write after a crash")  # a stale flow leaves the row to its new holder
                if row.errors + 1 >= self.settings.dispatcher_max_errors:
                    await flow.give_up(f"gave up after {row.errors + 1} failed attempts; last: {error}")
                else:
                    await outbox.release(
                        self.pool,
                        row.id,
                        row.lease_token,
                        delay_s=batch_flow.row_backoff(row.errors),
                        error=error,
                        count_error=True,
                    )
        finally:
            if self._leases.get(row.id) is flow.lease:
                del self._tasks[row.id], self._leases[row.id], self._flows[row.id]
            self._wake.set()

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        interval = max(0.2, self.settings.dispatcher_lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            leases = dict(self._leases)
            if not leases:
                continue
            asked_at = time.monotonic()
            try:
                kept = await outbox.extend_leases(
                    self.pool,
                    worker=self.worker,
                    lease_s=self.settings.dispatcher_lease_s,
                    held={row_id: lease.token for row_id, lease in leases.items()},
                )
            except db.TRANSIENT_ERRORS as exc:
                # The deadlines stay where they are: the flows stop before their next request if this lasts.
                self.log.warning("heartbeat_failed", error=str(exc))
                continue
            for row_id, lease in leases.items():
                if row_id in kept:
                    lease.extended(asked_at)
                    continue
                lease.lost = True
                task = self._tasks.get(row_id) or self._events.get(row_id)
                if task is not None and self._leases.get(row_id) is lease:
                    self.log.warning("lease_taken_over", outbox_id=row_id)
                    task.cancel()

    def _notify(self) -> None:
        self._notified = True
        self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(outbox.NOTIFY_CHANNEL, lambda *_: self._notify())
                failures = 0
                self._wake.set()  # rows may have arrived while we were not listening
                await lost.wait()
                self.log.warning("listen_connection_lost")
            except db.TRANSIENT_ERRORS as exc:
                failures += 1
                self.log.warning("listen_failed", error=str(exc))
                await asyncio.sleep(min(DB_RETRY_MAX_S, 0.5 * 2**failures))
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def _drain(self) -> None:
        if not self._tasks and not self._events:
            return
        tasks = {**self._tasks, **self._events}
        leases = dict(self._leases)
        self.log.info("dispatcher_draining", in_flight=len(tasks), grace_s=self.settings.dispatcher_grace_s)
        _, pending = await asyncio.wait(tasks.values(), timeout=self.settings.dispatcher_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        released = 0
        for row_id, task in tasks.items():
            if task in pending:
                with contextlib.suppress(Exception):
                    if await outbox.release(self.pool, row_id, leases[row_id].token, delay_s=0.0):
                        released += 1
        if released:
            self.log.info("rows_released", count=released)
