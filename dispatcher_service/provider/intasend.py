"""IntaSend Send Money client: four endpoints, every outcome mapped onto the four classes in ``protocol``.

The classification is the point of this module. A payout request that might have reached IntaSend must never
look like one that certainly did not, because the dispatcher would then send the money twice; a request that
certainly failed must not look ambiguous, or payroll would stall on manual checks. See docs/intasend.md
(sections 0-4, 8, 9) for the wire format this follows.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import aiohttp
import msgspec
import structlog

from dispatcher_service.provider.protocol import (
    Batch,
    ProviderAmbiguous,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
    Transaction,
)
from shared import jsonvalues

log = structlog.get_logger(__name__)

ENDPOINTS = ("initiate", "approve", "status", "wallets")
_ROUTES = {
    "initiate": ("POST", "/api/v1/send-money/initiate/"),
    "approve": ("POST", "/api/v1/send-money/approve/"),
    "status": ("POST", "/api/v1/send-money/status/"),
    "wallets": ("GET", "/api/v1/wallets/"),
}
# Item codes whose ``status_description`` explains a failure; on other codes it is just progress text.
FAILED_TRANSACTION_CODES = frozenset({"TF103", "TF105", "TF106", "TC108"})
_RAW_TEXT_LIMIT = 300
# An approve answer with nothing in it: empty, `{}` or `null`, with any ASCII whitespace anywhere (what
# ``bytes.split()`` splits on is what ``\s`` matches in a bytes pattern). Fails at the first other byte, so a
# 300 kB batch answer costs nothing to test.
_EMPTY_ANSWER = re.compile(rb"\s*(?:\{\s*\}|n\s*u\s*l\s*l)?\s*")
T = TypeVar("T")


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None when absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate_to_datetime leaves "-0000" naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_message(body: Any) -> str:
    """A readable reason from either error shape IntaSend uses (section 8), else the raw text, truncated."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts = []
            for err in errors:
                if not isinstance(err, dict):
                    parts.append(str(err))
                    continue
                detail = err.get("detail") or err.get("code") or "error"
                parts.append(f"{err['attr']}: {detail}" if err.get("attr") else str(detail))
            return "; ".join(parts)
        for key in ("detail", "details"):
            if body.get(key):
                return str(body[key])
    if body is None:
        return "(empty body)"
    text = body if isinstance(body, str) else json.dumps(body, default=str)
    return text[:_RAW_TEXT_LIMIT]


def classify_http(
    status: int, body: Any, headers: Mapping[str, str] | None = None, *, endpoint: str = "request"
) -> ProviderError | None:
    """The error an HTTP answer means, or None for 2xx. Pure, so the table is testable on its own.

    429/408/5xx are transient. Every other 4xx is a refusal that would repeat. A 1xx/3xx (we never follow
    redirects: a redirected POST could be replayed or turned into a GET) means the request was not handled
    at this URL, most likely misconfiguration: treated as transient so nothing is failed permanently for it.
    """
    if 200 <= status < 300:
        return None
    where = f"IntaSend {endpoint}: HTTP {status}"
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        message = f"{where} rate limited (Retry-After: {retry_after})"
        return ProviderRateLimited(message, status=status, body=body, retry_after=retry_after)
    if status == 408 or status >= 500:
        return ProviderUnavailable(f"{where}: {error_message(body)}", status=status, body=body)
    if 400 <= status < 500:
        return ProviderRejected(f"{where}: {error_message(body)}", status=status, body=body)
    location = _header(headers, "Location")
    return ProviderUnavailable(f"{where} unexpected (Location: {location!r})", status=status, body=body)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive lookup, so plain dicts work as well as aiohttp's CIMultiDict."""
    return next((v for k, v in (headers or {}).items() if k.lower() == name.lower()), None)


def _decimal(value: Any) -> Decimal:
    """JSON number or decimal string → Decimal; floats go through ``str`` so no binary rounding gets in."""
    try:
        if type(value) is str:  # what IntaSend sends ("38.00")
            result: Decimal | None = Decimal(value.strip())
        elif type(value) is Decimal:  # a JSON number with a fraction, already decoded exactly
            result = value
        elif type(value) is int:
            result = Decimal(value)
        else:
            result = None if value is None or isinstance(value, bool) else Decimal(str(value).strip())
    except InvalidOperation:
        result = None
    if result is None or not result.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return result


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_transaction(item: Mapping[str, Any]) -> Transaction:
    """One batch item, old (2020: int ``account``, ``mno_reference``) or new (2025) shape."""
    return _transaction(
        item.get("request_reference_id"),
        item.get("account"),
        item.get("phone_number", ""),
        item.get("amount"),
        item.get("status_code"),
        item.get("status"),
        item.get("name"),
        item.get("provider_reference"),
        item.get("mno_reference"),
        item.get("failed_reason"),
        item.get("status_description"),
    )


