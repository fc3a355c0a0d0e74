"""The OpenAPI 3.1 document of `GET /openapi.json`, its schemas generated from the models in schemas.py.

Every route of routes.py is described here; a test checks that none is missing.
"""

from __future__ import annotations

import functools
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api_service import body, export, idempotency, ops_schemas, schemas

_REF = "#/components/schemas/{model}"
_PROBLEM = {"application/problem+json": {"schema": {"$ref": _REF.format(model="ProblemOut")}}}

_MODELS: list[tuple[type[BaseModel], Any]] = [
    (schemas.CreatePayrollIn, "validation"),
    (schemas.ProcessPayrollIn, "validation"),
    (schemas.RetryPayrollIn, "validation"),
    (schemas.PayrollOut, "serialization"),
    (schemas.PayrollDetailOut, "serialization"),
    (schemas.PayrollPageOut, "serialization"),
    (schemas.PayrollStatusOut, "serialization"),
    (schemas.ItemPageOut, "serialization"),
    (schemas.ProcessAcceptedOut, "serialization"),
    (schemas.CancelOut, "serialization"),
    (schemas.CallbackOut, "serialization"),
    (schemas.ResolveItemsIn, "validation"),
    (schemas.ResolveItemsOut, "serialization"),
    (schemas.RecheckItemsIn, "validation"),
    (schemas.RecheckItemsOut, "serialization"),
    (schemas.HealthOut, "serialization"),
    (schemas.ProblemOut, "serialization"),
    (ops_schemas.OpsOverviewOut, "serialization"),
    (ops_schemas.OpsPayrollPageOut, "serialization"),
    (ops_schemas.OpsItemPageOut, "serialization"),
    (ops_schemas.OpsOutboxPageOut, "serialization"),
    (ops_schemas.OpsActionsOut, "serialization"),
    (ops_schemas.OpsCancelPayrollIn, "validation"),
]

_PROBLEMS = {
    400: "The body is not readable JSON (malformed, NaN/Infinity, nested too deeply).",
    401: "No valid `Authorization: Bearer <api_key>` (with `WWW-Authenticate: Bearer`).",
    404: "No such payroll for this employer (another employer's payroll, or a malformed id, alike).",
    405: "Wrong method for this path (with `Allow`).",
    409: "Conflict (see the operation).",
    413: f"The body is larger than {body.MAX_BODY_BYTES} bytes.",
    415: "`Content-Type` is not `application/json`.",
    422: "Validation failed: `errors` lists every problem (at most 100) as `{field, message}`.",
    429: "Over this API key's throttle (`API_KEY_RATE`/`API_KEY_BURST`), or too many unknown keys from this "
    "client; `Retry-After` says when to retry.",
    503: "The database cannot be reached, has no free connection within `API_DB_ACQUIRE_TIMEOUT_S`, or its "
    "schema is not current; `Retry-After` says when to retry.",
}

_HEADER = {"schema": {"type": "string"}}
# A custom `format` (OpenAPI allows any): a cursor is opaque, only what `next_cursor` gave out is accepted.
# Each paged route has its own kind of cursor: GET /payrolls's, and GET /payrolls/{id}/items's.
CURSOR_FORMAT = "payrun-cursor"
ITEM_CURSOR_FORMAT = "payrun-item-cursor"
ID_CURSOR_FORMAT = "payrun-id-cursor"  # GET /ops/items's and GET /ops/outbox's


def _json(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}


def _problems(*statuses: int, conflict: str | None = None) -> dict[str, Any]:
    return {
        str(s): {"description": conflict if (s == 409 and conflict) else _PROBLEMS[s], "content": _PROBLEM}
        for s in statuses
    }


