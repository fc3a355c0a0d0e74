"""IntaSend's batch and transaction codes, and what they mean for payrun's items (docs/intasend.md section 4).

Pure functions, no I/O: matching an initiate response to the items sent, and reading a status response
into item outcomes. FAILED says "nothing was paid" and invites paying the item again by hand, so it is given
only on a code that proves it; an unknown, missing or unexpected code gives NEEDS_REVIEW. Codes are compared
without padding or case.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from dispatcher_service.provider.protocol import Batch, Transaction
from shared.batches import Item, ItemOutcome
from shared.payrolls import ItemStatus

AWAITING_APPROVAL_CODES = frozenset({"BP101", "BP103"})
AWAITING_APPROVAL_STATUSES = frozenset({"preview and approve"})
BATCH_FAILED = {
    "BF102": "the batch failed at the provider",
    "BF105": "the provider's balance check failed (likely insufficient funds)",
    "BF107": "the provider's advance float check failed",
    "BE111": "the batch was ended or cancelled early at the provider",
}
# Failures before anything was sent. BF105 is the failed float-balance check (queued BP104, in progress
# BP106), which IntaSend's codes place before its validations and sending (BP108-BP110), and a batch that
# cannot be funded pays no one. So under BF105 an item listed without a code, or not listed, was not paid.
# BF102 and BE111 may come mid-way, and where BF107's "advance float check" falls is not documented.
BATCH_FAILED_BEFORE_SENDING = frozenset({"BF105"})
BATCH_COMPLETED = "BC100"

TXN_PAID = frozenset({"TS100"})
TXN_FAILED = {
    "TF103": "failed to initiate or process",
    "TF106": "transaction failed",
    "TC108": "transaction cancelled",
}
TXN_UNDETERMINED = frozenset({"TF105"})  # "status cannot be determined": never resent automatically
# "New transaction, processing pending": IntaSend itself says processing never began (TP102 is "started").
# Not final while the batch runs, but once the batch has failed nothing will start it, so it was not paid.
TXN_NOT_STARTED = frozenset({"TP101"})
# Started but not finished (processing, results pending, under observation, queued for IntaSend's own
# retry): if the batch ends early around such an item, it may still have been paid.
TXN_IN_FLIGHT = frozenset({"TP102", "TF104", "TH107", "TR109"})


def normalise_code(code: str | None) -> str:
    """A code as payrun compares it: padding and case are not part of IntaSend's codes."""
    return (code or "").strip().upper()


def awaiting_approval(batch: Batch) -> bool:
    return normalise_code(batch.status_code) in AWAITING_APPROVAL_CODES or (
        batch.status or ""
    ).strip().lower() in (AWAITING_APPROVAL_STATUSES)


_CENT = Decimal("0.01")


def _key(account: str, amount: Decimal) -> tuple[str, Decimal]:
    return (str(account).strip().lstrip("+"), Decimal(amount).quantize(_CENT))


def _same(item: Item, t: Transaction) -> bool:
    """``_key(item) == _key(t)``, without quantizing when the accounts are the same strings and the amounts
    equal (equal numbers quantize equally); anything else is compared by the keys themselves."""
    if item.account == t.account and item.amount == t.amount:
        return True
    return _key(item.account, item.amount) == _key(t.account, t.amount)


def match_references(items: Sequence[Item], txns: Sequence[Transaction]) -> dict[int, str] | None:
    """Map each item id to the provider's request_reference_id, or None if the response does not describe
    exactly the items sent. Position first (the likely order), account and amount always checked."""
    if len(items) != len(txns) or any(not t.request_reference_id for t in txns):
        return None
    if all(_same(i, t) for i, t in zip(items, txns, strict=True)):
        return {i.id: str(t.request_reference_id) for i, t in zip(items, txns, strict=True)}
    pool: dict[tuple[str, Decimal], list[str]] = defaultdict(list)
    for t in txns:
        pool[_key(t.account, t.amount)].append(str(t.request_reference_id))
    refs: dict[int, str] = {}
    for item in items:
        candidates = pool.get(_key(item.account, item.amount))
        if not candidates:
            return None
        refs[item.id] = candidates.pop(0)
    return refs


@dataclass(frozen=True, slots=True)
class Reading:
    final: bool
    outcomes: tuple[ItemOutcome, ...]
    summary: str


@dataclass(frozen=True, slots=True)
class _Failure:
    """A failed batch: why, and whether it failed before anything was sent."""

    reason: str
    before_sending: bool


