"""Per-employer IntaSend wallets: `payrun employer create --wallet-id`, `payrun employer set-wallet`, the
employers.wallet_id column (migration 0009) and the wallet_id that start_payroll writes into every payload."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared import employers
from tests import factories

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def payrun(database_url: str, *args: str) -> Ran:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTASEND_", "DATABASE_URL"))}
    env["DATABASE_URL"] = database_url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "payrun",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def refused(ran: Ran, message: str) -> None:
    """Exit 2, one line on stderr naming the problem, nothing on stdout, no traceback."""
    assert ran.code == 2, ran
    assert ran.stdout == ""
    assert "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert message in ran.stderr, ran.stderr


async def wallet_of(pool: asyncpg.Pool, employer_id: str) -> str | None:
    value: str | None = await pool.fetchval(
        "SELECT wallet_id FROM employers WHERE id = $1", uuid.UUID(employer_id)
    )
    return value


# CLI ----------------------------------------------------------------------------------------------------------
async def test_create_with_and_without_a_wallet(database_url: str, pool: asyncpg.Pool) -> None:
    own = await payrun(
        database_url, "employer", "create", "--name", "Own Wallet Ltd", "--wallet-id", " WLTA1 "
    )
    assert own.code == 0, own
    created = own.json()
    assert set(created) == {"id", "name", "api_key", "wallet_id"}
    assert created["name"] == "Own Wallet Ltd" and created["wallet_id"] == "WLTA1"
    assert await wallet_of(pool, created["id"]) == "WLTA1"

    default = await payrun(database_url, "employer", "create", "--name", "Default Ltd")
    assert default.code == 0, default
    assert default.json()["wallet_id"] is None
    assert await wallet_of(pool, default.json()["id"]) is None


async def test_set_wallet_then_clear(database_url: str, pool: asyncpg.Pool) -> None:
    created = (await payrun(database_url, "employer", "create", "--name", "Acme")).json()
    eid = created["id"]

    first = await payrun(database_url, "employer", "set-wallet", "--employer", eid, "--wallet-id", "WLTB2")
    assert first.code == 0, first
    assert first.json() == {"id": eid, "name": "Acme", "wallet_id": "WLTB2", "previous_wallet_id": None}
    assert await wallet_of(pool, eid) == "WLTB2"

    second = await payrun(database_url, "employer", "set-wallet", "--employer", eid, "--wallet-id", "WLTC3")
    assert second.json() == {"id": eid, "name": "Acme", "wallet_id": "WLTC3", "previous_wallet_id": "WLTB2"}

    cleared = await payrun(database_url, "employer", "set-wallet", "--employer", eid, "--clear")
    assert cleared.code == 0, cleared
    assert cleared.json() == {"id": eid, "name": "Acme", "wallet_id": None, "previous_wallet_id": "WLTC3"}
    assert await wallet_of(pool, eid) is None


async def test_set_wallet_of_an_unknown_employer_is_a_one_line_error(database_url: str) -> None:
    missing = str(uuid.uuid4())
    ran = await payrun(database_url, "employer", "set-wallet", "--employer", missing, "--wallet-id", "W1")
    refused(ran, f"payrun employer set-wallet: no employer has the id {missing}")
    ran = await payrun(database_url, "employer", "set-wallet", "--employer", "acme", "--clear")
    refused(ran, "--employer 'acme' is not an employer id")


@pytest.mark.parametrize(
    ("wallet_id", "message"),
    [
        ("   ", "must not be empty"),
        ("W" * 65, "at most 64 characters"),
        ("MY WALLET", "must not contain whitespace"),
    ],
)
async def test_bad_wallet_ids_are_refused_and_nothing_is_written(
    database_url: str, pool: asyncpg.Pool, wallet_id: str, message: str
) -> None:
    refused(
        await payrun(database_url, "employer", "create", "--name", "X", "--wallet-id", wallet_id), message
    )
    assert await pool.fetchval("SELECT count(*) FROM employers") == 0
    eid = str(await factories.employer(pool))
    ran = await payrun(database_url, "employer", "set-wallet", "--employer", eid, "--wallet-id", wallet_id)
    refused(ran, message)
    assert await wallet_of(pool, eid) is None


async def test_set_wallet_needs_exactly_one_of_wallet_id_and_clear(
    database_url: str, pool: asyncpg.Pool
) -> None:
    eid = str(await factories.employer(pool))
    both = await payrun(
        database_url, "employer", "set-wallet", "--employer", eid, "--wallet-id", "W", "--clear"
    )
    neither = await payrun(database_url, "employer", "set-wallet", "--employer", eid)
    for ran in (both, neither):
        assert ran.code == 2 and ran.stdout == "" and "Traceback" not in ran.stderr
    assert await wallet_of(pool, eid) is None


# The column ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", " W", "W\tX", "W" * 65])
async def test_the_column_refuses_what_is_not_a_wallet_id(pool: asyncpg.Pool, bad: str) -> None:
    eid = await factories.employer(pool)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE employers SET wallet_id = $2 WHERE id = $1", eid, bad)
    await pool.execute("UPDATE employers SET wallet_id = $2 WHERE id = $1", eid, "W" * 64)


# The payload --------------------------------------------------------------------------------------------------
async def test_outbox_payloads_carry_the_employers_wallet_or_null(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        own = uuid.UUID((await employers.create(conn, "Own Wallet Ltd", "WLTA1"))["id"])
        default = uuid.UUID((await employers.create(conn, "Default Ltd"))["id"])
    accounts = [f"2547{n:08d}" for n in range(7)]
    own_payroll = await factories.processing_payroll(pool, employer_id=own, accounts=accounts, batch_size=3)
    default_payroll = await factories.processing_payroll(
        pool, employer_id=default, accounts=accounts, batch_size=3
    )

    async def payloads(payroll_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await pool.fetch("SELECT payload FROM outbox WHERE payroll_id = $1 ORDER BY id", payroll_id)
        return [r["payload"] for r in rows]

    own_rows, default_rows = await payloads(own_payroll), await payloads(default_payroll)
    assert len(own_rows) == len(default_rows) == 3
    assert [p["wallet_id"] for p in own_rows] == ["WLTA1"] * 3
    # Present and JSON null: the dispatcher pays these from INTASEND_WALLET_ID.
    assert all("wallet_id" in p and p["wallet_id"] is None for p in default_rows)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE payroll_id = $1 AND jsonb_typeof(payload -> 'wallet_id') = 'null'",
            default_payroll,
        )
        == 3
    )

    # A payroll already started keeps the wallet it started with; the next one takes the new wallet.
    async with pool.acquire() as conn:
        await employers.set_wallet(conn, own, "WLTB2")
    assert [p["wallet_id"] for p in await payloads(own_payroll)] == ["WLTA1"] * 3
    later = await factories.processing_payroll(pool, employer_id=own, accounts=accounts, batch_size=3)
    assert [p["wallet_id"] for p in await payloads(later)] == ["WLTB2"] * 3
