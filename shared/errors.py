"""payrun's one error tree. Each class's docstring is its default message.

The API maps these to HTTP in exactly one place (``api_service/errors.py``); the dispatcher maps provider
errors to retry decisions in ``dispatcher_service/retry.py``.
"""

from __future__ import annotations

from typing import Any


class PayrunError(Exception):
    """Something went wrong in payrun."""

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.context = context
        super().__init__(self.message)


class ConfigError(PayrunError):
    """The configuration is missing or wrong."""


class SchemaNotCurrent(PayrunError):
    """The database schema is behind this code: run `payrun migrate`."""


class InvalidRequest(PayrunError):
    """The request is not valid."""

    def __init__(self, message: str | None = None, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class MalformedBody(PayrunError):
    """The request body is not a JSON document payrun can read."""


class BodyTooLarge(PayrunError):
    """The request body is larger than payrun accepts."""


class Unauthenticated(PayrunError):
    """A valid `Authorization: Bearer <api_key>` header is required."""


class NotFound(PayrunError):
    """No such resource."""


class PayrollNotFound(NotFound):
    """No such payroll."""


class ItemNotFound(NotFound):
    """No such payroll item."""


class ItemNotInReview(PayrunError):
    """The item is not NEEDS_REVIEW (any more), or was resolved another way."""


class NothingToRecheck(PayrunError):
    """Nothing to re-check: no item in NEEDS_REVIEW, or resolved by hand without the provider's final answer."""


class DuplicateReference(PayrunError):
    """A payroll with this reference already exists for this employer."""


class PayrollFinal(PayrunError):
    """The payroll has already reached a final state and cannot be processed again."""


class PayrollNotProcessing(PayrunError):
    """Only a PROCESSING payroll can be cancelled."""


class PayrollNotDraft(PayrunError):
    """Only a DRAFT payroll can be deleted."""


class PayrollNotFinal(PayrunError):
    """Only a payroll in a final state can be retried."""


class NothingToRetry(PayrunError):
    """The payroll has no FAILED item to pay again."""


class AlreadyRetried(PayrunError):
    """The payroll's FAILED items are already in a retry payroll: retry that one."""


class IdempotencyKeyReused(PayrunError):
    """This Idempotency-Key was already used with a different request."""


class IdempotencyKeyInFlight(PayrunError):
    """A request with this Idempotency-Key is still being processed."""


class Throttled(PayrunError):
    """Too many requests for this API key: slow down."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__()
        self.retry_after_s = retry_after_s


class UnsupportedMediaType(PayrunError):
    """The request body must be JSON, sent with `Content-Type: application/json`."""


class DatabaseUnavailable(PayrunError):
    """The database cannot be reached right now: try again shortly."""


class DatabaseBusy(DatabaseUnavailable):
    """No database connection was free in time: try again shortly."""
