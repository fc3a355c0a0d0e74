"""SIM_STATE_FILE: a restarted simulator answers for the batches it knew and settles those it had in flight."""

from __future__ import annotations

import pickle
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from simulator import persistence
from simulator.app import SIM, make_app
from simulator.config import SimConfig
from simulator.ledger import SimState

AUTH = {"Authorization": "Bearer ISSecretKey_test_sim"}
INITIATE = "/api/v1/send-money/initiate/"
APPROVE = "/api/v1/send-money/approve/"
STATUS = "/api/v1/send-money/status/"

Start = Callable[..., Awaitable[TestClient]]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """start(clock) -> a simulator on tmp_path/state.pickle; close() it to stop it as SIGTERM would."""
    clients: list[TestClient] = []

    async def make(clock: Callable[[], float], **overrides: Any) -> TestClient:
        config = SimConfig(
            **{
                "max_rps": 0,
                "processing_s": 10.0,
                "seed": 7,
                "state_file": tmp_path / "state.pickle",
                **overrides,
            }
        )
        client = TestClient(TestServer(make_app(config, clock=clock, log=lambda record: None)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def post(client: TestClient, path: str, body: Any) -> tuple[int, Any]:
    resp = await client.post(path, json=body, headers=AUTH)
    return resp.status, await resp.json()


async def initiate_and_approve(client: TestClient, accounts: list[str]) -> dict[str, Any]:
    transactions = [{"name": f"W {a}", "account": a, "amount": 100} for a in accounts]
    body = {
        "provider": "MPESA-B2C",
        "currency": "KES",
        "requires_approval": "YES",
        "transactions": transactions,
    }
    code, batch = await post(client, INITIATE, body)
    assert code == 200, batch
    code, approved = await post(client, APPROVE, batch)
    assert code == 200, approved
    return dict(approved)


async def ledger(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/sim/ledger")
    return dict(await resp.json())


async def test_a_restarted_simulator_answers_status_as_before(start: Start) -> None:
    """A batch that completed before the restart has the same status answer after it, and the same ledger."""
    clock = FakeClock()
    first = await start(clock)
    batch = await initiate_and_approve(first, ["254712345678", "254712345679"])
    clock.now += 10
    _, before = await post(first, STATUS, {"tracking_id": batch["tracking_id"]})
    assert before["status_code"] == "BC100"
    paid_before = await ledger(first)
    await first.close()

    second = await start(FakeClock(5.0))  # a new process: its monotonic clock starts elsewhere
    code, after = await post(second, STATUS, {"tracking_id": batch["tracking_id"]})
    assert code == 200
    assert after == before
    assert await ledger(second) == paid_before


async def test_a_batch_in_flight_at_the_restart_settles_once_after_it(start: Start) -> None:
    """Approved, stopped before its processing time ended: after the restart it is still sending, then it
    completes and pays each transaction once."""
    clock = FakeClock()
    first = await start(clock)
    batch = await initiate_and_approve(first, ["254712345678", "254712345679", "254712345680"])
    clock.now += 4
    await first.close()

    later = FakeClock(50.0)
    second = await start(later)
    _, sending = await post(second, STATUS, {"tracking_id": batch["tracking_id"]})
    assert sending["status_code"] == "BP110"
    assert (await ledger(second))["payments"] == []
    later.now += 6.5
    _, done = await post(second, STATUS, {"tracking_id": batch["tracking_id"]})
    assert done["status_code"] == "BC100"
    payments = (await ledger(second))["payments"]
    assert sorted(p["account"] for p in payments) == ["254712345678", "254712345679", "254712345680"]
    assert all(p["paid"] for p in payments)


async def test_what_a_request_did_is_on_disk_before_its_answer(start: Start, tmp_path: Path) -> None:
    """A simulator killed right after answering an approve (no shutdown) has the approval in its file."""
    client = await start(FakeClock())
    batch = await initiate_and_approve(client, ["254712345678"])
    snapshot = persistence.StateFile(tmp_path / "state.pickle").load()
    assert snapshot is not None
    stored = snapshot.attributes["batches"][batch["tracking_id"]]
    assert stored.approved_at is not None
    assert stored.nonce == batch["nonce"]


async def test_time_while_stopped_counts(start: Start, tmp_path: Path) -> None:
    """A batch due while the simulator was down completes at the first request after the restart."""
    first = await start(FakeClock())
    batch = await initiate_and_approve(first, ["254712345678"])
    await first.close()
    path = tmp_path / "state.pickle"
    stored = pickle.loads(path.read_bytes())
    snapshot = stored["snapshot"]
    stored["snapshot"] = persistence.Snapshot(snapshot.attributes, snapshot.clock, snapshot.wall - 11)
    path.write_bytes(pickle.dumps(stored))  # as if written 11 s ago

    second = await start(FakeClock(3.0))
    _, done = await post(second, STATUS, {"tracking_id": batch["tracking_id"]})
    assert done["status_code"] == "BC100"


def test_every_attribute_of_the_state_is_kept_and_new_ones_keep_their_fresh_value() -> None:
    """Attributes added to SimState later persist without a change to persistence.py; an attribute the file
    lacks (written by an older simulator) keeps the value reset() gives it."""
    state = SimState(SimConfig(seed=1))
    state.wallet_balances = {"W1": 5}  # type: ignore[attr-defined]  # as a later SimState might
    snapshot = persistence.capture(state)
    assert "wallet_balances" in snapshot.attributes
    assert not persistence.NOT_STATE & snapshot.attributes.keys()

    restored = SimState(SimConfig(seed=1))
    persistence.restore(restored, snapshot)
    assert restored.wallet_balances == {"W1": 5}  # type: ignore[attr-defined]

    older = persistence.Snapshot({k: v for k, v in snapshot.attributes.items() if k != "reserved"}, 0.0, 0.0)
    fresh = SimState(SimConfig(seed=1))
    persistence.restore(fresh, older)
    assert fresh.reserved == {}


def test_a_state_saved_when_every_wallet_shared_one_balance_gives_it_to_the_default_wallet() -> None:
    state = SimState(SimConfig(seed=1))
    snapshot = persistence.capture(state)
    legacy = {
        k: v for k, v in snapshot.attributes.items() if k not in ("balances", "reserved", "wallet_updated")
    }
    legacy.update(balance=Decimal("1234.50"), reserved=Decimal("100.00"), wallet_updated=state.wall())
    restored = SimState(SimConfig(seed=1))
    persistence.restore(restored, persistence.Snapshot(legacy, 0.0, 0.0))
    wallet = restored.wallet_view()
    assert (wallet["current_balance"], wallet["available_balance"]) == ("1234.50", "1134.50")
    assert "balance" not in vars(restored)


def test_resumed_clock_goes_on_from_the_snapshot() -> None:
    base = FakeClock(2.0)
    clock = persistence.resumed_clock(persistence.Snapshot({}, 500.0, time.time() - 30), base)
    assert 529.5 < clock() < 531
    base.now += 1
    assert 530.5 < clock() < 532


async def test_an_unreadable_file_stops_the_start_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "state.pickle"
    path.write_bytes(b"not a pickle")
    with pytest.raises(persistence.StateFileError, match="Delete the file"):
        make_app(SimConfig(state_file=path))


async def test_without_a_state_file_nothing_is_kept() -> None:
    client = TestClient(TestServer(make_app(SimConfig(max_rps=0), log=lambda record: None)))
    await client.start_server()
    try:
        assert client.server.app[SIM].store is None
        await initiate_and_approve(client, ["254712345678"])
    finally:
        await client.close()


async def test_status_writes_only_when_it_settled_something(start: Start, tmp_path: Path) -> None:
    """Polling a batch still in flight rewrites nothing; the poll that settles it is written before its
    answer (each write replaces the file, so its inode tells)."""
    clock = FakeClock()
    client = await start(clock)
    batch = await initiate_and_approve(client, ["254712345678"])
    path = tmp_path / "state.pickle"
    written = path.stat().st_ino
    for _ in range(3):
        _, sending = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
        assert sending["status_code"] == "BP110"
    assert path.stat().st_ino == written
    clock.now += 10
    _, done = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert done["status_code"] == "BC100"
    assert path.stat().st_ino != written
    snapshot = persistence.StateFile(path).load()
    assert snapshot is not None
    assert snapshot.attributes["batches"][batch["tracking_id"]].settled


async def test_a_transaction_showing_its_outcome_late_is_written_and_kept(
    start: Start, tmp_path: Path
) -> None:
    """A TF105 transaction that shows its outcome later (SIM_UNDETERMINED_SETTLE_S) changes no batch count:
    the status that shows it is written all the same, and a restarted simulator shows it too."""
    clock = FakeClock()
    client = await start(clock, undetermined_accounts=frozenset({"254712345678"}), undetermined_settle_s=5.0)
    batch = await initiate_and_approve(client, ["254712345678"])
    clock.now += 10
    _, unknown = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert unknown["transactions"][0]["status_code"] == "TF105"
    path = tmp_path / "state.pickle"
    written = path.stat().st_ino
    clock.now += 5
    _, late = await post(client, STATUS, {"tracking_id": batch["tracking_id"]})
    assert late["transactions"][0]["status_code"] in ("TS100", "TF106")
    assert path.stat().st_ino != written
    await client.close()

    again = await start(FakeClock(1.0), undetermined_accounts=frozenset({"254712345678"}))
    _, after = await post(again, STATUS, {"tracking_id": batch["tracking_id"]})
    assert after == late
