"""Request validation without a database: phone numbers, amounts, field paths, the command it produces."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from api_service import schemas
from shared import errors, payrolls


def _payroll(**item: Any) -> dict[str, Any]:
    return {
        "reference": "R",
        "currency": "KES",
        "items": [{"name": "Jane", "account": "0712345678", "amount": 100, **item}],
    }


def _errors(data: Any) -> list[dict[str, str]]:
    with pytest.raises(errors.InvalidRequest) as caught:
        schemas.validate(schemas.CreatePayrollIn, data)
    return caught.value.errors


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("0712345678", "254712345678"),
        ("0112345678", "254112345678"),
        ("+254712345678", "254712345678"),
        ("254712345678", "254712345678"),
        ("0712 345 678", "254712345678"),
        ("0712-345-678", "254712345678"),
        (" +254 712-345-678 ", "254712345678"),
        ("+254 110 000 000", "254110000000"),
    ],
)
def test_kenyan_mobile_numbers_are_normalised(raw: str, normalised: str) -> None:
    assert schemas.normalise_msisdn(raw) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "0201234567",
        "0812345678",
        "071234567",
        "07123456789",
        "+255712345678",
        "0722FLOWER",
        "",
        "++254712345678",
        "254 7",
        "\u0660\u0667\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",  # 0712345678 in Arabic-Indic digits
    ],
)
def test_other_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(Exception, match="Kenyan mobile number"):
        schemas.normalise_msisdn(raw)


@pytest.mark.parametrize(
    ("amount", "parsed"),
    [(100, "100.00"), ("100", "100.00"), ("100.5", "100.50"), (Decimal("100.50"), "100.50"), ("1e2", None), (Decimal("1E+2"), "100.00"),
     (Decimal("100.500"), "100.50"), ("  42.00 ", "42.00"), (150000, "150000.00"), (10, "10.00")],
)  # fmt: skip
def test_amounts_parse_to_two_places(amount: object, parsed: str | None) -> None:
    bank = {"provider": "PESALINK", "account": "1", "bank_code": "2"}  # no whole-shilling rule
    if parsed is None:
        assert [e["field"] for e in _errors(_payroll(amount=amount, **bank))] == ["items[0].amount"]
    else:
        command = schemas.validate(schemas.CreatePayrollIn, _payroll(amount=amount, **bank)).to_command()
        assert str(command.items[0].amount) == parsed


@pytest.mark.parametrize("amount", ["100.50", 100.5, Decimal("10.01"), "149999.99"])
def test_mpesa_amounts_with_cents_are_refused_on_the_amount(amount: object) -> None:
    assert _errors(_payroll(amount=amount)) == [
        {
            "field": "items[0].amount",
            "message": "must be whole shillings for MPESA-B2C (M-Pesa moves no cents)",
        }
    ]


@pytest.mark.parametrize(
    ("item", "parsed"),
    [
        ({"amount": "100.00"}, "100.00"),
        ({"amount": Decimal("100.0")}, "100.00"),
        ({"provider": "PESALINK", "account": "1", "bank_code": "2", "amount": "100.50"}, "100.50"),
        ({"provider": "INTASEND", "amount": "100.50"}, "100.50"),
    ],
)
def test_whole_mpesa_amounts_and_other_providers_cents_are_accepted(
    item: dict[str, Any], parsed: str
) -> None:
    command = schemas.validate(schemas.CreatePayrollIn, _payroll(**item)).to_command()
    assert str(command.items[0].amount) == parsed


@pytest.mark.parametrize(
    "amount",
    [
        0,
        -1,
        "0.00",
        "1.001",
        Decimal("NaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        True,
        None,
        [],
        {},
        "1,000",
        "\u0661\u0660\u0660",  # 100 in Arabic-Indic digits
        9.99,
        150000.01,
    ],
)
def test_bad_amounts_name_the_field(amount: object) -> None:
    assert [e["field"] for e in _errors(_payroll(amount=amount))] == ["items[0].amount"]


def test_non_mpesa_items_have_no_mpesa_amount_range() -> None:
    data = _payroll(provider="PESALINK", account="000123", bank_code="01", amount="5.00")
    item = schemas.validate(schemas.CreatePayrollIn, data).to_command().items[0]
    assert item == payrolls.NewItem("Jane", "000123", Decimal("5.00"), payrolls.Provider.PESALINK, "01", None)


def test_a_numeric_bank_code_is_taken_as_digits() -> None:
    data = _payroll(provider="PESALINK", account="1", bank_code=2)
    assert schemas.validate(schemas.CreatePayrollIn, data).to_command().items[0].bank_code == "2"


def test_the_command_carries_totals_and_stripped_text() -> None:
    data = {
        "reference": "  R-1 ",
        "currency": "KES",
        "items": [
            {
                "name": " Jane ",
                "account": "0712345678",
                "amount": "10.10",
                "narrative": "",
                "provider": "INTASEND",
            },
            {"name": "John", "account": "0712345679", "amount": 20, "narrative": "Nov"},
        ],
    }
    command = schemas.validate(schemas.CreatePayrollIn, data).to_command()
    assert command.reference == "R-1"
    assert command.total_amount == Decimal("30.10")
    assert [i.name for i in command.items] == ["Jane", "John"]
    assert [i.narrative for i in command.items] == [None, "Nov"]


def test_a_body_that_is_not_an_object_is_one_error_at_the_root() -> None:
    assert _errors([]) == [{"field": "", "message": "the body must be a JSON object"}]


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("items", 3, "account"), "items[3].account"),
        (("reference",), "reference"),
        ((), ""),
        (("items", 0), "items[0]"),
    ],
)
def test_field_paths(loc: tuple[int | str, ...], path: str) -> None:
    assert schemas.field_path(loc) == path


def test_the_process_body_wants_a_uuid() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        schemas.validate(schemas.ProcessPayrollIn, {"payroll_id": "x"})
    assert caught.value.errors == [{"field": "payroll_id", "message": "must be a payroll id (a UUID)"}]
