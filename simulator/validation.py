"""Request validation as strict as a real provider, with errors in the drf-standardized-errors shape.

IntaSend is a Django REST Framework app; its 400s look like ``{"type": "validation_error", "errors": [{"code",
"detail", "attr"}]}`` with ``attr`` a dotted path such as ``transactions.0.account`` (docs/intasend.md section 8).
Being strict here is the point: a client bug should fail against the simulator before it fails in production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

PROVIDERS = ("MPESA-B2C", "PESALINK", "INTASEND", "MPESA-B2B")
CURRENCIES = ("KES",)
APPROVAL = ("YES", "NO")
B2B_ACCOUNT_TYPES = ("PayBill", "Paybill", "TillNumber")
MSISDN = re.compile(r"^254(7|1)\d{8}$")
CENT = Decimal("0.01")
# IntaSend's tested batch size (docs/intasend.md section 7). A tested figure, not a documented cap, but a
# client that sends more relies on something nobody has seen work, so the simulator refuses it.
MAX_TRANSACTIONS = 5000


@dataclass(frozen=True, slots=True)
class FieldError:
    code: str
    detail: str
    attr: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "attr": self.attr}


class ValidationFailed(Exception):
    """Carries every error found, because DRF reports them all at once rather than the first."""

    def __init__(self, errors: list[FieldError], type_: str = "validation_error") -> None:
        super().__init__(errors)
        self.errors = errors
        self.type = type_

    def body(self) -> dict[str, Any]:
        return {"type": self.type, "errors": [e.as_dict() for e in self.errors]}


class ItemRequest(NamedTuple):
    """One checked transaction. Immutable like the dataclasses here, but a NamedTuple: one is made per
    transaction of every initiate, and a frozen dataclass takes twice as long to make."""

    account: str
    amount: Decimal
    name: str | None
    narrative: str | None
    bank_code: str | None
    account_type: str | None
    account_reference: str | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    provider: str
    currency: str
    requires_approval: bool
    callback_url: str | None
    wallet_id: str | None
    batch_reference: str | None
    transactions: tuple[ItemRequest, ...]


def _required(errors: list[FieldError], attr: str) -> None:
    errors.append(FieldError("required", "This field is required.", attr))


def _optional_str(errors: list[FieldError], data: dict[str, Any], key: str, attr: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    errors.append(FieldError("invalid", "Not a valid string.", attr))
    return None


def _choice(
    errors: list[FieldError], data: dict[str, Any], key: str, attr: str, allowed: tuple[str, ...]
) -> str | None:
    if key not in data:
        _required(errors, attr)
        return None
    value = data[key]
    if not isinstance(value, str) or value not in allowed:
        errors.append(FieldError("invalid_choice", f'"{value}" is not a valid choice.', attr))
        return None
    return value


def _identifier(errors: list[FieldError], value: Any, attr: str) -> str | None:
    """Accounts and bank codes may be JSON strings or integers (the old docs type them as integers)."""
    if value is None:
        errors.append(FieldError("null", "This field may not be null.", attr))
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.append(FieldError("invalid", "Not a valid string.", attr))
        return None
    text = str(value).strip()
    if not text:
        errors.append(FieldError("blank", "This field may not be blank.", attr))
        return None
    return text


def parse_amount(value: Any) -> Decimal | None:
    """A JSON number or decimal string; floats arrive as Decimal because the body is parsed that way."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float | str):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _amount(errors: list[FieldError], value: Any, attr: str) -> Decimal | None:
    amount = parse_amount(value)
    if amount is None:
        errors.append(FieldError("invalid", "A valid number is required.", attr))
        return None
    if amount <= 0:
        errors.append(FieldError("min_value", "Ensure this value is greater than 0.", attr))
        return None
    if amount != amount.quantize(CENT):
        errors.append(
            FieldError("max_decimal_places", "Ensure that there are no more than 2 decimal places.", attr)
        )
        return None
    return amount.quantize(CENT)


