"""Batches, the wallet and the ledger of what the simulator "paid".

Settlement is lazy: a batch completes ``processing_s`` after approval, and :meth:`SimState.settle_due` (called
at the start of every request) settles each due batch exactly once. Nothing can observe the state except
through a request, so this is indistinguishable from a background worker, needs no task to cancel, and
makes "each transaction is paid at most once" a property of one synchronous method. The one deliberate
exception is SIM_SECOND_APPROVE_PAYS: a second approve then runs the batch's payments again
(:meth:`SimState.approve_again`), for tests that must catch a client approving twice.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgspec

from simulator.config import SimConfig
from simulator.validation import InitiateRequest

EAT = timezone(timedelta(hours=3), "EAT")  # IntaSend stamps times in Nairobi time
UPPER_ALNUM = string.ascii_uppercase + string.digits

# Batch states (docs/intasend.md section 4).
PREVIEW = ("Preview and approve", "BP103")
CONFIRMING = ("Confirming balance", "BP104")
SENDING = ("Sending payment", "BP110")
COMPLETED = ("Completed", "BC100")
FAILED_PROCESSING = ("Failed Processing", "BF105")


CENT = Decimal("0.01")
# UUID's variant (RFC 4122) and version 4 bits, as uuid.UUID(int=..., version=4) sets them.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def money(value: Decimal) -> str:
    # A value with exactly two decimal places (every amount, once validated) is its own str: quantizing and
    # formatting it again would give the same text. A "." third from the end means just that, as
    # str(Decimal) writes no exponent then, and an exponent always ends the text ("1.5E+3", "1E-7").
    text = str(value)
    return text if text[-3:-2] == "." else f"{value.quantize(CENT):f}"


def stamp(moment: datetime) -> str:
    return moment.isoformat()


class ItemView(msgspec.Struct, gc=False):
    """One transaction as the batch object shows it: its fields, in this order, are the answer's keys.
    A Struct, not a dict: msgspec builds and writes it in about half the time (simulator/wire.py)."""

    transaction_id: str
    status: str
    status_code: str
    status_description: str | None
    failed_reason: str | None
    request_reference_id: str
    provider: str
    bank_code: str | None
    name: str | None
    account: str
    account_type: str | None
    account_reference: str | None
    provider_reference: str | None
    provider_account_name: str | None
    amount: str
    charge: str
    narrative: str | None
    file_id: str
    idempotency_key: str | None
    currency: str
    created_at: str
    updated_at: str


def item_views(items: list[Item]) -> list[ItemView]:
    """What :meth:`Item.view` shows of each item. A batch's items share their created_at and updated_at (one
    datetime object each) and their charge, so each is formatted once per run of equal objects, not once
    per item."""
    views = []
    created: datetime | None = None
    created_text = ""
    updated: datetime | None = None
    updated_text = ""
    charge: Decimal | None = None
    charge_text = ""
    for item in items:
        if item.created_at is not created:
            created, created_text = item.created_at, stamp(item.created_at)
        if item.updated_at is not updated:
            updated, updated_text = item.updated_at, stamp(item.updated_at)
        if item.charge is not charge:
            charge, charge_text = item.charge, money(item.charge)
        views.append(
            # By position, in ItemView's field order: five times faster than by keyword with 22 fields.
            ItemView(
                item.transaction_id,
                item.status,
                item.status_code,
                item.status_description,
                item.failed_reason,
                item.request_reference_id,
                item.provider,
                item.bank_code,
                item.name,
                item.account,
                item.account_type,
                item.account_reference,
                item.provider_reference,
                item.provider_account_name,
                money(item.amount),  # amount
                charge_text,  # charge
                item.narrative,
                item.file_id,
                item.idempotency_key,
                item.currency,
                created_text,  # created_at
                updated_text,  # updated_at
            )
        )
    return views


@dataclass
class Item:
    """One transaction of a batch, with the fields IntaSend's current batch object shows."""

    request_reference_id: str
    transaction_id: str
    provider: str
    currency: str
    file_id: str
    account: str
    amount: Decimal
    name: str | None
    narrative: str | None
    bank_code: str | None
    account_type: str | None
    account_reference: str | None
    idempotency_key: str | None
    charge: Decimal
    created_at: datetime
    updated_at: datetime
    status: str = "Pending"
    status_code: str = "TP101"
    status_description: str | None = None
    failed_reason: str | None = None
    provider_reference: str | None = None
    provider_account_name: str | None = None

    def view(self) -> dict[str, Any]:
        return msgspec.structs.asdict(item_views([self])[0])


