"""The API's request and response shapes, as pydantic models: they validate requests and feed /openapi.json.

Requests are validated in strict mode (no silent coercion: `"name": 5` is an error, not `"5"`) and unknown
fields are rejected (`extra="forbid"`), everywhere. A failed validation becomes one `InvalidRequest` listing
every problem as `{"field": "items[3].account", "message": ...}`. Responses are rendered by
`api_service/render.py`; their models here describe them (a test checks the two agree).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shared import errors, payrolls, resolutions

MAX_ITEMS = 10_000
MAX_ERRORS = 100
CURSOR_MAX_LENGTH = 512
CENT = Decimal("0.01")
# numeric(14, 2): the largest amount (and payroll total) the database holds.
MAX_AMOUNT = Decimal("999999999999.99")
MPESA_MIN, MPESA_MAX = Decimal("10"), Decimal("150000")
# M-Pesa moves whole shillings and IntaSend types `amount` as an integer: a fractional amount is refused
# here, before anything is written, rather than rounded or refused by the provider after the 202.
WHOLE_SHILLING_PROVIDERS = frozenset({"MPESA-B2C"})

# re.ASCII: \d is 0-9 only (not every script's digits), \s is ASCII whitespace.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # control characters, and lone surrogates (not UTF-8)
_PHONE_CHARS = re.compile(r"\+?[\d\s-]+", re.ASCII)
_DIGITS = re.compile(r"\d+", re.ASCII)
_SEPARATORS = re.compile(r"[\s-]", re.ASCII)
_KENYAN_MOBILE = re.compile(r"(?:\+?254|0)([17]\d{8})", re.ASCII)


# What /openapi.json states for what _plain_text and the whitespace stripping accept: no control characters,
# and something other than whitespace. (Lone surrogates, refused too, are left out: a surrogate range in a
# pattern makes schemathesis ignore the pattern.)
_PLAIN = r"[^\x00-\x1f\x7f]"
PLAIN_TEXT_PATTERN = rf"^{_PLAIN}*[^\x00-\x1f\x7f\s]{_PLAIN}*$"
OPTIONAL_TEXT_PATTERN = rf"^{_PLAIN}*$"
# The Kenyan mobile numbers normalise_msisdn accepts in their plain forms (07.., 01.., 2547.., +2541..): the
# prefixes phonenumbers holds valid for mobiles. Spaces and dashes, accepted too, are not stated.
MSISDN_PATTERN = r"^(?:\+?254|0)(?:7\d{2}|1(?:0[0-8]|1\d|2[014]|3[05-9]|4[0-6]|8\d))\d{6}$"


def _error(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _plain_text(value: str) -> str:
    if _CONTROL.search(value):
        raise _error("text_control", "must not contain control characters")
    return value


def _amount(value: object) -> Decimal:
    """A JSON number or a decimal string; more than 0, finite, at most two decimal places."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float | str):
        raise _error("amount_type", 'must be a number or a decimal string such as "15000.00"')
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise _error("amount_text", 'must be a number or a decimal string such as "15000.00"')
        value = text
    amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite():
        raise _error("amount_finite", "must be a finite number")
    if amount <= 0:
        raise _error("amount_positive", "must be more than 0")
    if amount > MAX_AMOUNT:
        raise _error("amount_large", f"must be at most {MAX_AMOUNT}")
    if amount != amount.quantize(CENT):
        raise _error("amount_places", "must have at most two decimal places")
    return amount.quantize(CENT)


def normalise_msisdn(raw: str) -> str:
    """A Kenyan mobile number in any usual form → `2547XXXXXXXX` / `2541XXXXXXXX`, or a validation error."""
    text = raw.strip()
    if not _PHONE_CHARS.fullmatch(text) or len(text) > 32:
        raise _error("msisdn", "must be a Kenyan mobile number such as 0712345678 or 254712345678")
    usual = _KENYAN_MOBILE.fullmatch(_SEPARATORS.sub("", text))
    if usual:  # the usual forms: skip phonenumbers.parse, the slow part of validating 10,000 items
        number = phonenumbers.PhoneNumber(country_code=254, national_number=int(usual.group(1)))
    else:
        try:
            number = phonenumbers.parse(text, "KE")
        except phonenumbers.NumberParseException:
            raise _error(
                "msisdn", "must be a Kenyan mobile number such as 0712345678 or 254712345678"
            ) from None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
    if not (phonenumbers.is_valid_number(number) and len(e164) == 12 and e164[:4] in ("2547", "2541")):
        raise _error("msisdn", "must be a valid Kenyan mobile number (07… or 01…, 2547… or 2541…)")
    return e164