def _txn_outcome(item_id: int, t: Transaction, failure: _Failure | None) -> ItemOutcome | None:
    code = normalise_code(t.status_code)
    if code in TXN_PAID:
        return ItemOutcome(item_id, ItemStatus.PAID, None, t.provider_reference)
    if code in TXN_UNDETERMINED:
        return ItemOutcome(
            item_id,
            ItemStatus.NEEDS_REVIEW,
            f"IntaSend cannot determine the outcome ({code}): contact support",
        )
    if code in TXN_FAILED:
        reason = t.failure_reason or TXN_FAILED[code]
        return ItemOutcome(item_id, ItemStatus.FAILED, f"{reason} ({code})")
    if failure is None:
        return None  # the batch is running or completed: wait for a final code
    # FAILED tells a person the item may be paid again by hand, so only a code that proves nothing was
    # sent gives it; anything else is for a person to check with IntaSend.
    if code in TXN_NOT_STARTED:
        return ItemOutcome(item_id, ItemStatus.FAILED, f"{failure.reason}; transaction {code}, never started")
    if code in TXN_IN_FLIGHT:
        return ItemOutcome(
            item_id,
            ItemStatus.NEEDS_REVIEW,
            f"{failure.reason}, while this transaction was in progress ({code})",
        )
    if not code:
        if failure.before_sending:
            return ItemOutcome(item_id, ItemStatus.FAILED, f"{failure.reason}; transaction without a code")
        return ItemOutcome(
            item_id,
            ItemStatus.NEEDS_REVIEW,
            f"{failure.reason}; the transaction has no code, so it may have been paid",
        )
    return ItemOutcome(
        item_id,
        ItemStatus.NEEDS_REVIEW,
        f"{failure.reason}; transaction code {code} is not one payrun knows, so it may have been paid",
    )


def _missing_outcome(item_id: int, failure: _Failure | None, batch_over: bool) -> ItemOutcome | None:
    if failure is not None and failure.before_sending:
        return ItemOutcome(item_id, ItemStatus.FAILED, failure.reason)
    if failure is not None:
        return ItemOutcome(
            item_id, ItemStatus.NEEDS_REVIEW, f"{failure.reason}, and its list does not show this item"
        )
    if batch_over:
        return ItemOutcome(
            item_id, ItemStatus.NEEDS_REVIEW, "the provider's completed batch does not list this item"
        )
    return None


def read_status(batch: Batch, items: Sequence[Item]) -> Reading:
    """What a status response says about the items; final when every item has a final outcome."""
    code = normalise_code(batch.status_code)
    by_ref = {t.request_reference_id: t for t in batch.transactions if t.request_reference_id}
    failure = (
        _Failure(f"{BATCH_FAILED[code]} ({code}: {batch.status})", code in BATCH_FAILED_BEFORE_SENDING)
        if code in BATCH_FAILED
        else None
    )
    batch_over = code == BATCH_COMPLETED or failure is not None
    outcomes: list[ItemOutcome] = []
    for item in items:
        t = by_ref.get(item.request_reference_id or "")
        if t is None:
            outcome = _missing_outcome(item.id, failure, batch_over)
        else:
            outcome = _txn_outcome(item.id, t, failure)
        if outcome is not None:
            outcomes.append(outcome)
    final = len(outcomes) == len(items)
    return Reading(final, tuple(outcomes), f"{code or '?'} {batch.status or ''}".strip())


_TRANSACTION_ATTR = re.compile(r"^transactions(?:\.|\[)(\d+)\]?(?:\.(.+))?$")


def refused_items(body: Any, items: Sequence[Item]) -> dict[int, str] | None:
    """The items an initiate refusal names, each with IntaSend's reason, when *every* error of the refusal
    names one item (`{"errors": [{"attr": "transactions.3.account", "detail": ...}]}`). None when any error
    is about the batch itself, or names no item: then the whole batch is refused."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return None
    named: dict[int, list[str]] = defaultdict(list)
    for err in errors:
        attr = err.get("attr") if isinstance(err, dict) else None
        match = _TRANSACTION_ATTR.match(attr) if isinstance(attr, str) else None
        if match is None or int(match.group(1)) >= len(items):
            return None
        field = match.group(2) or "transaction"
        named[items[int(match.group(1))].id].append(
            f"{field}: {err.get('detail') or err.get('code') or 'invalid'}"
        )
    return {
        item_id: "IntaSend refused this transaction: " + "; ".join(parts) for item_id, parts in named.items()
    }
