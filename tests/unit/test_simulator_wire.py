"""The simulator's faster paths give what the plain ones gave: JSON read and written with msgspec
(simulator/wire.py), ids drawn without random.choice and uuid.UUID, amounts formatted by str(), and
plain transactions checked without the per-field error paths."""

from __future__ import annotations

import json
import random
import string
import uuid
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web

from simulator import wire
from simulator.config import SimConfig
from simulator.ledger import CENT, ItemView, SimState, money
from simulator.validation import ValidationFailed, validate_initiate


def _loads_reference(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def _outcome(parse: Any, text: str) -> tuple[str, Any]:
    try:
        value = parse(text)
    except json.JSONDecodeError as exc:
        return "JSONDecodeError", str(exc)
    except RecursionError:
        return "RecursionError", None
    return "ok", _typed(value)


def _typed(value: Any) -> Any:
    """A value with every leaf's type beside it, so 1 and Decimal("1") and 1.0 differ."""
    if isinstance(value, dict):
        return ("dict", [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, str(value))


BODIES = [
    "{}",
    "[]",
    "null",
    '"x"',
    "1",
    "-0",
    "-0.0",
    "0.10",
    "1e400",
    "1E5",
    "12345678901234567890123",
    "-9223372036854775809",
    "18446744073709551616",
    '{"a": 1, "a": 2}',
    '{"a": "\\u00e9\\ud83d\\ude00"}',
    '{"tracking\\u005fid": "t"}',
    ' {"a": [1, 2.50, true, false, null]} ',
    # refused by msgspec: json decides (NaN and lone surrogates it accepts, the rest it refuses too)
    "NaN",
    "-Infinity",
    '{"amount": NaN}',
    '"\\ud800"',
    '"\\udc00x"',
    '"a\\x"',
    '"tab\there"',
    "01",
    "[1,]",
    '{"a":1,}',
    '{"a":1}\x0c',
    "\ufeff{}",
    "1.",
    ".5",
    "+1",
    "{",
    '{"tracking_id": "t", "nonce": "n"} x',
    "[" * 100_000 + "]" * 100_000,
]


@pytest.mark.parametrize("text", BODIES)
def test_loads_means_what_json_loads_meant(text: str) -> None:
    assert _outcome(wire.loads, text) == _outcome(_loads_reference, text)


APPROVALS = [
    '{"tracking_id": "t", "nonce": "n", "transactions": [{"amount": 1.5}], "charge_estimate": 0.0}',
    '{"nonce": "n"}',
    "{}",
    '{"tracking_id": null, "nonce": 5}',
    '{"tracking_id": "t", "tracking_id": 7}',
    '{"tracking\\u005fid": "t"}',
    '{"tracking_id": 1.50, "nonce": 123456789012345678901234567890}',
    '{"tracking_id": "t", "nonce": "n", "x": NaN}',
    '{"tracking_id": "t", "nonce": "n", "x": "\\ud800"}',
    '{"tracking_id": "t", "nonce": "n", "x": [1, 2,}',
    '{"tracking_id": "t", "nonce": "n", "x": "\\q"}',
    '{"tracking_id": "t", "nonce": "n", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '[{"tracking_id": "t"}]',
    '"t"',
    "5",
]


@pytest.mark.parametrize("text", APPROVALS)
def test_loads_approval_keeps_the_two_fields_approve_reads(text: str) -> None:
    expected = _outcome(_loads_reference, text)
    if expected[0] == "ok" and expected[1][0] == "dict":
        expected = ("ok", ("dict", [(k, v) for k, v in expected[1][1] if k in ("tracking_id", "nonce")]))
    assert _outcome(wire.loads_approval, text) == expected


def _view(**fields: Any) -> ItemView:
    values = {name: "x" for name in ItemView.__struct_fields__} | fields
    return ItemView(**values)


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [True, False, None], "c": "é\u2028\n\x00", "charge_estimate": 50.0, "failed": 0.0},
        {"big": 1e16, "small": 1e-7, "int": 10**30, "nested": {"x": [1.25, -0.0]}},
        {"transactions": [_view(), _view(name=None, amount="12.50")]},
        {"transactions": [_view(name="lone \ud800 surrogate")], "charge_estimate": 1.5},  # json's fallback
    ],
)
def test_dumps_writes_what_json_dumps_wrote(value: Any) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, ItemView):
            return {name: getattr(v, name) for name in ItemView.__struct_fields__}
        raise TypeError

    expected = json.loads(json.dumps(value, default=plain), parse_float=Decimal)
    written = wire.dumps(value)
    assert json.loads(written, parse_float=Decimal) == expected
    assert _typed(json.loads(written)) == _typed(json.loads(json.dumps(value, default=plain)))