def _transaction(
    ref: Any,
    account: Any,
    phone_number: Any,
    amount: Any,
    status_code: Any,
    status: Any,
    name: Any,
    provider_reference: Any,
    mno_reference: Any,
    failed_reason: Any,
    status_description: Any,
) -> Transaction:
    # _opt_str written out: this runs once per item of every answer.
    code = None if status_code is None or status_code == "" else str(status_code)
    reason = None if failed_reason is None or failed_reason == "" else str(failed_reason)
    if reason is None and code in FAILED_TRANSACTION_CODES:
        reason = _opt_str(status_description)
    if provider_reference is None or provider_reference == "":
        provider_reference = _opt_str(mno_reference)
    return Transaction(
        None if ref is None or ref == "" else str(ref),
        str(account if account is not None else phone_number),
        _decimal(amount),
        code,
        None if status is None or status == "" else str(status),
        None if name is None or name == "" else str(name),
        str(provider_reference) if provider_reference is not None else None,
        reason,
    )


def parse_batch(data: Any) -> Batch:
    """A batch object already parsed (a callback's body, a test's dict); ValueError when it is not one."""
    if not isinstance(data, dict) or not data.get("tracking_id"):
        raise ValueError("not a batch object with a tracking_id")
    items = data.get("transactions") or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("transactions is not a list of objects")
    return Batch(
        tracking_id=str(data["tracking_id"]),
        status_code=_opt_str(data.get("status_code")),
        status=_opt_str(data.get("status")),
        nonce=_opt_str(data.get("nonce")),
        transactions=tuple(parse_transaction(i) for i in items),
        raw=data,
    )


class _WireTransaction(msgspec.Struct):
    """The fields of a batch item payrun reads; msgspec skips every other one without building it."""

    request_reference_id: Any = None
    account: Any = None
    phone_number: Any = ""
    amount: Any = None
    status_code: Any = None
    status: Any = None
    name: Any = None
    provider_reference: Any = None
    mno_reference: Any = None
    failed_reason: Any = None
    status_description: Any = None


class _WireBatchHead(msgspec.Struct):
    """The batch-level fields payrun keeps (docs/audit.md: provider_batches.initiate_response)."""

    tracking_id: Any = None
    status_code: Any = None
    status: Any = None
    nonce: Any = None
    file_id: Any = None
    batch_reference: Any = None
    wallet: Any = None
    wallet_id: Any = None
    currency: Any = None
    charge_estimate: Any = None
    total_amount_estimate: Any = None
    actual_charges: Any = None
    paid_amount: Any = None
    failed_amount: Any = None
    created_at: Any = None
    updated_at: Any = None


class _WireBatch(_WireBatchHead):
    """A batch with its items."""

    transactions: list[_WireTransaction] | None = None


_BATCH_FIELDS = _WireBatchHead.__struct_fields__
# float_hook: a number with a fraction becomes a Decimal, never a binary float.
_batch_decoder = msgspec.json.Decoder(_WireBatch, float_hook=Decimal)
_head_decoder = msgspec.json.Decoder(_WireBatchHead, float_hook=Decimal)


def _head(wire: _WireBatchHead) -> dict[str, Any]:
    if not wire.tracking_id:
        raise ValueError("not a batch object with a tracking_id")
    return {f: v for f in _BATCH_FIELDS if (v := getattr(wire, f)) is not None}


def decode_batch(body: bytes) -> Batch:
    """A batch object straight from a response body, reading only the fields payrun uses. ``raw`` holds the
    batch-level fields (no transactions: their references and outcomes go to payroll_items); ``body`` the
    bytes as received, sent back as is on approve and kept as received for a final status."""
    try:
        wire = _batch_decoder.decode(body)
    except msgspec.DecodeError as exc:  # not JSON, not an object, or transactions not a list of objects
        raise ValueError(f"not a batch object: {exc}") from exc
    return _batch_of(
        wire,
        body,
        tuple(
            _transaction(
                t.request_reference_id,
                t.account,
                t.phone_number,
                t.amount,
                t.status_code,
                t.status,
                t.name,
                t.provider_reference,
                t.mno_reference,
                t.failed_reason,
                t.status_description,
            )
            for t in wire.transactions or ()
        ),
    )


def _decode_approved(body: bytes) -> Batch | None:
    """IntaSend answers an approve with nothing or with the batch. payrun reads the outcome of an approve
    from the status that follows, so only the batch-level fields are read here (no transactions)."""
    if _EMPTY_ANSWER.fullmatch(body):
        return None
    try:
        wire = _head_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a batch object: {exc}") from exc
    return _batch_of(wire, body, ())


