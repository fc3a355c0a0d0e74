"""A scripted stand-in for IntaSend behind the PayoutProvider protocol, for dispatcher integration tests.

It keeps a ledger like the simulator does, and lets a test inject a fault at an exact step (before or after
the provider acted). End-to-end tests use the real `payrun sim` over HTTP instead.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from dispatcher_service.provider.intasend import decode_batch
from dispatcher_service.provider.protocol import (
    Batch,
    PayoutProvider,
    ProviderAmbiguous,
    ProviderRejected,
    ProviderUnavailable,
    Transaction,
)
from shared import jsonvalues

_refs = itertools.count(1)


@dataclass
class _FakeBatch:
    tracking_id: str
    nonce: str
    txns: list[dict[str, Any]]
    approvals: int = 0
    lag_left: int = 0
    code: str = "BP101"
    status: str = "Preview and approve"
    created_at: str = ""
    updated_at: str = ""


@dataclass
class FakeIntaSend:
    fail_accounts: set[str] = field(default_factory=set)
    undetermined_accounts: set[str] = field(default_factory=set)
    batch_failure: str | None = None  # e.g. "BF105"
    # A provider whose status lags: after an approve, status still shows "awaiting approval" this many times,
    # and a second approve of one batch is refused (400) as IntaSend would once the first went through.
    status_lag: int = 0
    # Accounts IntaSend refuses at initiate, naming each (400, `transactions.N.account`).
    refuse_accounts: set[str] = field(default_factory=set)
    # endpoint -> list of faults consumed one per call: "before" (503, nothing done), "after" (acted, then the
    # answer is lost), "reject" (400), "429"
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    batches: dict[str, _FakeBatch] = field(default_factory=dict)
    ledger: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    # The wallet W1: its available balance (down by what is paid, charges included) and a charge per item.
    balance: Decimal = Decimal("1000000000.00")
    charge: Decimal = Decimal("0.00")
    # Answers carry what IntaSend reports beside the amounts: each transaction's `charge` (`charge` once it
    # succeeded, else 0.00), `created_at` and `updated_at`; the batch's `actual_charges`, `created_at` and
    # `updated_at`; in Nairobi time, as IntaSend writes it.
    reports_charges: bool = False
    # Called at the start of every request with the endpoint's name: tests use it to act between two steps.
    on_call: Any = None
    # Each initiate answer's bytes as sent, by tracking id, and what each approve posted (bytes when the
    # dispatcher passed bytes through, else the dict it re-encoded).
    initiate_bodies: dict[str, bytes] = field(default_factory=dict)
    approve_payloads: list[bytes | dict[str, Any]] = field(default_factory=list)

    def _fault(self, endpoint: str) -> str | None:
        if self.on_call is not None:
            self.on_call(endpoint)
        queue = self.faults.get(endpoint)
        return queue.pop(0) if queue else None

    def _raise_before(self, fault: str | None) -> None:
        if fault == "before":
            raise ProviderUnavailable("503 Service Unavailable", status=503)
        if fault == "429":
            from dispatcher_service.provider.protocol import ProviderRateLimited

            raise ProviderRateLimited("429", status=429, retry_after=None)
        if fault == "reject":
            raise ProviderRejected("transactions.0.account: Invalid account", status=400)

    def _batch(self, b: _FakeBatch) -> Batch:
        txns = tuple(
            Transaction(
                request_reference_id=t["request_reference_id"],
                account=t["account"],
                amount=Decimal(str(t["amount"])),
                status_code=t["status_code"],
                status=t["status"],
                provider_reference=t.get("provider_reference"),
                failure_reason=t.get("failure_reason"),
            )
            for t in b.txns
        )
        raw = {
            "tracking_id": b.tracking_id,
            "nonce": b.nonce,
            "status": b.status,
            "status_code": b.code,
            "transactions": [dict(t) for t in b.txns],
            # As the client parses IntaSend's floats (docs/intasend.md: "charge_estimate": 50.0): Decimals, which
            # the dispatcher stores as jsonb and echoes on approve.
            "charge_estimate": Decimal("50.0"),
            "total_amount_estimate": str(self._estimate(b)),
            "wallet": {"wallet_id": "W1", "available_balance": str(self.balance)},
            "failed_amount": Decimal("0.0"),
        }
        if self.reports_charges:
            charged = sum(Decimal(str(t["charge"])) for t in b.txns)
            raw |= {
                "actual_charges": f"{charged:.2f}",
                "created_at": b.created_at,
                "updated_at": b.updated_at,
            }
        return Batch(b.tracking_id, b.code, b.status, b.nonce, txns, raw)

    async def initiate(
        self,
        *,
        provider: str,
        currency: str,
        transactions: list[dict[str, Any]],
        requires_approval: str = "YES",
        callback_url: str | None = None,
        wallet_id: str | None = None,
    ) -> Batch:
        self.calls.append("initiate")
        assert requires_approval == "YES"
        fault = self._fault("initiate")
        self._raise_before(fault)
        refused = [n for n, t in enumerate(transactions) if t["account"] in self.refuse_accounts]
        if refused:
            body = {
                "type": "validation_error",
                "errors": [
                    {
                        "code": "invalid",
                        "detail": "Enter a valid phone number.",
                        "attr": f"transactions.{n}.account",
                    }
                    for n in refused
                ],
            }
            raise ProviderRejected("transactions: Enter a valid phone number.", status=400, body=body)
        now = _intasend_time()
        b = _FakeBatch(
            str(uuid.uuid4()),
            uuid.uuid4().hex[:6],
            [
                {
                    "request_reference_id": str(uuid.uuid4()),
                    "account": t["account"],
                    "amount": t["amount"],
                    "status_code": "TP101",
                    "status": "Pending",
                }
                | ({"charge": "0.00", "created_at": now, "updated_at": now} if self.reports_charges else {})
                for t in transactions
            ],
            created_at=now,
            updated_at=now,
        )
        self.batches[b.tracking_id] = b
        if fault == "after":
            raise ProviderAmbiguous("timed out after 30 s")
        answer = self._batch(b)
        # As IntaSend writes it: floats with their ".0", its own spacing and key order, every transaction.
        body = json.dumps(answer.raw, default=float, separators=(", ", ": ")).encode()
        self.initiate_bodies[b.tracking_id] = body
        return dataclasses.replace(answer, body=body)

    async def approve(self, batch: Batch) -> Batch | None:
        self.calls.append("approve")
        self.approve_payloads.append(batch.body if batch.body is not None else dict(batch.raw))
        fault = self._fault("approve")
        self._raise_before(fault)
        b = self.batches[batch.tracking_id]
        assert batch.raw["nonce"] == b.nonce
        if self.status_lag and b.approvals:
            raise ProviderRejected("tracking_id: Batch is not awaiting approval.", status=400)
        b.approvals += 1
        if b.code in ("BP101", "BP103"):
            b.code, b.status = "BP110", "Sending payment"
            b.lag_left = self.status_lag
        if fault == "after":
            raise ProviderAmbiguous("connection reset after sending")
        return self._batch(b)

    async def status(self, tracking_id: str) -> Batch:
        self.calls.append("status")
        fault = self._fault("status")
        self._raise_before(fault)
        b = self.batches[tracking_id]
        if b.lag_left:
            b.lag_left -= 1
            lagging = self._batch(b)
            return Batch(
                b.tracking_id, "BP103", "Preview and approve", b.nonce, lagging.transactions, lagging.raw
            )
        if b.code == "BP110":
            self._settle(b)
        return self._batch(b)

    async def wallets(self) -> list[dict[str, Any]]:
        self.calls.append("wallets")
        self._raise_before(self._fault("wallets"))
        return [{"wallet_id": "W1", "wallet_type": "SETTLEMENT", "available_balance": str(self.balance)}]

    def _estimate(self, b: _FakeBatch) -> Decimal:
        return sum((Decimal(str(t["amount"])) + self.charge for t in b.txns), Decimal(0))

    def _settle(self, b: _FakeBatch) -> None:
        if self.batch_failure:
            b.code, b.status = self.batch_failure, "Failed Processing"
            return
        b.code, b.status = "BC100", "Completed"
        b.updated_at = now = _intasend_time()
        for t in b.txns:
            if self.reports_charges:
                t["updated_at"] = now
            if t["account"] in self.fail_accounts:
                t.update(status_code="TF106", status="Unsuccessful", failure_reason="Invalid M-Pesa account")
            elif t["account"] in self.undetermined_accounts:
                t.update(status_code="TF105", status="Unknown")
            else:
                t.update(status_code="TS100", status="Successful", provider_reference=f"REF{next(_refs):07d}")
                self.balance -= Decimal(str(t["amount"])) + self.charge
                if self.reports_charges:
                    t["charge"] = f"{self.charge:.2f}"
                self.ledger.append(
                    {"tracking_id": b.tracking_id, "account": t["account"], "amount": t["amount"]}
                )

    def paid_accounts(self) -> list[str]:
        return sorted(p["account"] for p in self.ledger)


def _intasend_time() -> str:
    return datetime.now(UTC).astimezone(timezone(timedelta(hours=3))).isoformat()


@dataclass
class LateIntaSend:
    """IntaSend as a re-check meets it, days later: `answers` holds each batch's status body (as IntaSend sends
    it, parsed by the real client's parser); a batch it does not hold is a 404 (IntaSend lost it). `gate`,
    when set, holds every status request until it opens (after the request left: the answer comes late)."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    gate: Any = None  # asyncio.Event | None

    def settle(self, stored: dict[str, Any], **codes: tuple[str, str | None]) -> None:
        """Serve `stored` (a batch's last status) with each listed request_reference_id's transaction now
        final: `codes[ref] = (status_code, provider_reference)`; the batch completed (BC100)."""
        body = {**stored, "status": "Completed", "status_code": "BC100"}
        body["transactions"] = [
            {**t, "status_code": codes[t["request_reference_id"]][0],
             "provider_reference": codes[t["request_reference_id"]][1]}
            if t.get("request_reference_id") in codes else dict(t)
            for t in stored.get("transactions", [])
        ]  # fmt: skip
        self.answers[body["tracking_id"]] = body

    async def initiate(
        self,
        *,
        provider: str,
        currency: str,
        transactions: list[dict[str, Any]],
        requires_approval: str = "YES",
        callback_url: str | None = None,
        wallet_id: str | None = None,
    ) -> Batch:
        raise AssertionError("a re-check never initiates")

    async def approve(self, batch: Batch) -> Batch | None:
        raise AssertionError("a re-check never approves")

    async def status(self, tracking_id: str) -> Batch:
        self.calls.append(tracking_id)
        if self.gate is not None:
            await self.gate.wait()
        body = self.answers.get(tracking_id)
        if body is None:
            raise ProviderRejected("404 Not Found: no batch with this tracking_id", status=404)
        return decode_batch(jsonvalues.dumps_bytes(body))  # as the client reads a status answer

    async def wallets(self) -> list[dict[str, Any]]:
        raise AssertionError("a re-check never reads wallets")


_: PayoutProvider = FakeIntaSend()
__: PayoutProvider = LateIntaSend()
