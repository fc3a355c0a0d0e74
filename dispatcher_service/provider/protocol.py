"""What the dispatcher needs from a payout provider, and how every outcome of a request is classified.

Four classes of outcome: success (a parsed batch); ``ProviderRejected``, a permanent refusal (4xx validation)
that is never retried; ``ProviderUnavailable``, transient (429, 5xx, a connection that was refused before the
request went out), safe to retry; ``ProviderAmbiguous``, a timeout or a connection broken after the request
was sent, so the provider may have acted on it. What each does to a payroll: docs/payroll_process_flow.md
section 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from shared.errors import PayrunError


class ProviderError(PayrunError):
    """The payout provider did not give a usable answer."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ProviderRejected(ProviderError):
    """The provider refused the request (4xx): sending it again unchanged would be refused again."""


class ProviderUnavailable(ProviderError):
    """The provider could not take the request now (429, 5xx, connection refused): try again later."""

    def __init__(
        self, message: str, *, status: int | None = None, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class ProviderRateLimited(ProviderUnavailable):
    """The provider answered 429 Too Many Requests."""


class ProviderAmbiguous(ProviderError):
    """The request may or may not have been acted on (timeout or broken connection after sending)."""


class Transaction(msgspec.Struct, frozen=True, gc=False):
    """One item of a batch answer, as payrun reads it. A frozen msgspec Struct rather than a dataclass: one is
    made per item of every answer, and a Struct is several times cheaper to construct. ``gc=False``: its
    fields are strings, a Decimal or None, so it can never be part of a reference cycle."""

    request_reference_id: str | None
    account: str
    amount: Decimal
    status_code: str | None
    status: str | None
    name: str | None = None
    provider_reference: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    tracking_id: str
    status_code: str | None
    status: str | None
    nonce: str | None
    transactions: tuple[Transaction, ...]
    # The batch-level fields (from a response body: without its transactions) and, when it came from a
    # response, that response's bytes as received.
    raw: dict[str, Any] = field(repr=False, compare=False)
    body: bytes | None = field(default=None, repr=False, compare=False)


class PayoutProvider(Protocol):
    async def initiate(
        self,
        *,
        provider: str,
        currency: str,
        transactions: list[dict[str, Any]],
        requires_approval: str = "YES",
        callback_url: str | None = None,
        wallet_id: str | None = None,
    ) -> Batch: ...

    async def approve(self, batch: Batch) -> Batch | None: ...

    async def status(self, tracking_id: str) -> Batch: ...

    async def wallets(self) -> list[dict[str, Any]]: ...
