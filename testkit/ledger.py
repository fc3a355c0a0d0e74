"""THE ledger reconciliation: payrun's payroll items against the simulator's ledger (GET /sim/ledger), item
by item. Tests assert it (tests/e2e: assert_ledger_agrees); benchmarks report it (bench/scenario.py,
bench/throughput.py).

The rules, over every item of every payroll that left DRAFT:
- nobody was paid twice: at most one paid ledger entry per request_reference_id;
- every item ended PAID, FAILED, NEEDS_REVIEW or CANCELLED (nothing left PENDING or SUBMITTED);
- PAID ⇒ the provider paid it exactly once, to the item's account, the item's amount;
- FAILED or CANCELLED ⇒ the provider did not pay it;
- NEEDS_REVIEW ⇒ either (the provider cannot tell), but a payment it made is to the item's account and amount;
- every payment the provider made belongs to an item payrun knows as PAID or NEEDS_REVIEW (a payment for a
  DRAFT payroll's item, or for a reference payrun never stored, is a stray);
- so the ledger's total equals the amounts of the PAID items plus those of the paid NEEDS_REVIEW items.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg

FINAL = ("PAID", "FAILED", "NEEDS_REVIEW", "CANCELLED")


@dataclass
class Reconciliation:
    items: int = 0
    states: dict[str, int] = field(default_factory=dict)  # item status -> count
    payrolls: dict[str, int] = field(default_factory=dict)  # payroll status -> count (DRAFT excluded)
    paid_once: int = 0
    paid_twice: list[str] = field(default_factory=list)  # request_reference_ids
    not_final: list[str] = field(default_factory=list)  # item ids
    paid_not_paid: list[str] = field(default_factory=list)  # item ids: PAID, but no payment in the ledger
    failed_but_paid: list[str] = field(default_factory=list)  # item ids
    wrong_account: list[str] = field(default_factory=list)  # item ids
    wrong_amount: list[str] = field(default_factory=list)  # item ids
    stray: list[str] = field(default_factory=list)  # request_reference_ids payrun does not account for
    ledger_total: Decimal = Decimal(0)  # what the provider paid
    items_total: Decimal = Decimal(0)  # PAID items, and the NEEDS_REVIEW items the provider paid
    payrolls_total: Decimal = Decimal(0)  # total_amount of the payrolls that left DRAFT

    PROBLEMS = (
        "paid_twice",
        "not_final",
        "paid_not_paid",
        "failed_but_paid",
        "wrong_account",
        "wrong_amount",
        "stray",
    )

    @property
    def ok(self) -> bool:
        return not any(getattr(self, p) for p in self.PROBLEMS) and self.ledger_total == self.items_total

    @property
    def all_paid(self) -> bool:
        """Every item PAID, every payroll COMPLETED and the ledger's total that of the payrolls (what a run
        without provider failures must end with)."""
        return (
            self.ok
            and set(self.states) <= {"PAID"}
            and set(self.payrolls) <= {"COMPLETED"}
            and self.ledger_total == self.payrolls_total
        )

    def problems(self) -> str:
        found = [f"{p}: {getattr(self, p)[:5]}" for p in self.PROBLEMS if getattr(self, p)]
        if self.ledger_total != self.items_total:
            found.append(f"the ledger paid {self.ledger_total}, the items account for {self.items_total}")
        return "; ".join(found)

    def as_dict(self) -> dict[str, Any]:
        """Counts and totals (JSON-friendly), for reports."""
        out: dict[str, Any] = {"ok": self.ok, "items": self.items, "states": self.states}
        out["paid_once"] = self.paid_once
        out.update({p: len(getattr(self, p)) for p in self.PROBLEMS})
        out.update(
            ledger_total=str(self.ledger_total),
            items_total=str(self.items_total),
            payrolls_total=str(self.payrolls_total),
        )
        return out


async def reconcile(database_url: str, sim_url: str) -> Reconciliation:
    """payrun's items (database_url) against the simulator's ledger (sim_url): see the module's rules."""
    async with aiohttp.ClientSession() as session, session.get(f"{sim_url}/sim/ledger") as resp:
        resp.raise_for_status()
        ledger = (await resp.json())["payments"]
    conn = await asyncpg.connect(database_url)
    try:
        items = await conn.fetch(
            """SELECT i.id, i.status, i.request_reference_id, i.account, i.amount
               FROM payroll_items i JOIN payrolls p ON p.id = i.payroll_id WHERE p.status <> 'DRAFT'"""
        )
        payrolls = await conn.fetch(
            """SELECT status, count(*) AS n, coalesce(sum(total_amount), 0) AS total
               FROM payrolls WHERE status <> 'DRAFT' GROUP BY status"""
        )
    finally:
        await conn.close()

    r = Reconciliation(items=len(items))
    r.payrolls = {p["status"]: int(p["n"]) for p in payrolls}
    r.payrolls_total = sum((p["total"] for p in payrolls), Decimal(0))
    paid: dict[str, list[dict[str, Any]]] = {}
    for p in ledger:
        if p["paid"]:
            paid.setdefault(p["request_reference_id"], []).append(p)
            r.ledger_total += Decimal(p["amount"])
    r.paid_twice = [ref for ref, ps in paid.items() if len(ps) > 1]
    r.paid_once = sum(1 for ps in paid.values() if len(ps) == 1)

    states: Counter[str] = Counter()
    accounted: set[str] = set()
    for item in items:
        status, ref, item_id = item["status"], item["request_reference_id"], str(item["id"])
        states[status] += 1
        payments = paid.get(ref, []) if ref is not None else []
        if status not in FINAL:
            r.not_final.append(item_id)
            continue
        if status in ("FAILED", "CANCELLED"):
            if payments:
                r.failed_but_paid.append(item_id)
            continue
        if status == "PAID" and not payments:
            r.paid_not_paid.append(item_id)
        if payments:
            accounted.add(ref)
            r.items_total += item["amount"] * len(payments)
            if any(str(p["account"]) != item["account"] for p in payments):
                r.wrong_account.append(item_id)
            if any(Decimal(p["amount"]) != item["amount"] for p in payments):
                r.wrong_amount.append(item_id)
    r.states = dict(states)
    r.stray = [ref for ref in paid if ref not in accounted]
    return r