@dataclass
class Batch:
    tracking_id: str
    file_id: str
    nonce: str
    batch_reference: str | None
    callback_url: str | None
    wallet_id: str  # the initiate's wallet_id, or the default wallet when it named none
    items: list[Item]
    created_at: datetime
    updated_at: datetime
    approved_at: float | None = None  # clock() at approval
    approved_wall: datetime | None = None
    funded: bool = False  # the balance covered the batch at approval
    settled: bool = False

    @property
    def total(self) -> Decimal:
        return sum((i.amount for i in self.items), Decimal(0))

    @property
    def charges(self) -> Decimal:
        return sum((i.charge for i in self.items), Decimal(0))

    @property
    def cost(self) -> Decimal:
        """What the batch takes from its wallet if every transaction is paid: amounts and charges."""
        return self.total + self.charges

    def state(self) -> tuple[str, str]:
        if self.approved_at is None:
            return PREVIEW
        if self.settled:
            return COMPLETED if self.funded else FAILED_PROCESSING
        return SENDING if self.funded else CONFIRMING


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    tracking_id: str
    wallet_id: str  # the wallet the batch named, whose balance paid it
    request_reference_id: str
    account: str
    amount: Decimal
    paid: bool
    determined: bool
    status_code: str
    provider_reference: str | None
    paid_at: datetime | None

    def view(self) -> dict[str, Any]:
        return {
            "tracking_id": self.tracking_id,
            "wallet_id": self.wallet_id,
            "request_reference_id": self.request_reference_id,
            "account": self.account,
            "amount": money(self.amount),
            "paid": self.paid,
            "determined": self.determined,
            "status_code": self.status_code,
            "provider_reference": self.provider_reference,
            "paid_at": stamp(self.paid_at) if self.paid_at else None,
        }


@dataclass(frozen=True, slots=True)
class Repeat:
    """A second run of an approved batch's payments (SIM_SECOND_APPROVE_PAYS), due ``processing_s`` after
    the approve that started it."""

    batch: Batch
    approved_at: float
    approved_wall: datetime
    funded: bool