def test_json_response_has_web_json_responses_status_headers_and_content_type() -> None:
    ours = wire.json_response({"detail": "x"}, status=429, headers={"Retry-After": "1"})
    theirs = web.json_response({"detail": "x"}, status=429, headers={"Retry-After": "1"})
    assert (ours.status, ours.content_type, ours.charset) == (
        theirs.status,
        theirs.content_type,
        theirs.charset,
    )
    assert dict(ours.headers) == dict(theirs.headers)
    assert ours.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize("seed", [None, 0, 7, 12345])
def test_ids_are_drawn_as_random_choice_and_uuid_drew_them(seed: int | None) -> None:
    state = SimState(SimConfig(seed=seed))
    reference = random.Random()
    reference.setstate(state.rng.getstate())
    for length, alphabet in [
        (7, string.ascii_uppercase + string.digits),
        (6, string.ascii_lowercase + string.digits),
    ]:
        for _ in range(200):
            assert state._uuid() == str(uuid.UUID(int=reference.getrandbits(128), version=4))
            assert state._code(length, alphabet) == "".join(reference.choice(alphabet) for _ in range(length))
            assert state._code(10) == "".join(
                reference.choice(string.ascii_uppercase + string.digits) for _ in range(10)
            )
    assert state.rng.random() == reference.random()  # and left the generator where they left it


def test_money_formats_as_quantize_did() -> None:
    rng = random.Random(3)
    values = ["0", "-0", "-0.00", "1", "1.5", "1.505", "1E+2", "1.00E+2", "-5.00", "1E-7", "0.001", "5E-2"]
    values += [str(Decimal(rng.randint(-(10**9), 10**9)).scaleb(-rng.randint(-3, 5))) for _ in range(20_000)]
    for text in values:
        value = Decimal(text)
        assert money(value) == f"{value.quantize(CENT):f}", text


class _Raw(dict[str, Any]):
    """A dict that is not exactly a dict: validation checks it the long way, field by field."""


def _checked(raw: Any, provider: str, invalid: frozenset[str]) -> Any:
    body = {"provider": provider, "currency": "KES", "transactions": [raw]}
    try:
        return ("ok", validate_initiate(body, "SIMWLT1", invalid).transactions[0])
    except ValidationFailed as exc:
        return ("400", exc.body())
    except ArithmeticError as exc:
        return ("raises", type(exc).__name__)


ACCOUNTS: list[Any] = [
    "254712345678",
    " 254112345678 ",
    "254812345678",
    "25471234567",
    "2547123456789",
    "25471234567\u0668",  # an Arabic-Indic digit: \d matches it
    "254700000666",
    254712345678,
    True,
    None,
    "",
    "  ",
    1.5,
]
AMOUNTS: list[Any] = [
    38,
    0,
    -5,
    True,
    Decimal("38.50"),
    Decimal("38.505"),
    Decimal("1E+2"),
    Decimal("-0.0"),
    Decimal("5E-2"),
    Decimal("NaN"),
    10**30,
    "38.5",
    None,
    1.5,
]
EXTRAS: list[dict[str, Any]] = [
    {},
    {"name": "Jane", "narrative": "Salary"},
    {"name": None, "narrative": None, "bank_code": None, "account_type": None},
    {"name": 7},
    {"idempotency_key": 1},
    {"bank_code": "2"},
    {"bank_code": 12},
    {"account_type": "PayBill"},
    {"account_type": "Shop"},
    {"account_reference": "r", "idempotency_key": "k", "extra": [1]},
]


@pytest.mark.parametrize("provider", ["MPESA-B2C", "PESALINK", "MPESA-B2B", "INTASEND"])
def test_a_plain_transaction_is_checked_as_the_long_way_checks_it(provider: str) -> None:
    invalid = frozenset({"254700000666"})
    for account in ACCOUNTS:
        for amount in AMOUNTS:
            for extra in EXTRAS:
                raw = {"account": account, "amount": amount, **extra}
                fast, slow = _checked(raw, provider, invalid), _checked(_Raw(raw), provider, invalid)
                assert fast == slow, raw
                if fast[0] == "ok":
                    assert [type(v) for v in fast[1]] == [type(v) for v in slow[1]], raw
    for missing in ({"amount": 5}, {"account": "254712345678"}, {}):
        assert _checked(dict(missing), provider, invalid) == _checked(_Raw(missing), provider, invalid)
