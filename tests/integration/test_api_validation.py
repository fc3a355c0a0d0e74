"""POST /payrolls rejects bad input with the right 4xx, names every bad field, and writes nothing.

No input, however malformed, may produce a 500 (the ASGI transport re-raises app exceptions, so a 500 from a
bug would fail these tests loudly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api_service import body as body_module
from tests.integration import api_support as api


async def _nothing_written(pool: asyncpg.Pool) -> None:
    for table in ("payrolls", "payroll_items", "outbox", "idempotency_keys"):
        assert await api.count(pool, table) == 0, table


def _with_item(n: int, **fields: Any) -> dict[str, Any]:
    body = api.payroll_body(items=5)
    body["items"][n] = {**body["items"][n], **fields}
    return body


def _without_item_field(n: int, name: str) -> dict[str, Any]:
    body = api.payroll_body(items=5)
    del body["items"][n][name]
    return body


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("missing reference", {"currency": "KES", "items": [api.item()]}, "reference"),
    ("empty reference", api.payroll_body(reference=""), "reference"),
    ("blank reference", api.payroll_body(reference="   "), "reference"),
    ("long reference", api.payroll_body(reference="R" * 101), "reference"),
    ("reference not a string", api.payroll_body(reference=7), "reference"),
    ("NUL in reference", api.payroll_body(reference="a\x00b"), "reference"),
    ("currency USD", api.payroll_body(currency="USD"), "currency"),
    ("currency lower case", api.payroll_body(currency="kes"), "currency"),
    ("missing currency", {"reference": "R", "items": [api.item()]}, "currency"),
    ("no items", api.payroll_body(items=0), "items"),
    ("items not a list", {"reference": "R", "currency": "KES", "items": "many"}, "items"),
    ("item not an object", {"reference": "R", "currency": "KES", "items": [api.item(), 5]}, "items[1]"),
    ("unknown top-level field", api.payroll_body(extra=1), "extra"),
    ("unknown item field", _with_item(2, colour="red"), "items[2].colour"),
    ("invalid phone", _with_item(3, account="0812345678"), "items[3].account"),
    ("landline", _with_item(3, account="0201234567"), "items[3].account"),
    ("short phone", _with_item(3, account="071234"), "items[3].account"),
    ("letters in phone", _with_item(3, account="0722FLOWER"), "items[3].account"),
    ("foreign phone", _with_item(3, account="+255712345678"), "items[3].account"),
    (
        "pesalink account with letters",
        _with_item(1, provider="PESALINK", bank_code="2", account="12AB"),
        "items[1].account",
    ),
    (
        "pesalink without bank_code",
        _with_item(1, provider="PESALINK", account="1234567"),
        "items[1].bank_code",
    ),
    (
        "pesalink bank_code not digits",
        _with_item(1, provider="PESALINK", account="1", bank_code="KCB"),
        "items[1].bank_code",
    ),
    ("bank_code on mpesa", _with_item(1, bank_code="2"), "items[1].bank_code"),
    ("unknown provider", _with_item(1, provider="PAYPAL"), "items[1].provider"),
    ("amount zero", _with_item(0, amount=0), "items[0].amount"),
    ("amount negative", _with_item(0, amount="-100.00"), "items[0].amount"),
    ("amount three places", _with_item(0, amount="100.005"), "items[0].amount"),
    ("amount three places as number", _with_item(0, amount=100.125), "items[0].amount"),
    ("amount bool", _with_item(0, amount=True), "items[0].amount"),
    ("amount null", _with_item(0, amount=None), "items[0].amount"),
    ("amount text", _with_item(0, amount="ten"), "items[0].amount"),
    ("amount NaN string", _with_item(0, amount="NaN"), "items[0].amount"),
    ("amount Infinity string", _with_item(0, amount="Infinity"), "items[0].amount"),
    ("amount huge", _with_item(0, amount=10**30), "items[0].amount"),
    ("amount huge exponent", _with_item(0, amount=1e300), "items[0].amount"),
    ("amount list", _with_item(0, amount=[1]), "items[0].amount"),
    ("mpesa below 10", _with_item(0, amount="9.99"), "items[0].amount"),
    ("mpesa above 150000", _with_item(0, amount="150000.01"), "items[0].amount"),
    ("mpesa with cents", _with_item(3, amount="1500.50"), "items[3].amount"),
    ("mpesa with cents as number", _with_item(3, amount=1500.5), "items[3].amount"),
    ("missing amount", _without_item_field(4, "amount"), "items[4].amount"),
    ("missing name", _without_item_field(4, "name"), "items[4].name"),
    ("missing account", _without_item_field(4, "account"), "items[4].account"),
    ("empty name", _with_item(2, name=""), "items[2].name"),
    ("long name", _with_item(2, name="N" * 101), "items[2].name"),
    ("name not a string", _with_item(2, name=12), "items[2].name"),
    ("control character in name", _with_item(2, name="Jane\nDoe"), "items[2].name"),
    ("long narrative", _with_item(2, narrative="N" * 23), "items[2].narrative"),
    ("narrative not a string", _with_item(2, narrative=5), "items[2].narrative"),
]


async def test_each_rule_is_a_422_naming_the_field(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    """One table of cases, one database: each case breaks exactly one rule of docs/api.md section 1."""
    for case, payload, field in CASES:
        r = await client.post("/payrolls", json=payload, headers=api.auth(key))
        assert r.status_code == 422, (case, r.text)
        assert r.headers["content-type"] == "application/problem+json", case
        problem = r.json()
        assert {"type", "title", "status", "detail", "errors"} <= problem.keys(), case
        assert problem["status"] == 422, case
        assert [e["field"] for e in problem["errors"]] == [field], (case, problem["errors"])
        assert all(e["message"] for e in problem["errors"]), case
    await _nothing_written(pool)


async def test_every_error_is_listed_at_once(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    payload = api.payroll_body(items=4, reference="", currency="USD")
    payload["items"][1]["account"] = "12"
    payload["items"][3]["amount"] = "0"
    r = await client.post("/payrolls", json=payload, headers=api.auth(key))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == [
        "reference",
        "currency",
        "items[1].account",
        "items[3].amount",
    ]
    await _nothing_written(pool)


async def test_the_error_list_is_capped_and_says_so(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payload = api.payroll_body(items=300)
    for it in payload["items"]:
        it["amount"] = "-1"
    r = await client.post("/payrolls", json=payload, headers=api.auth(key))
    assert r.status_code == 422
    assert len(r.json()["errors"]) == 100
    assert "300" in r.json()["detail"] and "first 100" in r.json()["detail"]
    await _nothing_written(pool)


async def test_more_than_10000_items_is_422(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    payload = api.payroll_body(items=1)
    payload["items"] = payload["items"] * 10_001
    r = await client.post("/payrolls", json=payload, headers=api.auth(key))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["items"]
    await _nothing_written(pool)


async def test_a_total_too_large_for_the_database_is_422(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool
) -> None:
    payload = api.payroll_body(items=0)
    payload["items"] = [
        api.item(n, provider="PESALINK", account="1", bank_code="1", amount="999999999999.99")
        for n in range(2)
    ]
    r = await client.post("/payrolls", json=payload, headers=api.auth(key))
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["items"]
    await _nothing_written(pool)


RAW: list[tuple[str, bytes, int]] = [
    (
        "NaN",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":NaN}]}',
        400,
    ),
    (
        "Infinity",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":Infinity}]}',
        400,
    ),
    (
        "-Infinity",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":-Infinity}]}',
        400,
    ),
    (
        "huge integer",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":'
        + b"9" * 5000
        + b"}]}",
        400,
    ),
    (
        "huge exponent",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":1e999999999}]}',
        422,
    ),
    (
        "tiny exponent",
        b'{"reference":"R","currency":"KES","items":[{"name":"a","account":"0712345678","amount":1e-999999999}]}',
        422,
    ),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400),
    ("deep nesting in an object", b'{"reference":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_001, 400),
    ("garbage bytes", bytes(range(256)), 400),
    ("invalid utf-8", b'{"reference":"\xff\xfe"}', 400),
    (
        "lone surrogate",
        b'{"reference":"\\ud800","currency":"KES","items":[{"name":"\\udfff","account":"0712345678","amount":100}]}',
        422,
    ),
    (
        "NUL escape",
        b'{"reference":"\\u0000","currency":"KES","items":[{"name":"a","account":"0712345678","amount":100}]}',
        422,
    ),
    ("truncated", b'{"reference":"R","currency":"KES","items":[', 400),
    ("empty", b"", 400),
    ("whitespace", b"   ", 400),
    ("array body", b"[1, 2, 3]", 422),
    ("string body", b'"payroll"', 422),
    ("null body", b"null", 422),
    ("number body", b"42", 422),
]


@pytest.mark.parametrize(("case", "raw", "status"), RAW, ids=[c[0] for c in RAW])
async def test_malformed_bodies_are_4xx_and_write_nothing(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, case: str, raw: bytes, status: int
) -> None:
    r = await client.post(
        "/payrolls", content=raw, headers={**api.auth(key), "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status
    await _nothing_written(pool)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, key: str, pool: asyncpg.Pool, content_type: str | None
) -> None:
    headers = api.auth(key) | ({"Content-Type": content_type} if content_type else {})
    r = await client.post("/payrolls", content=b'{"reference":"R"}', headers=headers)
    assert r.status_code == 415
    assert r.headers["content-type"] == "application/problem+json"
    await _nothing_written(pool)


async def test_json_with_a_charset_is_accepted(client: httpx.AsyncClient, key: str) -> None:
    headers = {**api.auth(key), "Content-Type": "application/json; charset=utf-8"}
    r = await client.post(
        "/payrolls", content=httpx.Request("POST", "/", json=api.payroll_body()).content, headers=headers
    )
    assert r.status_code == 201


async def test_a_body_over_the_cap_is_413(client: httpx.AsyncClient, key: str, pool: asyncpg.Pool) -> None:
    big = b'{"reference":"' + b"R" * (body_module.MAX_BODY_BYTES + 10) + b'"}'
    r = await client.post(
        "/payrolls", content=big, headers={**api.auth(key), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"

    async def streamed() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(9):
            yield b" " * (1024 * 1024)

    r = await client.post(
        "/payrolls", content=streamed(), headers={**api.auth(key), "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    await _nothing_written(pool)