@dataclass
class SimState:
    """All mutable simulator state; :meth:`reset` returns it to the configured start."""

    config: SimConfig
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(EAT))

    def __post_init__(self) -> None:
        self.wallet_id = "SIMWLT1"
        self.reset()

    def reset(self) -> None:
        seed = self.config.seed
        self.rng = random.Random(f"{seed}-state") if seed is not None else random.Random()
        self.batches: dict[str, Batch] = {}
        self.ledger: list[LedgerEntry] = []
        # Per wallet (the default and SIM_WALLETS ones), created with SIM_BALANCE when first used. `reserved`:
        # approved, not yet settled, counted against available_balance.
        self.balances: dict[str, Decimal] = {}
        self.reserved: dict[str, Decimal] = {}
        self.wallet_updated: dict[str, datetime] = {}
        self._in_flight: list[Batch] = []
        self._repeats: list[Repeat] = []
        self._undetermined: list[
            tuple[float, Item, LedgerEntry]
        ] = []  # (settles at, item, what really happened)

    # ids ---------------------------------------------------------------------------------------------
    def _uuid(self) -> str:
        """``str(uuid.UUID(int=self.rng.getrandbits(128), version=4))``, without building the UUID."""
        text = f"{(self.rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    def _code(self, length: int, alphabet: str = UPPER_ALNUM) -> str:
        """``"".join(self.rng.choice(alphabet) for _ in range(length))``: the same characters from the same
        draws (random.Random.choice's rejection sampling on getrandbits, inlined), so a seeded simulator
        hands out the ids it always did."""
        size = len(alphabet)
        bits = size.bit_length()
        getrandbits = self.rng.getrandbits
        chars = []
        for _ in range(length):
            r = getrandbits(bits)
            while r >= size:
                r = getrandbits(bits)
            chars.append(alphabet[r])
        return "".join(chars)

    # actions -----------------------------------------------------------------------------------------
    def create(self, request: InitiateRequest) -> Batch:
        now = self.wall()
        file_id = self._code(7)
        batch = Batch(
            tracking_id=self._uuid(),
            file_id=file_id,
            nonce=self._code(6, string.ascii_lowercase + string.digits),
            batch_reference=request.batch_reference,
            callback_url=request.callback_url,
            wallet_id=request.wallet_id or self.wallet_id,
            items=[
                Item(
                    request_reference_id=self._uuid(),
                    transaction_id=self._code(7),
                    provider=request.provider,
                    currency=request.currency,
                    file_id=file_id,
                    account=t.account,
                    amount=t.amount,
                    name=t.name,
                    narrative=t.narrative,
                    bank_code=t.bank_code,
                    account_type=t.account_type,
                    account_reference=t.account_reference,
                    idempotency_key=t.idempotency_key,
                    charge=self.config.charge,
                    created_at=now,
                    updated_at=now,
                )
                for t in request.transactions
            ],
            created_at=now,
            updated_at=now,
        )
        self.batches[batch.tracking_id] = batch
        if not request.requires_approval:
            self.approve(batch)
        return batch

    def approve(self, batch: Batch) -> bool:
        """Approve once. False, changing nothing, for a batch that was already approved."""
        if batch.approved_at is not None:
            return False
        batch.approved_at = self.clock()
        batch.approved_wall = batch.updated_at = self.wall()
        batch.funded = self._reserve(batch.wallet_id, batch.cost)
        self._in_flight.append(batch)
        return True

    def approve_again(self, batch: Batch) -> None:
        """Run an approved batch's payments once more, as a provider that honours every approve would. The
        batch's status shows only the first run; the ledger shows both."""
        assert batch.approved_at is not None
        self._repeats.append(
            Repeat(batch, self.clock(), self.wall(), self._reserve(batch.wallet_id, batch.cost))
        )

    def upgrade_restored(self) -> None:
        """A state saved by a simulator whose wallets all shared one `balance` (and one `reserved`): that
        balance becomes the default wallet's."""
        legacy: Any = self.__dict__.pop("balance", None)
        reserved: Any = self.reserved
        updated: Any = self.wallet_updated
        if isinstance(legacy, Decimal) or not isinstance(reserved, dict):
            self.balances = {self.wallet_id: legacy if isinstance(legacy, Decimal) else self.config.balance}
            self.reserved = {self.wallet_id: reserved if isinstance(reserved, Decimal) else Decimal(0)}
            self.wallet_updated = {self.wallet_id: updated if isinstance(updated, datetime) else self.wall()}

    def _open(self, wallet_id: str) -> None:
        if wallet_id not in self.balances:
            self.balances[wallet_id] = self.config.balance
            self.reserved[wallet_id] = Decimal(0)
            self.wallet_updated[wallet_id] = self.wall()

    def available(self, wallet_id: str) -> Decimal:
        self._open(wallet_id)
        return self.balances[wallet_id] - self.reserved[wallet_id]

    def fund(self, wallet_id: str, amount: Decimal) -> None:
        """Add funds to a wallet (POST /sim/wallets/{id}/fund): a top-up, as an employer's deposit would."""
        self._open(wallet_id)
        self.balances[wallet_id] += amount
        self.wallet_updated[wallet_id] = self.wall()

    def _reserve(self, wallet_id: str, cost: Decimal) -> bool:
        funded = self.available(wallet_id) >= cost
        if funded:
            self.reserved[wallet_id] += cost
        return funded

    def settle_due(self) -> None:
        """Settle every approved batch, then every repeat, whose processing time has passed, and every TF105
        transaction whose SIM_UNDETERMINED_SETTLE_S has."""
        if not self._in_flight and not self._repeats and not self._undetermined:
            return
        now = self.clock()
        due = [
            b
            for b in self._in_flight
            if b.approved_at is not None and now - b.approved_at >= self.config.processing_s
        ]
        for batch in due:
            self._in_flight.remove(batch)
            self._settle(batch)
        self._settle_late(now)
        repeats = [r for r in self._repeats if now - r.approved_at >= self.config.processing_s]
        for repeat in repeats:
            self._repeats.remove(repeat)
            self._settle_repeat(repeat)

    def _settle(self, batch: Batch) -> None:
        if batch.settled:  # defensive: _in_flight holds a batch once, but paying twice must be impossible
            return
        batch.settled = True
        assert batch.approved_wall is not None
        done = batch.approved_wall + timedelta(seconds=self.config.processing_s)
        batch.updated_at = done
        if not batch.funded:
            for item in batch.items:
                item.status, item.status_code = "Unsuccessful", "TF103"
                item.status_description = item.failed_reason = "Insufficient balance in wallet"
                item.updated_at = done
            return
        self.reserved[batch.wallet_id] -= batch.cost
        for item in batch.items:
            item.updated_at = done
            entry = self._pay(batch, item, done)
            if entry.status_code == "TF106":
                item.status, item.status_code = "Unsuccessful", "TF106"
                item.status_description = item.failed_reason = "The receiver account is invalid or inactive."
            elif entry.status_code == "TF105":
                item.status, item.status_code = "Unknown", "TF105"
                item.status_description = "Status cannot be determined. Contact support."
                if self.config.undetermined_settle_s is not None:
                    assert batch.approved_at is not None
                    settles_at = (
                        batch.approved_at + self.config.processing_s + self.config.undetermined_settle_s
                    )
                    self._undetermined.append((settles_at, item, entry))
            else:
                item.status, item.status_code = "Successful", "TS100"
                item.status_description = "The service request is processed successfully."
                item.provider_reference = entry.provider_reference
                item.provider_account_name = f" {item.name}" if item.name else None

    def _settle_late(self, now: float) -> None:
        """TF105 transactions whose late settlement is due show what the ledger says really happened."""
        due = [u for u in self._undetermined if now >= u[0]]
        for u in due:
            self._undetermined.remove(u)
            _, item, entry = u
            item.updated_at = self.wall()
            if entry.paid:
                item.status, item.status_code = "Successful", "TS100"
                item.status_description = "The service request is processed successfully."
                item.provider_reference = entry.provider_reference
            else:
                item.status, item.status_code = "Unsuccessful", "TF106"
                item.status_description = item.failed_reason = "The transaction was not completed."

    def _settle_repeat(self, repeat: Repeat) -> None:
        """Pay the batch's transactions again; an unfunded repeat pays nothing, like an unfunded batch."""
        if not repeat.funded:
            return
        self.reserved[repeat.batch.wallet_id] -= repeat.batch.cost
        done = repeat.approved_wall + timedelta(seconds=self.config.processing_s)
        for item in repeat.batch.items:
            self._pay(repeat.batch, item, done)

    def _pay(self, batch: Batch, item: Item, done: datetime) -> LedgerEntry:
        """Decide one transaction's fate, move the money and record it in the ledger."""
        reference = self._code(10)
        if item.account in self.config.fail_accounts:
            code, paid, determined = "TF106", False, True
        elif item.account in self.config.undetermined_accounts:
            code, paid, determined = "TF105", self.rng.random() < 0.5, False
        else:
            code, paid, determined = "TS100", True, True
        if paid:
            self._open(batch.wallet_id)
            self.balances[batch.wallet_id] -= item.amount + item.charge
            self.wallet_updated[batch.wallet_id] = done
        entry = LedgerEntry(
            tracking_id=batch.tracking_id,
            wallet_id=batch.wallet_id,
            request_reference_id=item.request_reference_id,
            account=item.account,
            amount=item.amount,
            paid=paid,
            determined=determined,
            status_code=code,
            provider_reference=reference if paid else None,
            paid_at=done if paid else None,
        )
        self.ledger.append(entry)
        return entry

    def _shown_state(self, batch: Batch) -> tuple[str, str]:
        """The batch's state as status shows it: SIM_STATUS_LAG_S after an approval, still waiting."""
        lagging = (
            batch.approved_at is not None and self.clock() - batch.approved_at < self.config.status_lag_s
        )
        return PREVIEW if lagging else batch.state()

    # views -------------------------------------------------------------------------------------------
    def wallet_view(self, wallet_id: str | None = None) -> dict[str, Any]:
        """The default SETTLEMENT wallet, or a WORKING wallet (SIM_WALLETS), each with its own balance."""
        default = wallet_id is None or wallet_id == self.wallet_id
        wid = self.wallet_id if wallet_id is None else wallet_id
        available = self.available(wid)
        return {
            "wallet_id": wid,
            "label": "default" if default else wid,
            "can_disburse": True,
            "currency": "KES",
            "wallet_type": "SETTLEMENT" if default else "WORKING",
            "current_balance": money(self.balances[wid]),
            "available_balance": money(available),
            "updated_at": stamp(self.wallet_updated[wid]),
        }

    def batch_view(self, batch: Batch, state: tuple[str, str] | None = None) -> dict[str, Any]:
        """The batch object IntaSend answers; its transactions are ItemView Structs (write it with
        simulator/wire.py, or see Item.view for one as a dict)."""
        status, code = state or self._shown_state(batch)
        # The batch's sums in one pass, each added up in item order as Batch.total and .charges do.
        total = charges = paid = failed = paid_charges = Decimal(0)
        for i in batch.items:
            total += i.amount
            charges += i.charge
            if i.status_code == "TS100":
                paid += i.amount
                paid_charges += i.charge
            elif i.status_code in ("TF103", "TF106"):
                failed += i.amount
        return {
            "file_id": batch.file_id,
            "tracking_id": batch.tracking_id,
            "batch_reference": batch.batch_reference,
            "status": status,
            "status_code": code,
            "nonce": batch.nonce,
            "wallet": self.wallet_view(batch.wallet_id),
            "transactions": item_views(batch.items),
            # Numbers, not strings, as in docs/intasend.md's examples (`"charge_estimate": 50.0`,
            # `"failed_amount": 0.0`): a client must take both forms, and store and echo floats.
            "charge_estimate": float(charges),
            "total_amount_estimate": money(total + charges),
            "total_amount": money(total),
            "actual_charges": money(paid_charges),
            "paid_amount": money(paid),
            "failed_amount": float(failed),
            "transactions_count": len(batch.items),
            "created_at": stamp(batch.created_at),
            "updated_at": stamp(batch.updated_at),
        }

    def ledger_view(self) -> dict[str, Any]:
        total = sum((e.amount for e in self.ledger if e.paid), Decimal(0))
        return {"payments": [e.view() for e in self.ledger], "total_paid": money(total)}
