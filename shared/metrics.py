"""Prometheus metrics, one definition each, shared by the API and the dispatcher (prometheus-client).

Backlog gauges are read from PostgreSQL when /metrics is scraped, so every replica reports the same truth.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from shared import db, sqlfiles
from shared.outbox import RowStatus

OUTBOX_ROWS = Gauge(
    "payrun_outbox_rows",
    "Payout outbox rows by status (`done`: every row, from the planner's estimate: never a full scan).",
    ["status"],
)
EMPLOYER_EVENTS = Gauge(
    "payrun_employer_events", "Employer event rows (deliver_event) not delivered, by status.", ["status"]
)
OUTBOX_OLDEST_PENDING = Gauge(
    "payrun_outbox_oldest_pending_age_seconds", "Age of the oldest outbox row not yet done (0 when none)."
)
OUTBOX_OLDEST_DUE = Gauge(
    "payrun_outbox_oldest_due_age_seconds",
    "How long the oldest pending row has been due without a dispatcher claiming it (0 when none).",
)
OUTBOX_ROWS_WITH_ERRORS = Gauge(
    "payrun_outbox_rows_with_errors", "Live outbox rows whose last attempt failed (see outbox.last_error)."
)
ITEMS_NEEDING_REVIEW = Gauge("payrun_items_needing_review", "Payroll items in NEEDS_REVIEW.")
ITEMS_AWAITING_RECHECK = Gauge(
    "payrun_items_awaiting_recheck",
    "NEEDS_REVIEW items whose batch payrun still re-checks with IntaSend (before the horizon).",
)
RECHECKS = Counter(
    "payrun_rechecks_total",
    "Re-checks of a batch's status: settled (some item final), not_final, not_found (IntaSend's 404), "
    "error, gave_up (past the horizon).",
    ["result"],
)
LATE_SETTLEMENTS = Counter(
    "payrun_late_settlements_total",
    "Items a re-check found final, by status and agreement with an operator's resolution (none, agrees, "
    "overrides).",
    ["status", "agreement"],
)
PROVIDER_REQUESTS = Counter(
    "payrun_provider_requests_total", "Requests to the payout provider.", ["endpoint", "outcome"]
)
PROVIDER_RETRIES = Counter("payrun_provider_retries_total", "Provider requests retried inline.", ["endpoint"])
LIMITER_WAIT = Histogram(
    "payrun_limiter_wait_seconds",
    "Time a provider request waited for the shared rate limit.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PAYROLL_DURATION = Histogram(
    "payrun_payroll_duration_seconds",
    "Time from process to a payroll's final state.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
ITEMS_FINAL = Counter("payrun_items_final_total", "Items that reached a final state.", ["status"])
FUNDS_CHECKS = Counter(
    "payrun_funds_checks_total",
    "Funds checks before approve, by outcome: covered, short (not approved, checked again later), unknown.",
    ["outcome"],
)
BATCHES_WAITING_FOR_FUNDS = Gauge(
    "payrun_batches_waiting_for_funds", "Initiated batches not approved because their wallet was short."
)
FUNDS_SHORT_BY = Gauge(
    "payrun_funds_short_by_kes", "The sum of the shortfalls of the batches waiting for funds, in KES."
)
HTTP_DURATION = Histogram(
    "payrun_http_request_duration_seconds",
    "API request latency by route.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

Q = sqlfiles.queries("metrics")
FUNDS_Q = sqlfiles.queries("funds")


async def refresh_backlog(pool: asyncpg.Pool) -> None:
    row = await pool.fetchrow(Q.backlog)
    assert row is not None  # one row of aggregates, always
    live_statuses = (RowStatus.PENDING, RowStatus.IN_PROGRESS, RowStatus.DEAD)
    for status in live_statuses:
        OUTBOX_ROWS.labels(status).set(row[status])
    event_statuses = (RowStatus.PENDING, RowStatus.IN_PROGRESS, RowStatus.DEAD)
    for status in event_statuses:
        EMPLOYER_EVENTS.labels(status).set(row[f"events_{status}"])
    live = sum(row[status] for status in live_statuses) + sum(row[f"events_{s}"] for s in event_statuses)
    OUTBOX_ROWS.labels(RowStatus.DONE).set(max(0, row["total_estimate"] - live))
    OUTBOX_OLDEST_PENDING.set(row["oldest"])
    OUTBOX_OLDEST_DUE.set(row["oldest_due"])
    OUTBOX_ROWS_WITH_ERRORS.set(row["with_errors"])
    ITEMS_NEEDING_REVIEW.set(row["review"])
    waiting = await pool.fetchrow(FUNDS_Q.batches_waiting_for_funds)
    assert waiting is not None  # one row of aggregates, always
    BATCHES_WAITING_FOR_FUNDS.set(waiting["batches"])
    FUNDS_SHORT_BY.set(waiting["short_by"])
    ITEMS_AWAITING_RECHECK.set(row["rechecking"])


async def exposition(pool: asyncpg.Pool | None) -> tuple[bytes, str]:
    if pool is not None:
        try:
            await refresh_backlog(pool)
        except db.TRANSIENT_ERRORS:
            pass  # the process metrics are still worth serving while the database is away
    return generate_latest(), CONTENT_TYPE_LATEST
