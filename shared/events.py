"""Employer events: a payroll's final state POSTed to its employer's callback URL, from the outbox.

Design rules:
- An event is queued by `emit` in the transaction that gives the payroll a final status, after that status is
  written, wherever that happens (`batches.close_payroll` today). It is one outbox row of kind
  `deliver_event` whose payload is the event's body, fixed then: every attempt sends the same event id.
- Once per payroll and final status (a unique index): emitting again writes nothing. No callback URL, no row.
- Delivery is at least once: a row is done only after a 2xx; otherwise it is due again after a back-off,
  until EMPLOYER_CALLBACK_MAX_ATTEMPTS or EMPLOYER_CALLBACK_MAX_AGE_S, then `dead`. Every attempt is an
  `outbox_attempts` row (action `deliver`), written with the row's outcome in one fenced transaction.
- The signing secret is read back by the dispatcher (it must sign), so it is stored as given; the API never
  returns it, and the CLI prints it only when it makes one.
"""

from __future__ import annotations

import enum
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

import asyncpg

from shared import db, outbox, signing, sqlfiles
from shared.employers import UnknownEmployer
from shared.errors import PayrunError

Q = sqlfiles.queries("events")
URL_MAX_LENGTH = 2000  # employer_callbacks_url_check, migration 0016


class InvalidCallbackUrl(PayrunError):
    """Not a callback URL payrun can POST to."""


class NoCallback(PayrunError):
    """The employer has no callback URL."""


class Outcome(enum.StrEnum):
    """outbox_attempts.outcome of a `deliver` attempt."""

    OK = "ok"  # a 2xx: delivered
    HTTP_ERROR = "http_error"  # any other status
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # connection refused, DNS, TLS, reset
    NO_CALLBACK = "no_callback"  # the employer's callback was cleared after the event was queued


class CallbackSet(TypedDict):
    employer_id: str
    url: str
    secret: str | None  # shown when this call made one, else None
    updated_at: str


@dataclass(frozen=True, slots=True)
class CallbackConfig:
    url: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    secret: str


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, at most 2,000 characters (surrounding blanks dropped)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidCallbackUrl(f"the callback URL {url!r} must be an absolute http:// or https:// URL")
    if len(url) > URL_MAX_LENGTH or any(c.isspace() for c in url):
        raise InvalidCallbackUrl(f"the callback URL must be at most {URL_MAX_LENGTH} characters, no blanks")
    return url


def body(payload: dict[str, Any]) -> bytes:
    """The bytes POSTed for an event row: its payload as compact JSON, keys sorted."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


async def emit(conn: db.Connection, payroll_id: uuid.UUID) -> int | None:
    """Queue the payroll's event for its current (final) status, in the caller's transaction; the outbox
    row's id, or None (no callback, not final, or already queued for this status)."""
    row_id: int | None = await conn.fetchval(Q.emit_payroll_event, payroll_id)
    return row_id


async def set_callback(
    conn: db.Connection, employer_id: uuid.UUID, url: str, *, keep_secret: bool = False
) -> CallbackSet:
    """Send the employer's events to `url`, signed with a new secret (returned this once), or with the
    current one when `keep_secret`. Raises UnknownEmployer, InvalidCallbackUrl, NoCallback (keep_secret
    without a callback yet)."""
    url = check_url(url)
    secret = None if keep_secret else signing.new_secret()
    async with conn.transaction():
        if not await conn.fetchval(Q.employer_exists, employer_id):
            raise UnknownEmployer(f"no employer has the id {employer_id}")
        if secret is None:
            row = await conn.fetchrow(Q.set_callback_url, employer_id, url)
            if row is None:
                raise NoCallback("the employer has no callback yet: set one without --keep-secret")
        else:
            row = await conn.fetchrow(Q.set_callback, employer_id, url, secret)
    assert row is not None
    return {
        "employer_id": str(row["employer_id"]),
        "url": row["url"],
        "secret": secret,
        "updated_at": row["updated_at"].isoformat(),
    }


async def clear_callback(conn: db.Connection, employer_id: uuid.UUID) -> str | None:
    """No more events for the employer; returns the URL it had (None: it had none). Raises UnknownEmployer."""
    async with conn.transaction():
        if not await conn.fetchval(Q.employer_exists, employer_id):
            raise UnknownEmployer(f"no employer has the id {employer_id}")
        url: str | None = await conn.fetchval(Q.clear_callback, employer_id)
    return url


async def callback_config(conn: db.Executor, employer_id: uuid.UUID) -> CallbackConfig | None:
    row = await conn.fetchrow(Q.callback_config, employer_id)
    return None if row is None else CallbackConfig(row["url"], row["created_at"], row["updated_at"])


async def delivery_target(conn: db.Executor, payroll_id: uuid.UUID) -> Target | None:
    row = await conn.fetchrow(Q.delivery_target, payroll_id)
    return None if row is None else Target(row["url"], row["secret"])


async def record_attempt(
    pool: asyncpg.Pool,
    row: outbox.Claimed,
    worker: str,
    outcome: Outcome,
    detail: str,
    *,
    max_attempts: int,
    max_age_s: float,
    retry_in_s: float,
) -> outbox.RowStatus | None:
    """Record one delivery attempt and the row's fate in one fenced transaction: `done` after OK, `dead` for
    NO_CALLBACK or when out of attempts or age, else `pending` again in `retry_in_s`. None when the row is
    no longer ours (nothing written)."""
    async with pool.acquire() as conn, conn.transaction():
        if not await outbox.hold_lease(conn, row.id, row.lease_token):
            return None
        await conn.execute(Q.event_attempt, row.id, row.attempts, worker, outcome.value, detail[:2000])
        if outcome in (Outcome.OK, Outcome.NO_CALLBACK):
            status = outbox.RowStatus.DONE if outcome == Outcome.OK else outbox.RowStatus.DEAD
            error = None if outcome == Outcome.OK else detail
            await outbox.finish(conn, row.id, row.lease_token, status=status, error=error)
            return status
        new = await conn.fetchval(
            Q.event_retry_or_die, row.id, row.lease_token, max_attempts, max_age_s, retry_in_s, detail
        )
        return outbox.RowStatus(new)