def _plain_item(raw: dict[str, Any], provider: str | None, invalid: frozenset[str]) -> ItemRequest | None:
    """The common transaction, checked without building an error path per field: a string or integer
    account, an integer or decimal amount, no bank code or account type, strings or nulls otherwise. The
    same ItemRequest that :func:`_item` makes of it; None when anything needs a closer look (or is wrong),
    and _item then decides, reporting every error as it always has."""
    account = raw.get("account")
    if type(account) is str:
        account = account.strip()
    elif type(account) is int:
        account = str(account)
    else:
        return None
    if not account or account in invalid or (provider == "MPESA-B2C" and not MSISDN.match(account)):
        return None
    amount = raw.get("amount")
    if type(amount) is int:
        amount = Decimal(amount)
    elif type(amount) is not Decimal or not amount.is_finite():
        return None
    if amount <= 0:
        return None
    cents = amount.quantize(CENT)
    if amount != cents or provider == "PESALINK":
        return None
    if raw.get("bank_code") is not None or raw.get("account_type") is not None:
        return None
    name, narrative = raw.get("name"), raw.get("narrative")
    reference, key = raw.get("account_reference"), raw.get("idempotency_key")
    for value in (name, narrative, reference, key):
        if value is not None and type(value) is not str:
            return None
    return ItemRequest(
        account=account,
        amount=cents,
        name=name,
        narrative=narrative,
        bank_code=None,
        account_type=None,
        account_reference=reference,
        idempotency_key=key,
    )


def _item(
    errors: list[FieldError], raw: Any, index: int, provider: str | None, invalid: frozenset[str]
) -> ItemRequest | None:
    if type(raw) is dict:
        plain = _plain_item(raw, provider, invalid)
        if plain is not None:
            return plain
    base = f"transactions.{index}"
    if not isinstance(raw, dict):
        errors.append(
            FieldError("invalid", f"Invalid data. Expected a dictionary, but got {type(raw).__name__}.", base)
        )
        return None
    before = len(errors)
    account: str | None = None
    if "account" not in raw:
        _required(errors, f"{base}.account")
    else:
        account = _identifier(errors, raw["account"], f"{base}.account")
        if account is not None and (
            account in invalid or (provider == "MPESA-B2C" and not MSISDN.match(account))
        ):
            errors.append(
                FieldError(
                    "invalid",
                    "Enter a valid phone number in the format 2547XXXXXXXX or 2541XXXXXXXX.",
                    f"{base}.account",
                )
            )
    amount: Decimal | None = None
    if "amount" not in raw:
        _required(errors, f"{base}.amount")
    else:
        amount = _amount(errors, raw["amount"], f"{base}.amount")
    bank_code: str | None = None
    if provider == "PESALINK":
        if "bank_code" not in raw:
            _required(errors, f"{base}.bank_code")
        else:
            bank_code = _identifier(errors, raw["bank_code"], f"{base}.bank_code")
    elif raw.get("bank_code") is not None:
        bank_code = _identifier(errors, raw["bank_code"], f"{base}.bank_code")
    account_type = _optional_str(errors, raw, "account_type", f"{base}.account_type")
    if account_type is not None and provider == "MPESA-B2B" and account_type not in B2B_ACCOUNT_TYPES:
        errors.append(
            FieldError("invalid_choice", f'"{account_type}" is not a valid choice.', f"{base}.account_type")
        )
    item = ItemRequest(
        account=account or "",
        amount=amount or Decimal(0),
        name=_optional_str(errors, raw, "name", f"{base}.name"),
        narrative=_optional_str(errors, raw, "narrative", f"{base}.narrative"),
        bank_code=bank_code,
        account_type=account_type,
        account_reference=_optional_str(errors, raw, "account_reference", f"{base}.account_reference"),
        idempotency_key=_optional_str(errors, raw, "idempotency_key", f"{base}.idempotency_key"),
    )
    return item if len(errors) == before else None


def expect_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed(
            [
                FieldError(
                    "invalid",
                    f"Invalid data. Expected a dictionary, but got {type(body).__name__}.",
                    "non_field_errors",
                )
            ]
        )
    return body


