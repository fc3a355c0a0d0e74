from __future__ import annotations

from decimal import Decimal

import pytest

from dispatcher_service import outcomes
from dispatcher_service.provider.protocol import Batch, Transaction
from shared.batches import Item


def item(n: int, ref: str | None = None, account: str | None = None, amount: str = "100.00") -> Item:
    return Item(
        n,
        n,
        f"W{n}",
        account or f"2547000000{n:02d}",
        Decimal(amount),
        "MPESA-B2C",
        None,
        None,
        "SUBMITTED",
        ref or f"ref-{n}",
    )


def txn(n: int, code: str | None, **kw: object) -> Transaction:
    return Transaction(f"ref-{n}", f"2547000000{n:02d}", Decimal("100.00"), code, None, **kw)  # type: ignore[arg-type]


def batch(code: str, *txns: Transaction, status: str = "") -> Batch:
    return Batch("t", code, status, "n", tuple(txns), {})


def test_a_completed_batch_maps_each_transaction_code() -> None:
    items = [item(0), item(1), item(2)]
    reading = outcomes.read_status(
        batch(
            "BC100",
            txn(0, "TS100", provider_reference="R0"),
            txn(1, "TF106", failure_reason="Invalid account"),
            txn(2, "TF105"),
        ),
        items,
    )
    assert reading.final
    assert [(o.status, o.provider_reference) for o in reading.outcomes] == [
        ("PAID", "R0"),
        ("FAILED", None),
        ("NEEDS_REVIEW", None),
    ]
    assert "Invalid account" in (reading.outcomes[1].reason or "")


def test_a_completed_batch_with_items_still_moving_is_not_final() -> None:
    reading = outcomes.read_status(batch("BC100", txn(0, "TS100"), txn(1, "TR109")), [item(0), item(1)])
    assert not reading.final and len(reading.outcomes) == 1


@pytest.mark.parametrize("code", ["BF102", "BF105", "BF107", "BE111"])
def test_a_failed_batch_fails_unstarted_items_and_sends_in_flight_ones_to_review(code: str) -> None:
    items = [item(0), item(1), item(2), item(3)]
    reading = outcomes.read_status(
        batch(code, txn(0, "TP101"), txn(1, "TS100"), txn(2, "TH107"), txn(3, "TF105")), items
    )
    assert reading.final
    assert [o.status for o in reading.outcomes] == ["FAILED", "PAID", "NEEDS_REVIEW", "NEEDS_REVIEW"]
    assert code in (reading.outcomes[0].reason or "")


def test_padded_transaction_codes_are_read_as_the_codes_they_pad() -> None:
    reading = outcomes.read_status(
        batch("BC100", txn(0, " TS100 ", provider_reference="R0"), txn(1, "TF103 "), txn(2, "\ttf105")),
        [item(0), item(1), item(2)],
    )
    assert reading.final
    assert [o.status for o in reading.outcomes] == ["PAID", "FAILED", "NEEDS_REVIEW"]
    assert reading.outcomes[0].provider_reference == "R0"


def test_padded_batch_codes_are_read_as_the_codes_they_pad() -> None:
    reading = outcomes.read_status(batch(" bf102 ", txn(0, "TP101"), txn(1, "TS100")), [item(0), item(1)])
    assert reading.final and [o.status for o in reading.outcomes] == ["FAILED", "PAID"]
    assert "BF102" in (reading.outcomes[0].reason or "")
    assert outcomes.awaiting_approval(batch(" bp103\n"))


def test_an_unknown_transaction_code_in_a_failed_batch_needs_review_and_names_the_code() -> None:
    reading = outcomes.read_status(batch("BF102", txn(0, "TX999")), [item(0)])
    assert reading.final
    [outcome] = reading.outcomes
    assert outcome.status == "NEEDS_REVIEW"
    assert "TX999" in (outcome.reason or "") and "BF102" in (outcome.reason or "")


def statuses(code: str, *txns: Transaction, items: int) -> list[str]:
    return [
        o.status for o in outcomes.read_status(batch(code, *txns), [item(n) for n in range(items)]).outcomes
    ]