def _uuid(value: object) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _error("uuid", "must be a payroll id (a UUID)")


Amount = Annotated[
    Decimal,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": float(MAX_AMOUNT), "multipleOf": 0.01},
                # more than 0, at most 12 digits before the point and 2 after
                {"type": "string", "pattern": r"^(?:0*[1-9]\d{0,11}(?:\.\d{1,2})?|0*\.(?:0[1-9]|[1-9]\d?))$"},
            ],
            "description": "More than 0, at most two decimal places; MPESA-B2C: whole shillings, 10 to 150000.",
            "examples": ["15000.00", 42000],
        }
    ),
]
PayrollId = Annotated[uuid.UUID, BeforeValidator(_uuid), WithJsonSchema({"type": "string", "format": "uuid"})]

_REQUEST = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


def _provider_rules(schema: dict[str, Any]) -> None:
    """What the field validators below check per provider, stated in /openapi.json (if/then)."""

    def when(provider: str, *, absent_too: bool = False) -> dict[str, Any]:
        test: dict[str, Any] = {"properties": {"provider": {"const": provider}}}
        if not absent_too:
            test["required"] = ["provider"]
        return test

    no_bank_code = {"bank_code": {"enum": [None, ""]}}
    schema["allOf"] = [
        {
            "if": when("MPESA-B2C", absent_too=True),  # the default provider
            "then": {
                "properties": {
                    "account": {"type": "string", "pattern": MSISDN_PATTERN},
                    "amount": {
                        "anyOf": [
                            {"type": "number", "minimum": 10, "maximum": 150000, "multipleOf": 1},
                            {
                                "type": "string",
                                "pattern": r"^0*(?:[1-9]\d{1,4}|1[0-4]\d{4}|150000)(?:\.0{1,2})?$",
                            },
                        ]
                    },
                    **no_bank_code,
                }
            },
        },
        {
            "if": when("PESALINK"),
            "then": {
                "required": ["bank_code"],
                "properties": {
                    "account": {"type": "string", "pattern": r"^\d+$"},
                    "bank_code": {
                        "anyOf": [
                            {"type": "string", "pattern": r"^\d{1,10}$"},
                            {"type": "integer", "minimum": 0, "maximum": 9_999_999_999},
                        ]
                    },
                },
            },
        },
        {"if": when("INTASEND"), "then": {"properties": no_bank_code}},
    ]