def wallet_known(wallet_id: str, default: str, wallets: frozenset[str]) -> bool:
    """The default wallet, one of `wallets` (SIM_WALLETS), or any non-empty id when `wallets` holds "*"."""
    return wallet_id == default or wallet_id in wallets or ("*" in wallets and bool(wallet_id.strip()))


def validate_initiate(
    body: Any,
    wallet_id: str,
    invalid_accounts: frozenset[str] = frozenset(),
    wallets: frozenset[str] = frozenset(),
) -> InitiateRequest:
    """Check an initiate body; raise :class:`ValidationFailed` listing every problem. `invalid_accounts`
    (SIM_INVALID_ACCOUNTS) are refused as numbers IntaSend does not accept. A `wallet_id` must be the
    default `wallet_id` or one of `wallets` (SIM_WALLETS: per-employer wallets; "*": any id)."""
    data = expect_object(body)
    errors: list[FieldError] = []
    provider = _choice(errors, data, "provider", "provider", PROVIDERS)
    currency = _choice(errors, data, "currency", "currency", CURRENCIES)
    # Absent means "YES" (older clients predate the field); present must be exactly the string.
    approval = "YES"
    if "requires_approval" in data:
        approval = _choice(errors, data, "requires_approval", "requires_approval", APPROVAL) or "YES"
    callback_url = _optional_str(errors, data, "callback_url", "callback_url")
    batch_reference = _optional_str(errors, data, "batch_reference", "batch_reference")
    wallet = data.get("wallet_id")
    if wallet is not None and not (isinstance(wallet, str) and wallet_known(wallet, wallet_id, wallets)):
        errors.append(FieldError("invalid", f"Wallet {wallet!r} not found or cannot disburse.", "wallet_id"))
    items: list[ItemRequest] = []
    if "transactions" not in data:
        _required(errors, "transactions")
    elif not isinstance(data["transactions"], list):
        errors.append(
            FieldError(
                "not_a_list",
                f'Expected a list of items but got type "{type(data["transactions"]).__name__}".',
                "transactions",
            )
        )
    elif not data["transactions"]:
        errors.append(FieldError("empty", "This list may not be empty.", "transactions"))
    elif len(data["transactions"]) > MAX_TRANSACTIONS:  # like DRF, the length first and no item checked
        errors.append(
            FieldError(
                "max_length",
                f"Ensure this field has no more than {MAX_TRANSACTIONS} elements.",
                "transactions",
            )
        )
    else:
        for index, raw in enumerate(data["transactions"]):
            item = _item(errors, raw, index, provider, invalid_accounts)
            if item is not None:
                items.append(item)
    if errors:
        raise ValidationFailed(errors)
    assert provider is not None and currency is not None
    return InitiateRequest(
        provider=provider,
        currency=currency,
        requires_approval=approval == "YES",
        callback_url=callback_url,
        wallet_id=wallet,
        batch_reference=batch_reference,
        transactions=tuple(items),
    )


def require_str(data: dict[str, Any], key: str) -> str:
    """A required, non-blank string field (tracking_id, nonce)."""
    errors: list[FieldError] = []
    if key not in data:
        _required(errors, key)
    elif data[key] is None:
        errors.append(FieldError("null", "This field may not be null.", key))
    elif not isinstance(data[key], str):
        errors.append(FieldError("invalid", "Not a valid string.", key))
    elif not data[key].strip():
        errors.append(FieldError("blank", "This field may not be blank.", key))
    if errors:
        raise ValidationFailed(errors)
    return str(data[key])


def parse_fund_amount(value: Any) -> Decimal:
    """`amount` of POST /sim/wallets/{id}/fund: a number or decimal string, more than 0, at most 2 places."""
    try:
        amount = None if value is None or isinstance(value, bool) else Decimal(str(value).strip())
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValidationFailed(
            [FieldError("invalid", "A positive amount with at most 2 decimal places is required.", "amount")]
        )
    return amount.quantize(Decimal("0.01"))