_PAYROLL_ID = {
    "name": "payroll_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
# A retry's answer, whoever asks for it (the employer, or an operator on its behalf).
_RETRY_CREATED = {
    "description": "Created: the new DRAFT payroll.",
    "headers": {"Location": {"description": "/payrolls/{id} of the new payroll", **_HEADER}},
    "content": _json("PayrollDetailOut"),
}
_IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "1–255 characters. A retry with the same key and request returns the first response (with "
    f"`{idempotency.REPLAYED_HEADER}: true`); the same key with a different request gets 422.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        # printable ASCII; HTTP drops spaces around a header value, so none at either end
        "pattern": r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$",
    },
}
_AUTHED = (401, 429, 503)
_PROCESS_RESPONSES = {
    "202": {
        "description": "PROCESSING (now, or already): the outbox rows were written with the status change.",
        "headers": {"Location": {"description": "The status_url.", **_HEADER}},
        "content": _json("ProcessAcceptedOut"),
    },
    **_problems(404, 409, 422, *_AUTHED, conflict="The payroll is in a final state."),
}
_IF_NONE_MATCH = {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}
_STATUS_GET = {
    "summary": "Poll a payroll's progress",
    "parameters": [
        _PAYROLL_ID,
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {
            "description": "Status and item counts.",
            "headers": {
                "ETag": _HEADER,
                "Cache-Control": _HEADER,
                "Retry-After": {
                    "description": "Seconds until the next poll; sent while PROCESSING.",
                    **_HEADER,
                },
            },
            "content": _json("PayrollStatusOut"),
        },
        "304": {"description": "Unchanged since the ETag in `If-None-Match`."},
        **_problems(404, *_AUTHED),
    },
}


def _status_param(names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(names)},
    }


_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {
        "type": "integer",
        "minimum": 1,
        "maximum": schemas.PAGE_LIMIT_MAX,
        "default": schemas.PAGE_LIMIT_DEFAULT,
    },
}


def _cursor_param(cursor_format: str) -> dict[str, Any]:
    return {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": schemas.CURSOR_MAX_LENGTH,
            "pattern": r"^[A-Za-z0-9_-]+$",
            "format": cursor_format,
        },
        "description": "`next_cursor` of the previous page, as it was given (opaque: any other value is a 422 "
        "naming `cursor`).",
    }