class PayrollItemIn(BaseModel):
    """One payee. Fields are validated in this order, so `account`, `amount` and `bank_code` see `provider`."""

    model_config = ConfigDict(**_REQUEST, json_schema_extra=_provider_rules)

    provider: Literal["MPESA-B2C", "PESALINK", "INTASEND"] = "MPESA-B2C"
    name: Annotated[
        str,
        Field(min_length=1, max_length=100, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
        AfterValidator(_plain_text),
    ]
    account: str = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": PLAIN_TEXT_PATTERN},
        description="MPESA-B2C: a Kenyan mobile number in any usual form, stored as 2547XXXXXXXX/2541XXXXXXXX. "
        "PESALINK: the bank account number (digits). INTASEND: the IntaSend account.",
    )
    amount: Amount
    bank_code: Annotated[
        str | None, BeforeValidator(lambda v: str(v) if type(v) is int and v >= 0 else v)
    ] = Field(
        None,
        validate_default=True,
        description="PESALINK only, and required there: the bank's code (digits).",
    )
    narrative: (
        Annotated[
            str,
            Field(max_length=22, json_schema_extra={"pattern": OPTIONAL_TEXT_PATTERN}),
            AfterValidator(_plain_text),
        ]
        | None
    ) = None

    @field_validator("account")
    @classmethod
    def _account(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("provider")
        if provider == "MPESA-B2C":
            return normalise_msisdn(value)
        if provider == "PESALINK" and not _DIGITS.fullmatch(value):
            raise _error("bank_account", "must be a bank account number (digits only)")
        return _plain_text(value)

    @field_validator("amount")
    @classmethod
    def _amount_for_provider(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        provider = info.data.get("provider")
        if provider == "MPESA-B2C" and not MPESA_MIN <= value <= MPESA_MAX:
            raise _error("mpesa_amount", "must be from 10 to 150000 KES for MPESA-B2C")
        if provider in WHOLE_SHILLING_PROVIDERS and value != value.to_integral_value():
            raise _error("whole_shillings", f"must be whole shillings for {provider} (M-Pesa moves no cents)")
        return value

    @field_validator("bank_code")
    @classmethod
    def _bank_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        provider = info.data.get("provider")
        if provider == "PESALINK":
            if value is None or value == "":
                raise _error("bank_code_missing", "is required for PESALINK items")
            if not _DIGITS.fullmatch(value) or len(value) > 10:
                raise _error("bank_code", "must be the bank's code (up to 10 digits)")
        elif value not in (None, "") and provider is not None:
            raise _error("bank_code_unused", "applies only to PESALINK items")
        return value or None

    @field_validator("narrative")
    @classmethod
    def _narrative(cls, value: str | None) -> str | None:
        return value or None


class CreatePayrollIn(BaseModel):
    """`POST /payrolls`. Unknown fields are rejected (422)."""

    model_config = _REQUEST

    reference: Annotated[
        str,
        Field(min_length=1, max_length=100, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
        AfterValidator(_plain_text),
    ] = Field(description="Unique per employer.")
    currency: Literal["KES"]
    items: list[PayrollItemIn] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("items", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any) -> Any:
        # Before validating 10,001 items one by one.
        if isinstance(value, list) and len(value) > MAX_ITEMS:
            raise _error("too_many_items", f"must have at most {MAX_ITEMS} items, not {len(value)}")
        return value

    @field_validator("items")
    @classmethod
    def _total_fits(cls, value: list[PayrollItemIn]) -> list[PayrollItemIn]:
        if sum(item.amount for item in value) > MAX_AMOUNT:
            raise _error("total_large", f"the items' amounts must add up to at most {MAX_AMOUNT}")
        return value

    def to_command(self) -> payrolls.NewPayroll:
        return payrolls.NewPayroll(
            self.reference,
            self.currency,
            tuple(
                payrolls.NewItem(
                    i.name, i.account, i.amount, payrolls.Provider(i.provider), i.bank_code, i.narrative
                )
                for i in self.items
            ),
        )


class RetryPayrollIn(BaseModel):
    """`POST /payrolls/{id}/retry`; the body is optional (none, or `{}`: the default reference)."""

    model_config = _REQUEST

    reference: (
        Annotated[
            str,
            Field(min_length=1, max_length=100, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
            AfterValidator(_plain_text),
        ]
        | None
    ) = Field(
        None,
        description="The new payroll's reference, unique per employer. Default: `<old reference>-retry-<n>`, "
        "the smallest n ≥ 1 the employer has not used.",
    )


class ProcessPayrollIn(BaseModel):
    """`POST /payroll/process`, the seed UI's form of `POST /payrolls/{id}/process`."""

    model_config = _REQUEST

    payroll_id: PayrollId


PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX = 50, 200
# The page size and cursor of every paged route (GET /payrolls, GET /payrolls/{id}/items): one validation,
# so a bad `limit` or `cursor` is the same 422 on both.
PageLimit = Annotated[int, Field(ge=1, le=PAGE_LIMIT_MAX)]
PageCursor = Annotated[
    str | None,
    Field(min_length=1, max_length=CURSOR_MAX_LENGTH, description="`next_cursor` of the last page."),
]


class ListPayrollsQuery(BaseModel):
    """`GET /payrolls` query parameters (strings from the URL, so not strict; other parameters are ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: (
        Literal["DRAFT", "PROCESSING", "COMPLETED", "PARTIALLY_FAILED", "FAILED", "NEEDS_REVIEW", "CANCELLED"]
        | None
    ) = None
    limit: PageLimit = PAGE_LIMIT_DEFAULT
    cursor: PageCursor = None


class ListItemsQuery(BaseModel):
    """`GET /payrolls/{id}/items` query parameters (as ListPayrollsQuery: not strict, others ignored)."""

    model_config = ConfigDict(extra="ignore")

    status: Literal["PENDING", "SUBMITTED", "PAID", "FAILED", "NEEDS_REVIEW", "CANCELLED"] | None = None
    limit: PageLimit = PAGE_LIMIT_DEFAULT
    cursor: PageCursor = None


# ---- responses (rendered by api_service/render.py) -------------------------------------------------------

Money = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", examples=["15000.00"])]
PayrollStatusName = Literal[
    "DRAFT", "PROCESSING", "COMPLETED", "PARTIALLY_FAILED", "FAILED", "NEEDS_REVIEW", "CANCELLED"
]
ItemStatusName = Literal["PENDING", "SUBMITTED", "PAID", "FAILED", "NEEDS_REVIEW", "CANCELLED"]


class PayrollItemOut(BaseModel):
    id: str
    name: str
    account: str
    amount: Money
    provider: Literal["MPESA-B2C", "PESALINK", "INTASEND"]
    status: ItemStatusName
    failure_reason: str | None
    provider_reference: str | None


class PayrollOut(BaseModel):
    id: uuid.UUID
    reference: str
    currency: Literal["KES"]
    status: PayrollStatusName
    item_count: int
    total_amount: Money
    paid_amount: Money = Field(description="The sum of the PAID items.")
    created_at: datetime
    updated_at: datetime
    retry_of: uuid.UUID | None = Field(
        description="The payroll whose FAILED items this one pays again (POST /payrolls/{id}/retry); null "
        "for a payroll posted to POST /payrolls."
    )


class StatusDetailOut(BaseModel):
    """Why a PROCESSING payroll is not moving on: its batches wait for funds (docs/operations.md)."""

    code: Literal["insufficient_funds"]
    message: str
    wallet_id: str | None = Field(description="The wallet the payroll is paid from; null: the default one.")
    short_by: Money = Field(description="What the wallet lacks for the waiting batches.")
    required: Money = Field(description="The waiting batches' total estimate, IntaSend's charges included.")
    available_balance: Money = Field(description="The wallet's available balance at the latest check.")
    waiting_batches: int
    checked_at: datetime
    next_check_at: datetime = Field(description="payrun checks the wallet again then, and pays once funded.")


class PayrollDetailOut(PayrollOut):
    items: list[PayrollItemOut] = Field(description="In the order they were sent.")
    status_detail: StatusDetailOut | None = Field(
        default=None, description="Null unless the payroll waits for funds."
    )


class PayrollPageOut(BaseModel):
    items: list[PayrollOut] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ItemOut(PayrollItemOut):
    """An item of `GET /payrolls/{id}/items`: as in the payroll detail, with its place and IntaSend's ids."""

    position: int = Field(ge=0, description="Its index in the payroll as created (from 0).")
    request_reference_id: str | None = Field(
        description="IntaSend's id for this item within its batch; null until a batch carries it."
    )
    tracking_id: str | None = Field(
        description="The tracking_id of the IntaSend batch that carries it; null until one does."
    )
    updated_at: datetime


class ItemPageOut(BaseModel):
    items: list[ItemOut] = Field(description="In position order.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class ItemCountsOut(BaseModel):
    PENDING: int
    SUBMITTED: int
    PAID: int
    FAILED: int
    NEEDS_REVIEW: int
    CANCELLED: int


class PayrollStatusOut(BaseModel):
    id: uuid.UUID
    status: PayrollStatusName
    item_count: int
    counts: ItemCountsOut
    total_amount: Money
    paid_amount: Money
    updated_at: datetime
    status_detail: StatusDetailOut | None = Field(
        default=None, description="Null unless the payroll waits for funds."
    )


class CancelOut(BaseModel):
    """`POST /payrolls/{id}/cancel`: what was cancelled, and what was already on its way and will finish."""

    id: uuid.UUID
    status: PayrollStatusName = Field(
        description="PROCESSING while items not cancellable are still being paid; CANCELLED (or NEEDS_REVIEW) "
        "once the payroll is final."
    )
    cancelled_now: int = Field(ge=0, description="Items this request cancelled.")
    cancelled: int = Field(ge=0, description="All of the payroll's CANCELLED items.")
    not_cancellable: int = Field(
        ge=0,
        description="Items not final and not cancellable: their batch was already being approved when the "
        "cancel came; they finish (PAID, FAILED or NEEDS_REVIEW).",
    )
    cancel_requested_at: datetime | None
    status_url: str


class CallbackOut(BaseModel):
    """`GET /employer/callback`: where this employer's payroll events go (docs/api.md section 11). The signing
    secret is never shown: it was printed once, when an operator set the callback."""

    url: str | None = Field(description="The URL events are POSTed to; null: no events are sent.")
    signature: Literal["Payrun-Signature: t=<unix>,v1=<hex HMAC-SHA256 of '<t>.<body>'>"] | None
    created_at: datetime | None
    updated_at: datetime | None


# ---- POST /ops/items/resolve (an operator's key) -----------------------------------------------------------

MAX_RESOLUTIONS = 1000
MAX_ITEM_ID = 2**63 - 1  # payroll_items.id is a bigint
REFERENCE_MAX_LENGTH = 200  # item_resolutions_provider_reference_check
REASON_MAX_LENGTH = 2000  # item_resolutions_reason_check, _note_check
_EVIDENCE = {"PAID": "provider_reference", "FAILED": "reason"}


def _resolution_rules(schema: dict[str, Any]) -> None:
    """What `_evidence` checks, stated in /openapi.json: PAID needs provider_reference, FAILED a reason,
    and neither carries the other's field."""
    schema["allOf"] = [
        {
            "if": {"properties": {"status": {"const": status}}, "required": ["status"]},
            "then": {
                "required": [needed],
                "properties": {
                    needed: {"type": "string"},
                    **{other: {"type": "null"} for other in _EVIDENCE.values() if other != needed},
                },
            },
        }
        for status, needed in _EVIDENCE.items()
    ]


def _whole_number(value: object) -> object:
    """JSON says 5.0 is the integer 5 (the body parser reads it as Decimal("5.0")); 5.5 stays an error."""
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


ProviderReference = Annotated[
    str,
    Field(min_length=1, max_length=REFERENCE_MAX_LENGTH, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
    AfterValidator(_plain_text),
]
Reason = Annotated[
    str,
    Field(min_length=1, max_length=REASON_MAX_LENGTH, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
    AfterValidator(_plain_text),
]


class ItemResolutionIn(BaseModel):
    """One NEEDS_REVIEW item's outcome, as IntaSend (or the statement) confirmed it."""

    model_config = ConfigDict(**_REQUEST, json_schema_extra=_resolution_rules)

    item_id: Annotated[int, BeforeValidator(_whole_number)] = Field(
        ge=1, le=MAX_ITEM_ID, description="payroll_items.id (the item's `id`)."
    )
    status: Literal["PAID", "FAILED"]
    provider_reference: ProviderReference | None = Field(
        None, validate_default=True, description="PAID only, and required there: the provider's reference."
    )
    reason: Reason | None = Field(
        None, validate_default=True, description="FAILED only, and required there: why it was not paid."
    )

    @field_validator("provider_reference", "reason")
    @classmethod
    def _evidence(cls, value: str | None, info: ValidationInfo) -> str | None:
        status = info.data.get("status")
        needed = _EVIDENCE.get(status) if isinstance(status, str) else None
        if needed is None:
            return value
        if info.field_name == needed and not value:
            raise _error("evidence_missing", f"is required when status is {status}")
        if info.field_name != needed and value is not None:
            raise _error("evidence_unused", f"must be absent when status is {status}")
        return value

    def to_resolution(self) -> resolutions.Resolution:
        return resolutions.Resolution(
            self.item_id, payrolls.ItemStatus(self.status), self.provider_reference, self.reason
        )


class ResolveItemsIn(BaseModel):
    """`POST /ops/items/resolve`: every item, or none."""

    model_config = _REQUEST

    items: list[ItemResolutionIn] = Field(min_length=1, max_length=MAX_RESOLUTIONS)
    note: Reason | None = Field(
        None, description="Kept with every resolution of this request (a ticket number, say)."
    )

    @field_validator("items", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_RESOLUTIONS:
            raise _error("too_many_items", f"must have at most {MAX_RESOLUTIONS} items, not {len(value)}")
        return value


class ResolutionOut(BaseModel):
    id: int
    item_id: int
    payroll_id: uuid.UUID
    operator_id: uuid.UUID
    operator_name: str
    from_status: Literal["NEEDS_REVIEW"]
    to_status: Literal["PAID", "FAILED"]
    provider_reference: str | None
    reason: str | None
    note: str | None
    created_at: datetime
    replayed: bool = Field(description="True when an earlier request recorded this resolution.")


class ResolvedPayrollOut(BaseModel):
    id: uuid.UUID
    status: PayrollStatusName


class ResolveItemsOut(BaseModel):
    resolutions: list[ResolutionOut] = Field(description="One per item asked, in the request's order.")
    payrolls: list[ResolvedPayrollOut] = Field(description="The items' payrolls, with their status now.")


# ---- POST /ops/items/recheck (an operator's key) ----------------------------------------------------------

ItemId = Annotated[int, BeforeValidator(_whole_number), Field(ge=1, le=MAX_ITEM_ID)]


def _not_null(value: Any) -> Any:
    if value is None:
        raise _error("null", "must not be null: leave the field out instead")
    return value


class RecheckItemsIn(BaseModel):
    """`POST /ops/items/recheck`: `item_ids` or `payroll_id`, exactly one."""

    model_config = ConfigDict(**_REQUEST, json_schema_extra={"minProperties": 1, "maxProperties": 1})

    item_ids: Annotated[
        list[ItemId] | None,
        BeforeValidator(_not_null),
        WithJsonSchema(
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": MAX_ITEM_ID},
                "minItems": 1,
                "maxItems": MAX_RESOLUTIONS,
                "description": "payroll_items.id of each item to re-check now.",
            }
        ),
    ] = Field(None, min_length=1, max_length=MAX_RESOLUTIONS)
    payroll_id: Annotated[
        PayrollId | None,
        BeforeValidator(_not_null),
        WithJsonSchema(
            {
                "type": "string",
                "format": "uuid",
                "description": "Re-check every item of this payroll that can be.",
            }
        ),
    ] = None

    @model_validator(mode="after")
    def _one_target(self) -> RecheckItemsIn:
        if (self.item_ids is None) == (self.payroll_id is None):
            raise _error("one_target", "give item_ids or payroll_id, exactly one")
        return self


class RecheckBatchOut(BaseModel):
    tracking_id: str = Field(description="IntaSend's batch.")
    item_ids: list[int] = Field(description="The items of the request (or of the payroll) in this batch.")
    due_at: datetime = Field(
        description="When a dispatcher asks IntaSend next (now, or earlier if it was due)."
    )
    checks: int = Field(description="Re-checks of this batch so far.")
    last_checked_at: datetime | None
    last_result: str | None = Field(
        description="What the last re-check learned: IntaSend's batch status, `not_found`, or the error."
    )


class RecheckItemsOut(BaseModel):
    batches: list[RecheckBatchOut] = Field(description="One per IntaSend batch, in batch order.")


class ProcessAcceptedOut(BaseModel):
    id: uuid.UUID
    status: Literal["PROCESSING"]
    status_url: str = Field(examples=["/payrolls/0b8f7c4e-7d2a-4c1e-9a37-1f0e6f3b9c11/status"])


class HealthOut(BaseModel):
    status: Literal["ok"]


class FieldErrorOut(BaseModel):
    field: str = Field(
        examples=["items[3].account"], description='Path into the body ("" is the body itself).'
    )
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldErrorOut] | None = Field(None, description="On validation failures (422).")
    payroll_id: uuid.UUID | None = Field(
        None, description="On 409 duplicate reference: the existing payroll."
    )
    payroll_status: PayrollStatusName | None = Field(
        None, description="On 409 payroll-final, payroll-not-draft, payroll-not-final: the payroll's status."
    )
    retry_id: uuid.UUID | None = Field(
        None, description="On 409 already-retried: the payroll that retries it."
    )


# ---- turning input into validated values -----------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)

_MESSAGES = {"missing": "is required", "extra_forbidden": "is not a known field"}


def field_path(loc: tuple[int | str, ...]) -> str:
    """('items', 3, 'account') → 'items[3].account'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def invalid(errors_found: list[dict[str, str]]) -> errors.InvalidRequest:
    shown = errors_found[:MAX_ERRORS]
    detail = f"the request has {len(errors_found)} invalid field(s)"
    if len(errors_found) > len(shown):
        detail += f"; the first {len(shown)} are listed"
    return errors.InvalidRequest(detail, shown)


def validate(model: type[M], data: Any) -> M:
    """`model` from parsed JSON, or `InvalidRequest` listing every problem."""
    if not isinstance(data, dict):
        raise invalid([{"field": "", "message": "the body must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = [
            {"field": field_path(e["loc"]), "message": _MESSAGES.get(e["type"], e["msg"])}
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise invalid(found) from None
