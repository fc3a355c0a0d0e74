"""Employers and their API keys. A key is shown once; only its SHA-256 is stored, and looked up by it.

An employer may have its own IntaSend wallet (`wallet_id`, migration 0009); NULL means the INTASEND_WALLET_ID
default. `outbox.start_payroll` copies it into each outbox row's payload.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypedDict

import asyncpg

from shared import db, sqlfiles
from shared.errors import PayrunError

KEY_PREFIX = "pr_live_"
WALLET_ID_MAX_LENGTH = 64  # employers_wallet_id_check in migration 0009
Q = sqlfiles.queries("employers")


@dataclass(frozen=True, slots=True)
class Employer:
    id: uuid.UUID
    name: str


def hash_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class NewEmployer(TypedDict):
    id: str
    name: str
    api_key: str  # shown this once
    wallet_id: str | None


class EmployerWallet(TypedDict):
    id: str
    name: str
    wallet_id: str | None
    previous_wallet_id: str | None


class UnknownEmployer(PayrunError):
    """No employer has this id."""


class InvalidWalletId(PayrunError):
    """Not a wallet id payrun can store."""


def check_wallet_id(wallet_id: str) -> str:
    """A wallet id as employers.wallet_id takes it: 1 to 64 characters, no whitespace (surrounding blanks
    are dropped)."""
    wallet_id = wallet_id.strip()
    if not wallet_id:
        raise InvalidWalletId("the wallet id must not be empty")
    if len(wallet_id) > WALLET_ID_MAX_LENGTH:
        raise InvalidWalletId(f"the wallet id must be at most {WALLET_ID_MAX_LENGTH} characters")
    if any(c.isspace() for c in wallet_id):
        raise InvalidWalletId(f"the wallet id {wallet_id!r} must not contain whitespace")
    return wallet_id


@asynccontextmanager
async def _wallet_checked() -> AsyncIterator[None]:
    """The database's CHECK is the last word (its idea of whitespace may differ from Python's)."""
    try:
        yield
    except asyncpg.CheckViolationError as exc:
        if exc.constraint_name != "employers_wallet_id_check":
            raise
        raise InvalidWalletId(f"the database refuses this wallet id: {exc}") from None


async def create(conn: db.Connection, name: str, wallet_id: str | None = None) -> NewEmployer:
    """A new employer, paid from `wallet_id` (None: the INTASEND_WALLET_ID default)."""
    employer_id, api_key = uuid.uuid4(), new_api_key()
    if wallet_id is not None:
        wallet_id = check_wallet_id(wallet_id)
    async with _wallet_checked(), conn.transaction():
        await conn.execute(Q.insert_employer, employer_id, name, hash_key(api_key))
        if wallet_id is not None:
            await conn.execute(Q.set_employer_wallet, employer_id, wallet_id)
    return {"id": str(employer_id), "name": name, "api_key": api_key, "wallet_id": wallet_id}


async def set_wallet(conn: db.Executor, employer_id: uuid.UUID, wallet_id: str | None) -> EmployerWallet:
    """Pay the employer's payrolls started from now on from `wallet_id` (None: back to the default).
    Raises :class:`UnknownEmployer`. Returns the employer with its new and previous wallet_id."""
    if wallet_id is not None:
        wallet_id = check_wallet_id(wallet_id)
    async with _wallet_checked():
        row = await conn.fetchrow(Q.set_employer_wallet, employer_id, wallet_id)
    if row is None:
        raise UnknownEmployer(f"no employer has the id {employer_id}")
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "wallet_id": row["wallet_id"],
        "previous_wallet_id": row["previous_wallet_id"],
    }


async def by_api_key(conn: db.Executor, api_key: str) -> Employer | None:
    row = await conn.fetchrow(Q.employer_by_key_hash, hash_key(api_key))
    return Employer(row["id"], row["name"]) if row else None