_ITEMS_GET = {
    "summary": "A payroll's items, a page at a time, in position order",
    "description": "Each item once, in the order it was sent, with IntaSend's references. The ETag is that of "
    "the page's body: a matching `If-None-Match` gets 304.",
    "parameters": [
        _PAYROLL_ID,
        _status_param(get_args(schemas.ItemStatusName)),
        _LIMIT,
        _cursor_param(ITEM_CURSOR_FORMAT),
        {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
    ],
    "responses": {
        "200": {
            "description": "One page.",
            "headers": {"ETag": _HEADER, "Cache-Control": _HEADER},
            "content": _json("ItemPageOut"),
        },
        "304": {"description": "Unchanged since the ETag in `If-None-Match`."},
        **_problems(404, 422, *_AUTHED),
    },
}
_ITEMS_CSV_GET = {
    "summary": "Every item of a payroll as CSV (for accountants), streamed",
    "description": "A header row, then one line per item in position order (RFC 4180, UTF-8, CRLF): "
    + ", ".join(export.COLUMNS)
    + ". `state` is the item's status, `amount` a decimal with two places, `paid_at` the time a PAID item "
    "was last updated (empty otherwise). A text cell starting with `=`, `+`, `-`, `@`, a tab or a carriage "
    "return gets a leading apostrophe (`'`), so that spreadsheets do not run it as a formula.",
    "parameters": [_PAYROLL_ID],
    "responses": {
        "200": {
            "description": "The CSV file.",
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="payroll-<reference>.csv" (ASCII stand-in) and '
                    "filename*=UTF-8''<the exact name, percent-encoded>.",
                    **_HEADER,
                },
                "Cache-Control": _HEADER,
            },
            "content": {export.MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        **_problems(404, *_AUTHED),
    },
}
_OPEN: dict[str, Any] = {"security": []}
_OPERATOR: dict[str, Any] = {"security": [{"operator": []}]}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_EMPLOYER_FILTER = _query("employer_id", {"type": "string", "format": "uuid"}, "Only this employer's.")
_SEARCH = _query(
    "q",
    {"type": "string", "minLength": 1, "maxLength": ops_schemas.SEARCH_MAX_LENGTH,
     "pattern": schemas.PLAIN_TEXT_PATTERN},
    "Search (case-insensitive, part of the text)",
)  # fmt: skip
_OPS_READ = (401, 422, 429, 503)


def _ops_get(summary: str, description: str, parameters: list[Any], model: str) -> dict[str, Any]:
    return {
        "get": {
            **_OPERATOR,
            "summary": summary,
            "description": description + " An employer's API key is refused (401).",
            "parameters": parameters,
            "responses": {
                "200": {"description": "The data.", "content": _json(model)},
                **_problems(*_OPS_READ),
            },
        }
    }


_OPS_PATHS: dict[str, dict[str, Any]] = {
    "/ops/overview": _ops_get(
        "The operator console's head line (an operator's key)",
        "Payrolls per status and outbox rows per state across every employer, NEEDS_REVIEW items, the rate "
        "limit in use and any 429 pause, the last hour minute by minute (items finished, rows waiting), and "
        "the employers with their payrolls per status.",
        [],
        "OpsOverviewOut",
    ),
    "/ops/payrolls": _ops_get(
        "Every employer's payrolls, newest first (an operator's key)",
        "`q` matches part of the reference.",
        [
            _EMPLOYER_FILTER,
            _status_param(get_args(schemas.PayrollStatusName)),
            _SEARCH,
            _LIMIT,
            _cursor_param(CURSOR_FORMAT),
        ],
        "OpsPayrollPageOut",
    ),  # fmt: skip
    "/ops/items": _ops_get(
        "Every employer's items, newest first (an operator's key)",
        "`q` matches a phone number in any form (07…, 2547…, +254 7…, by its last nine digits), part of the "
        "account, of the payee's name or of the payroll's reference, or exactly a request_reference_id or "
        "tracking_id. Each item comes with IntaSend's references and the outbox row whose batch carried it "
        "(attempts, last error, next attempt).",
        [
            _EMPLOYER_FILTER,
            _status_param(get_args(schemas.ItemStatusName)),
            _SEARCH,
            _LIMIT,
            _cursor_param(ID_CURSOR_FORMAT),
        ],
        "OpsItemPageOut",
    ),  # fmt: skip
    "/ops/outbox": _ops_get(
        "Outbox rows, oldest first (an operator's key)",
        "`view=stuck` (the default): in_progress rows whose lease ran out, and pending rows due for over 5 "
        "minutes that no dispatcher claimed; `dead`: rows that gave up (DISPATCHER_MAX_ERRORS); `pending`, "
        "`in_progress`, `all` (every row not done).",
        [
            _query(
                "view",
                {"type": "string", "enum": list(get_args(ops_schemas.OutboxView)), "default": "stuck"},
                "Which rows.",
            ),
            _EMPLOYER_FILTER,
            _LIMIT,
            _cursor_param(ID_CURSOR_FORMAT),
        ],
        "OpsOutboxPageOut",
    ),  # fmt: skip
    "/ops/actions": _ops_get(
        "The action log: resolutions, retries and cancels, newest first (an operator's key)",
        "Operators' resolutions of NEEDS_REVIEW items (item_resolutions, append-only), retries of "
        "FAILED items (payrolls.retry_of), whoever asked for them, and cancel requests "
        "(payroll_cancel_requests, append-only: an operator's, or the employer's with a null operator_name).",
        [
            _query(
                "limit",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": ops_schemas.ACTIONS_LIMIT_MAX,
                    "default": ops_schemas.ACTIONS_LIMIT_DEFAULT,
                },
                "How many, at most.",
            )
        ],
        "OpsActionsOut",
    ),  # fmt: skip
    "/ops/payrolls/{payroll_id}/retry": {
        "post": {
            **_OPERATOR,
            "summary": "Retry a payroll's FAILED items for its employer (an operator's key)",
            "description": "What `POST /payrolls/{id}/retry` does, on behalf of the payroll's own employer: "
            "the new DRAFT is that employer's, and the employer runs it. No Idempotency-Key: a payroll is "
            "retried at most once, so asking again is a 409 `already-retried` naming the retry.",
            "parameters": [_PAYROLL_ID],
            "requestBody": {"required": False, "content": _json("RetryPayrollIn")},
            "responses": {
                "201": _RETRY_CREATED,
                **_problems(
                    400,
                    404,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="As for POST /payrolls/{id}/retry: `payroll-not-final`, `nothing-to-retry`, "
                    "`already-retried` (`retry_id`), `duplicate-reference`.",
                ),
            },
        }
    },
    "/ops/payrolls/{payroll_id}/cancel": {
        "post": {
            **_OPERATOR,
            "summary": "Cancel a processing payroll for its employer (an operator's key)",
            "description": "What `POST /payrolls/{id}/cancel` does, on behalf of the payroll's own employer, "
            "with the same answer: items no batch being approved carries yet become CANCELLED. The operator "
            "(and the optional `note`) is recorded with the request (payroll_cancel_requests) and shown in "
            "GET /ops/actions. Naturally idempotent: asking again cancels nothing more and answers the counts.",
            "parameters": [_PAYROLL_ID],
            "requestBody": {"required": False, "content": _json("OpsCancelPayrollIn")},
            "responses": {
                "200": {
                    "description": "Cancelled what could be (now or before).",
                    "headers": {"Location": {"description": "the payroll's status_url", **_HEADER}},
                    "content": _json("CancelOut"),
                },
                **_problems(
                    400,
                    404,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="As for POST /payrolls/{id}/cancel: `payroll-not-processing` (a DRAFT), or "
                    "`payroll-final` (it ended with no item cancelled).",
                ),
            },
        }
    },
}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {
        "get": {
            **_OPEN,
            "summary": "Liveness",
            "responses": {"200": {"description": "Up.", "content": _json("HealthOut")}},
        }
    },
    "/readyz": {
        "get": {
            **_OPEN,
            "summary": "Readiness: the database is reachable and its schema current",
            "responses": {"200": {"description": "Ready.", "content": _json("HealthOut")}, **_problems(503)},
        }
    },
    "/openapi.json": {
        "get": {**_OPEN, "summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1."}}}
    },
    "/metrics": {
        "get": {
            **_OPEN,
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Text exposition format.", "content": {"text/plain": {}}}},
        }
    },
    "/webhooks/intasend": {
        "post": {
            **_OPEN,
            "summary": "IntaSend callback (send-money batch status changed)",
            "description": (
                "Authenticated by the `challenge` field, which must equal INTASEND_WEBHOOK_CHALLENGE (401 "
                "otherwise, and always while it is unset), checked before the body is parsed. The body may "
                "be at most 64 KiB plus 2 KiB per transaction of INTASEND_BATCH_SIZE (413 otherwise). "
                "Idempotent; it sets no state: it makes the dispatcher ask IntaSend for the batch's status "
                "sooner."
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["challenge", "tracking_id"],
                            "properties": {
                                "challenge": {"type": "string"},
                                "tracking_id": {"type": "string"},
                                "status_code": {"type": "string"},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "Received."},
                **_problems(400, 401, 415, 422),
                "413": {"description": "The body is larger than the callback cap.", "content": _PROBLEM},
            },
        }
    },
    "/payrolls": {
        "post": {
            "summary": "Create a DRAFT payroll",
            "description": "Unknown fields are rejected (422). A failed validation writes nothing.",
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": _json("CreatePayrollIn")},
            "responses": {
                "201": {
                    "description": "Created.",
                    "headers": {"Location": {"description": "/payrolls/{id}", **_HEADER}},
                    "content": _json("PayrollDetailOut"),
                },
                **_problems(
                    400,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="The reference is taken: `payroll_id` names the existing payroll.",
                ),
            },
        },
        "get": {
            "summary": "List payrolls, newest first",
            "description": "The ETag is that of the page's body: a matching `If-None-Match` gets 304, so a "
            "page that refreshes its list costs no body while nothing changed.",
            "parameters": [
                _status_param(get_args(schemas.PayrollStatusName)),
                _LIMIT,
                _cursor_param(CURSOR_FORMAT),
                _IF_NONE_MATCH,
            ],
            "responses": {
                "200": {
                    "description": "One page.",
                    "headers": {"ETag": _HEADER, "Cache-Control": _HEADER},
                    "content": _json("PayrollPageOut"),
                },
                "304": {"description": "Unchanged since the ETag in `If-None-Match`."},
                **_problems(422, *_AUTHED),
            },
        },
    },
    "/payrolls/{payroll_id}": {
        "get": {
            "summary": "A payroll with its items",
            "parameters": [_PAYROLL_ID],
            "responses": {
                "200": {"description": "The payroll.", "content": _json("PayrollDetailOut")},
                **_problems(404, *_AUTHED),
            },
        },
        "delete": {
            "summary": "Delete a DRAFT payroll and its items",
            "description": "In one transaction; the reference is free again. Deleting a payroll already "
            "deleted is a 404. Serialized with processing on the payroll's row lock: a payroll is either "
            "processed or deleted, never both.",
            "parameters": [_PAYROLL_ID],
            "responses": {
                "204": {"description": "Deleted."},
                **_problems(
                    404,
                    409,
                    *_AUTHED,
                    conflict="`payroll-not-draft`: the payroll is not a DRAFT (`payroll_status` says what it is).",
                ),
            },
        },
    },
    "/payrolls/{payroll_id}/retry": {
        "post": {
            "summary": "A new DRAFT payroll of a finished payroll's FAILED items",
            "description": "Only FAILED items (never NEEDS_REVIEW, PAID or CANCELLED), with the same name, "
            "account, amount, provider, bank_code and narrative, in their order; the new payroll's `retry_of` "
            "names the old one. Process it as any payroll. The body is optional: without one (or with `{}`) "
            "the reference is `<old reference>-retry-<n>`.",
            "parameters": [_PAYROLL_ID, _IDEMPOTENCY_KEY],
            "requestBody": {"required": False, "content": _json("RetryPayrollIn")},
            "responses": {
                "201": _RETRY_CREATED,
                **_problems(
                    400,
                    404,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="`payroll-not-final` (DRAFT or PROCESSING), `nothing-to-retry` (no FAILED item), "
                    "`already-retried` (`retry_id` names the payroll that retries it: retry that one), or "
                    "`duplicate-reference` (`payroll_id` names the payroll holding the reference).",
                ),
            },
        }
    },
    "/payrolls/{payroll_id}/cancel": {
        "post": {
            "summary": "Cancel what a processing payroll has not yet sent for approval",
            "description": "Every item of the payroll no batch being approved carries yet becomes CANCELLED; "
            "items whose batch was already being approved (`not_cancellable`) finish as usual. The payroll's "
            "final status is CANCELLED (NEEDS_REVIEW if some item needs review). Naturally idempotent: "
            "calling it again cancels nothing more and answers the counts; an `Idempotency-Key` replays the "
            "first answer. The body is ignored.",
            "parameters": [_PAYROLL_ID, _IDEMPOTENCY_KEY],
            "responses": {
                "200": {
                    "description": "Cancelled what could be (now or before).",
                    "headers": {"Location": {"description": "the payroll's status_url", **_HEADER}},
                    "content": _json("CancelOut"),
                },
                **_problems(
                    404,
                    409,
                    422,
                    *_AUTHED,
                    conflict="`payroll-not-processing` (a DRAFT: nothing is being paid, delete it instead), "
                    "or `payroll-final` (it ended with no item cancelled: nothing was left to cancel).",
                ),
            },
        }
    },
    "/payrolls/{payroll_id}/items": {"get": _ITEMS_GET},
    "/payrolls/{payroll_id}/items.csv": {"get": _ITEMS_CSV_GET},
    "/payrolls/{payroll_id}/process": {
        "post": {
            "summary": "Start paying a payroll",
            "description": "Sets it PROCESSING and writes its outbox rows in one transaction; the body is ignored.",
            "parameters": [_PAYROLL_ID, _IDEMPOTENCY_KEY],
            "responses": _PROCESS_RESPONSES,
        }
    },
    "/payrolls/{payroll_id}/status": {"get": _STATUS_GET},
    "/payroll/process": {
        "post": {
            "summary": "Start paying a payroll (the seed UI's form)",
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {"required": True, "content": _json("ProcessPayrollIn")},
            "responses": {**_PROCESS_RESPONSES, **_problems(400, 413, 415)},
        }
    },
    "/payroll/status/{payroll_id}": {
        "get": {**_STATUS_GET, "summary": "Poll a payroll (the seed UI's form)"}
    },
    "/employer/callback": {
        "get": {
            "summary": "Where this employer's payroll events go",
            "description": "The callback URL an operator set (`payrun employer set-callback`), without its "
            "secret; `url` null when none is set. Events: docs/api.md section 11.",
            "responses": {
                "200": {"description": "The callback, or nulls.", "content": _json("CallbackOut")},
                **_problems(*_AUTHED),
            },
        }
    },
    "/ops/items/resolve": {
        "post": {
            "security": [{"operator": []}],
            "summary": "Settle NEEDS_REVIEW items (an operator's key)",
            "description": (
                "Every item of the body, or none, in one transaction: each must be NEEDS_REVIEW, or already "
                "resolved exactly this way (same status and provider_reference or reason; the note is not "
                "compared), which answers what was recorded then (`replayed: true`), so a retry is harmless. "
                "Each resolution is recorded (append-only, with the operator), and each payroll that was "
                "NEEDS_REVIEW gets its final status when no item of it needs review any more. An employer's "
                "API key is refused (401)."
            ),
            "requestBody": {"required": True, "content": _json("ResolveItemsIn")},
            "responses": {
                "200": {"description": "Resolved (now, or already).", "content": _json("ResolveItemsOut")},
                "404": {
                    "description": "An `item_id` names no item (`item_id` says which).",
                    "content": _PROBLEM,
                },
                **_problems(
                    400,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="An item is not NEEDS_REVIEW, or was resolved another way (`item_id` says which); "
                    "nothing was changed.",
                ),
            },
        }
    },
    **_OPS_PATHS,
    "/ops/items/recheck": {
        "post": {
            "security": [{"operator": []}],
            "summary": "Ask IntaSend about NEEDS_REVIEW items now (an operator's key)",
            "description": (
                "Makes the batches of the items named (or of every item of the payroll that can be re-checked) "
                "due now: a dispatcher asks IntaSend's status at its next turn (within its share of the rate "
                "limit) and settles what IntaSend now shows final, as the slow re-check does. An item can be "
                "re-checked while it is NEEDS_REVIEW, or resolved by hand without IntaSend's final answer yet. "
                "All items or none; asking again is harmless (a batch due already stays due). An employer's "
                "API key is refused (401)."
            ),
            "requestBody": {"required": True, "content": _json("RecheckItemsIn")},
            "responses": {
                "200": {"description": "Due now (or already).", "content": _json("RecheckItemsOut")},
                "404": {
                    "description": "An `item_id` names no item (`item_id` says which), or no payroll has "
                    "`payroll_id`.",
                    "content": _PROBLEM,
                },
                **_problems(
                    400,
                    409,
                    413,
                    415,
                    422,
                    *_AUTHED,
                    conflict="`nothing-to-recheck`: an item (`item_id`) or the payroll (`payroll_id`) has "
                    "nothing to re-check (never in review, or IntaSend's final answer is recorded); nothing "
                    "was changed.",
                ),
            },
        }
    },
}


@functools.cache
def document() -> dict[str, Any]:
    _, top = models_json_schema(_MODELS, ref_template=_REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "payrun",
            "version": "1.0.0",
            "description": "Payroll payouts through IntaSend. Errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "schemas": top["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An employer's API key."},
                "operator": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An operator's key (`payrun operator create`, prefix `pr_op_`).",
                },
            },
        },
    }