def test_a_transaction_without_a_code_is_unpaid_only_when_the_batch_failed_its_balance_check() -> None:
    failed = ("BF102", "BF105", "BF107", "BE111")
    got = {code: statuses(code, txn(0, None), txn(1, "  "), items=2) for code in failed}
    assert got == {
        "BF102": ["NEEDS_REVIEW", "NEEDS_REVIEW"],
        "BF105": ["FAILED", "FAILED"],
        "BF107": ["NEEDS_REVIEW", "NEEDS_REVIEW"],
        "BE111": ["NEEDS_REVIEW", "NEEDS_REVIEW"],
    }


def test_an_item_missing_from_a_failed_batch_is_unpaid_only_when_the_batch_failed_its_balance_check() -> None:
    got = {code: statuses(code, txn(0, "TS100"), items=2) for code in ("BF102", "BF105", "BF107", "BE111")}
    assert got == {
        "BF102": ["PAID", "NEEDS_REVIEW"],
        "BF105": ["PAID", "FAILED"],
        "BF107": ["PAID", "NEEDS_REVIEW"],
        "BE111": ["PAID", "NEEDS_REVIEW"],
    }


def test_an_item_missing_from_a_completed_batch_needs_review() -> None:
    reading = outcomes.read_status(batch("BC100", txn(0, "TS100")), [item(0), item(1)])
    assert reading.final and reading.outcomes[1].status == "NEEDS_REVIEW"


def test_processing_batches_are_not_final() -> None:
    assert not outcomes.read_status(batch("BP110", txn(0, "TP101")), [item(0)]).final


def test_awaiting_approval_by_code_or_by_status_text() -> None:
    assert outcomes.awaiting_approval(batch("BP101"))
    assert outcomes.awaiting_approval(batch("BP103"))
    assert outcomes.awaiting_approval(batch("", status="Preview and Approve"))
    assert not outcomes.awaiting_approval(batch("BP110", status="Sending payment"))


def test_references_match_by_position_then_by_account_and_amount() -> None:
    items = [item(0, account="254700000001"), item(1, account="254700000002")]
    in_order = [
        Transaction("a", "254700000001", Decimal("100"), "TP101", None),
        Transaction("b", "254700000002", Decimal("100.00"), "TP101", None),
    ]
    assert outcomes.match_references(items, in_order) == {0: "a", 1: "b"}
    assert outcomes.match_references(items, list(reversed(in_order))) == {0: "a", 1: "b"}
    assert outcomes.match_references(items, in_order[:1]) is None
    wrong = [in_order[0], Transaction("c", "254700000009", Decimal("100"), "TP101", None)]
    assert outcomes.match_references(items, wrong) is None


def drf(*attrs: str | None) -> dict[str, object]:
    return {
        "type": "validation_error",
        "errors": [{"code": "invalid", "detail": "Enter a valid phone number.", "attr": a} for a in attrs],
    }


def test_an_initiate_refusal_that_names_transactions_fails_only_those() -> None:
    items = [item(10), item(11), item(12)]
    refused = outcomes.refused_items(drf("transactions.1.account", "transactions.1.amount"), items)
    assert refused == {
        11: "IntaSend refused this transaction: account: Enter a valid phone number.; "
        "amount: Enter a valid phone number."
    }
    assert outcomes.refused_items(drf("transactions[2].account"), items) == {
        12: "IntaSend refused this transaction: account: Enter a valid phone number."
    }


@pytest.mark.parametrize(
    "body",
    [
        drf("transactions.1.account", "currency"),  # one error is the batch's own
        drf("transactions.3.account"),  # no such transaction
        drf(None),
        drf("transactions"),
        {"detail": "Invalid request"},
        None,
        "Bad Request",
    ],
)
def test_a_refusal_that_is_not_only_about_named_transactions_refuses_the_batch(body: object) -> None:
    assert outcomes.refused_items(body, [item(10), item(11), item(12)]) is None
