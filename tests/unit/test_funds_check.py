"""The pieces of the funds check before approve that need no I/O: what is compared, and when it is re-checked."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dispatcher_service import batch_flow
from shared.batches import FundsCheck


def test_the_estimate_is_intasends_total_with_charges_in_either_number_form() -> None:
    assert batch_flow._estimate({"total_amount_estimate": "48.00"}, []) == Decimal("48.00")
    assert batch_flow._estimate({"total_amount_estimate": Decimal("560.0")}, []) == Decimal("560.0")


def test_without_a_total_estimate_the_amounts_and_the_charge_estimate_are_summed() -> None:
    amounts = [Decimal("38.00"), Decimal("12.50")]
    assert batch_flow._estimate({"charge_estimate": 10}, amounts) == Decimal("60.50")
    assert batch_flow._estimate({}, amounts) is None, "no estimate at all: the provider does not say"
    assert batch_flow._estimate({"charge_estimate": "x"}, amounts) is None


def test_the_wallet_compared_is_the_one_named_else_the_settlement_wallet() -> None:
    wallets = [
        {"wallet_id": "W2", "wallet_type": "WORKING", "available_balance": "5.00"},
        {"wallet_id": "W1", "wallet_type": "SETTLEMENT", "available_balance": "7.00"},
        {"id": 3, "available_balance": "9.00"},  # the old docs' shape: an integer id
    ]
    assert batch_flow._available(batch_flow._find_wallet(wallets, "W2")) == Decimal("5.00")
    assert batch_flow._available(batch_flow._find_wallet(wallets, None)) == Decimal("7.00")
    assert batch_flow._available(batch_flow._find_wallet(wallets, "3")) == Decimal("9.00")
    assert batch_flow._find_wallet(wallets, "NOPE") is None
    assert batch_flow._available({"available_balance": None}) is None
    assert batch_flow._wallet_id({"wallet": {"wallet_id": "W9"}}) == "W9"
    assert batch_flow._wallet_id({}) is None


def test_short_by_is_never_negative() -> None:
    assert FundsCheck(Decimal("1010"), Decimal("1000"), None).short_by == Decimal("10")
    assert FundsCheck(Decimal("10"), Decimal("1000"), None).short_by == 0


@pytest.mark.parametrize(("checks", "low", "high"), [(1, 27, 33), (2, 54, 66), (3, 108, 132), (9, 540, 660)])
def test_rechecks_back_off_doubling_up_to_the_max(checks: int, low: float, high: float) -> None:
    for _ in range(20):
        assert low <= batch_flow.funds_backoff(checks, 30.0, 600.0) <= high