def _batch_of(wire: Any, body: bytes, transactions: tuple[Transaction, ...]) -> Batch:
    """A Batch from a decoded answer: its batch-level fields, the transactions read, the bytes as received."""
    return Batch(
        tracking_id=str(wire.tracking_id),
        status_code=_opt_str(wire.status_code),
        status=_opt_str(wire.status),
        nonce=_opt_str(wire.nonce),
        transactions=transactions,
        raw=_head(wire),
        body=body,
    )


def _parse_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return jsonvalues.loads(raw)
    except msgspec.DecodeError:
        return raw.decode("utf-8", errors="replace")


class IntaSendClient:
    """``PayoutProvider`` over IntaSend's HTTP API. Stateless apart from the injected session; never retries
    (retrying a payout is the dispatcher's decision, made from the error class)."""

    def __init__(
        self, session: aiohttp.ClientSession, *, base_url: str, secret_key: str, timeout_s: float
    ) -> None:
        if not secret_key:
            raise ValueError("secret_key is required")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        base = base_url.rstrip("/")
        # The docs give the base *with* /api/v1/; accept either spelling rather than 404 every payout.
        self._base = base.removesuffix("/api/v1")
        self._session = session
        self._secret = secret_key
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def initiate(
        self,
        *,
        provider: str,
        currency: str,
        transactions: list[dict[str, Any]],
        requires_approval: str = "YES",
        callback_url: str | None = None,
        wallet_id: str | None = None,
    ) -> Batch:
        body: dict[str, Any] = {
            "provider": provider,
            "currency": currency,
            "requires_approval": requires_approval,
            "wallet_id": wallet_id,
            "transactions": transactions,
        }
        if callback_url is not None:
            body["callback_url"] = callback_url
        return await self._exchange("initiate", body, decode_batch, ProviderAmbiguous)

    async def approve(self, batch: Batch) -> Batch | None:
        """POST the initiate response back unchanged (its bytes as received when we have them, else its
        batch-level fields); IntaSend answers either nothing or the batch."""
        payload = batch.body if batch.body is not None else batch.raw
        return await self._exchange("approve", payload, _decode_approved, ProviderAmbiguous)

    async def status(self, tracking_id: str) -> Batch:
        return await self._exchange("status", {"tracking_id": tracking_id}, decode_batch, ProviderUnavailable)

    async def wallets(self) -> list[dict[str, Any]]:
        """Both list shapes seen (section 9): a bare array or a DRF page. Only the first page is read."""

        def parse(raw: bytes) -> list[dict[str, Any]]:
            body = _parse_body(raw)
            items = body.get("results") if isinstance(body, dict) else body
            if not isinstance(items, list) or not all(isinstance(w, dict) for w in items):
                raise ValueError("not a list of wallets")
            return items

        return await self._exchange("wallets", None, parse, ProviderUnavailable)

    async def _exchange(
        self,
        endpoint: str,
        payload: Any,
        parse: Callable[[bytes], T],
        unreadable: type[ProviderError],
    ) -> T:
        """One request, classified, logged once with its final outcome. ``unreadable`` is the class for a
        2xx we cannot read: ambiguous where the call may have moved money, unavailable for reads."""
        method, path = _ROUTES[endpoint]
        started = time.monotonic()
        status: int | None = None
        outcome = "interrupted"  # left as is only on cancellation or a bug (not a ProviderError)
        try:
            status, raw, headers = await self._send(method, self._base + path, payload)
            if not 200 <= status < 300:
                error = classify_http(status, _parse_body(raw), headers, endpoint=endpoint)
                assert error is not None
                raise error
            try:
                result = parse(raw)
            except ValueError as exc:
                message = f"IntaSend {endpoint}: unreadable 2xx body ({exc})"
                raise unreadable(message, status=status, body=_parse_body(raw)) from exc
            outcome = "success"
            return result
        except ProviderError as exc:
            outcome = type(exc).__name__
            if self._secret in exc.message:  # belt and braces: a server could echo the header back
                exc.message = exc.message.replace(self._secret, "[redacted]")
                exc.args = (exc.message,)
            raise
        finally:
            log.debug(
                "provider_request",
                endpoint=endpoint,
                http_status=status,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                outcome=outcome,
            )

    async def _send(self, method: str, url: str, payload: Any) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {self._secret}", "Accept": "application/json"}
        data = None
        if payload is not None:
            headers["Content-Type"] = "application/json"
            data = jsonvalues.dumps_bytes(payload)
        try:
            async with self._session.request(
                method, url, data=data, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                return resp.status, await resp.read(), resp.headers
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidURL) as exc:
            # Nothing was sent: the connection (DNS, TCP, TLS, proxy) never came up, or the URL is unusable.
            raise ProviderUnavailable(f"IntaSend unreachable: {type(exc).__name__}: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Timeout, disconnect, reset, truncated body: the request may have been received and acted on.
            raise ProviderAmbiguous(f"IntaSend outcome unknown: {type(exc).__name__}: {exc}") from exc
