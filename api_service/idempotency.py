"""`Idempotency-Key` on the POST routes: a retry of the same request gets the first response again.

Design rules:
- The key is claimed as the first statement of the transaction that does the work, and the response is
  stored in that same transaction: the work and its stored response commit together or not at all.
- A second request with the same key waits on the first's uncommitted row (the primary key), then replays
  the committed response: two requests with one key never both do the work.
- Same key, different request (method, path and canonical body, hashed) → 422.
- Errors (4xx) roll the transaction back, key included: they are not stored, and a corrected retry may reuse
  the key.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared import db, errors, jsonvalues, sqlfiles

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


Q = sqlfiles.queries("idempotency_keys")


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful response, in a form that can be stored and replayed."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, *, replayed: bool = False) -> Response:
        headers = {**self.headers, REPLAYED_HEADER: "true"} if replayed else self.headers
        return _FastJSONResponse(self.body, status_code=self.status, headers=headers)


class _FastJSONResponse(JSONResponse):
    """The same JSON as Starlette's (compact, UTF-8 as is), written by msgspec: a 10,000-item payroll's
    body in a few milliseconds."""

    def render(self, content: Any) -> bytes:
        return jsonvalues.dumps_bytes(content)


def key_of(request: Request) -> str | None:
    """The request's Idempotency-Key (1–255 printable ASCII characters), None without one, or a 422 naming it."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise errors.InvalidRequest(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            [{"field": HEADER, "message": f"must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"}],
        )
    return key


def fingerprint(method: str, path: str, canonical_body: str = "") -> bytes:
    """What makes two requests "the same request" for one key."""
    return hashlib.sha256(f"{method}\n{path}\n{canonical_body}".encode()).digest()


async def run(
    pool: asyncpg.Pool,
    employer_id: uuid.UUID,
    key: str | None,
    request_hash: bytes,
    work: Callable[[db.Connection], Awaitable[Reply]],
) -> Response:
    """Run `work`; with a key, in one transaction with the key claimed first and its reply stored last.

    Without a key, `work` runs on a plain connection: each repository function it calls is atomic by itself.
    """
    if key is None:
        async with pool.acquire() as conn:
            return (await work(conn)).response()
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(Q.claim_key, employer_id, key, request_hash):
            stored = await conn.fetchrow(Q.stored_response, employer_id, key)
            if stored is None:  # taken and gone again between the two statements (a key expiry, say)
                raise errors.IdempotencyKeyInFlight()
            if stored["request_hash"] != request_hash:
                raise errors.IdempotencyKeyReused(
                    f"this {HEADER} was already used with a different request; use a new key for a new request"
                )
            reply = Reply(
                stored["response_status"], stored["response_body"], dict(stored["response_headers"])
            )
            return reply.response(replayed=True)
        reply = await work(conn)
        await conn.execute(Q.store_response, employer_id, key, reply.status, reply.body, reply.headers)
    return reply.response()


def canonical(data: Any) -> str:
    """A body's canonical JSON: key order and whitespace do not make a different request."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
