"""The operator console's query parameters and answers (GET /ops/..., an operator's key), as pydantic models:
they validate the query and feed /openapi.json, like schemas.py, whose conventions they follow."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from api_service.schemas import (
    PLAIN_TEXT_PATTERN,
    ItemStatusName,
    Money,
    PageCursor,
    PageLimit,
    PayrollOut,
    PayrollStatusName,
    Reason,
    StatusDetailOut,
    _plain_text,
)

SEARCH_MAX_LENGTH = 100
ACTIONS_LIMIT_DEFAULT, ACTIONS_LIMIT_MAX = 50, 200
OutboxState = Literal["pending", "in_progress", "dead"]
OutboxView = Literal["stuck", "dead", "pending", "in_progress", "all"]


def _employer_id(value: object) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise PydanticCustomError("uuid", "must be an employer id (a UUID)")


EmployerId = Annotated[
    uuid.UUID, BeforeValidator(_employer_id), WithJsonSchema({"type": "string", "format": "uuid"})
]
Search = Annotated[
    str,
    Field(min_length=1, max_length=SEARCH_MAX_LENGTH, json_schema_extra={"pattern": PLAIN_TEXT_PATTERN}),
    AfterValidator(_plain_text),
]
# Unlike GET /payrolls (kept as it was), an unknown parameter is a 422: a filter misspelt is not ignored.
_QUERY = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OpsPayrollsQuery(BaseModel):
    """`GET /ops/payrolls` (query strings: not strict; an unknown parameter is a 422)."""

    model_config = _QUERY

    employer_id: EmployerId | None = None
    status: PayrollStatusName | None = None
    q: Search | None = None
    limit: PageLimit = 50
    cursor: PageCursor = None


class OpsItemsQuery(BaseModel):
    """`GET /ops/items`."""

    model_config = _QUERY

    employer_id: EmployerId | None = None
    status: ItemStatusName | None = None
    q: Search | None = None
    limit: PageLimit = 50
    cursor: PageCursor = None


class OpsOutboxQuery(BaseModel):
    """`GET /ops/outbox`."""

    model_config = _QUERY

    view: OutboxView = "stuck"
    employer_id: EmployerId | None = None
    limit: PageLimit = 50
    cursor: PageCursor = None


class OpsActionsQuery(BaseModel):
    """`GET /ops/actions`."""

    model_config = _QUERY

    limit: Annotated[int, Field(ge=1, le=ACTIONS_LIMIT_MAX)] = ACTIONS_LIMIT_DEFAULT


class OpsCancelPayrollIn(BaseModel):
    """`POST /ops/payrolls/{id}/cancel`; the body is optional (none, or `{}`: no note)."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    note: Reason | None = Field(
        None, description="Kept with the cancel request (a ticket number, who at the employer asked)."
    )


# ---- answers (rendered by api_service/ops_render.py) ------------------------------------------------------


class OutboxCountsOut(BaseModel):
    pending: int
    due: int = Field(description="pending rows whose available_at has come.")
    in_progress: int
    dead: int
    stuck: int = Field(description="in_progress past their lease, or pending and due for over 5 minutes.")
    total_estimate: int = Field(description="Every row ever written (the planner's estimate).")


class RateOut(BaseModel):
    max_rps: float = Field(description="INTASEND_MAX_RPS as this API process is configured.")
    recent_rps: float = Field(description="Requests to IntaSend per second over the last 5 seconds.")
    unanswered: int = Field(description="Requests to IntaSend sent and not answered yet.")
    paused: bool = Field(description="A 429 paused every dispatcher and the pause has not ended.")
    paused_until: datetime | None = Field(description="When the last 429 pause ends (or ended); null: never.")
    pauses: int = Field(description="429 pauses so far (the limiter row's pause_epoch).")
    next_slot: datetime | None


class MinuteOut(BaseModel):
    minute: datetime
    paid: int = Field(description="Items whose IntaSend batch finished in this minute, PAID now.")
    failed: int
    review: int = Field(description="… NEEDS_REVIEW now.")
    waiting: int = Field(description="Outbox rows waiting (created, not finished) at the end of the minute.")


class EmployerOut(BaseModel):
    id: uuid.UUID
    name: str
    payrolls: dict[str, int] = Field(description="Payrolls per status.")


class OpsOverviewOut(BaseModel):
    payrolls: dict[str, int] = Field(description="Payrolls per status, every employer.")
    outbox: OutboxCountsOut
    review_items: int = Field(description="Items in NEEDS_REVIEW, every employer.")
    rate: RateOut
    last_hour: list[MinuteOut] = Field(description="60 minutes, oldest first, the current one last.")
    employers: list[EmployerOut] = Field(description="By name, at most 500.")


class OpsPayrollOut(PayrollOut):
    employer_id: uuid.UUID
    employer_name: str
    retried_by: uuid.UUID | None = Field(description="The payroll that retries this one's FAILED items.")
    review_items: int
    outbox: dict[str, int] = Field(description="Its outbox rows per state.")
    status_detail: StatusDetailOut | None = Field(
        description="As in GET /payrolls/{id}: null unless the PROCESSING payroll waits for funds."
    )


class OpsPayrollPageOut(BaseModel):
    items: list[OpsPayrollOut] = Field(description="Newest first.")
    next_cursor: str | None


class OpsItemOut(BaseModel):
    id: int
    payroll_id: uuid.UUID
    payroll_reference: str
    employer_id: uuid.UUID
    employer_name: str
    position: int
    name: str
    account: str
    amount: Money
    provider: str
    status: ItemStatusName
    failure_reason: str | None
    provider_reference: str | None
    request_reference_id: str | None
    tracking_id: str | None
    batch_stage: str | None
    updated_at: datetime
    outbox_id: int | None = Field(description="The outbox row whose IntaSend batch carried the item.")
    outbox_status: str | None
    attempts: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="The row's available_at.")


class OpsItemPageOut(BaseModel):
    items: list[OpsItemOut] = Field(description="Newest first.")
    next_cursor: str | None


class OpsOutboxRowOut(BaseModel):
    id: int
    payroll_id: uuid.UUID
    payroll_reference: str
    employer_id: uuid.UUID
    employer_name: str
    status: OutboxState
    attempts: int
    errors: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime = Field(description="available_at: when it may be claimed (again).")
    locked_by: str | None
    locked_until: datetime | None
    processed_at: datetime | None
    carried_by: int | None
    tracking_id: str | None
    batch_stage: str | None
    stuck: bool


class OpsOutboxPageOut(BaseModel):
    items: list[OpsOutboxRowOut] = Field(description="Oldest first.")
    next_cursor: str | None


class OpsActionOut(BaseModel):
    kind: Literal["resolution", "retry", "cancel"]
    created_at: datetime
    payroll_id: uuid.UUID
    payroll_reference: str
    employer_name: str
    item_id: int | None
    operator_name: str | None = Field(
        description="The operator who acted; null for a retry or a cancel the employer asked with its own key."
    )
    status: str = Field(
        description="resolution: the item's new status; retry: the new payroll's status; cancel: the "
        "payroll's status now."
    )
    provider_reference: str | None
    reason: str | None
    note: str | None
    retry_id: uuid.UUID | None
    retry_reference: str | None
    cancelled_now: int | None = Field(description="cancel: the items that request cancelled.")
    not_cancellable: int | None = Field(
        description="cancel: the items already being approved when it came (they finish)."
    )


class OpsActionsOut(BaseModel):
    items: list[OpsActionOut] = Field(description="Newest first.")
