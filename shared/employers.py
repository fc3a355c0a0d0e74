"""Employers and their API keys. A key is shown once; only its SHA-256 is stored, and looked up by it."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from shared import db, sqlfiles

KEY_PREFIX = "pr_live_"
Q = sqlfiles.queries("employers")


@dataclass(frozen=True, slots=True)
class Employer:
    id: uuid.UUID
    name: str


def hash_key(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create(conn: db.Connection, name: str) -> dict[str, str]:
    employer_id, api_key = uuid.uuid4(), new_api_key()
    await conn.execute(Q.insert_employer, employer_id, name, hash_key(api_key))
    return {"id": str(employer_id), "name": name, "api_key": api_key}


async def by_api_key(conn: db.Executor, api_key: str) -> Employer | None:
    row = await conn.fetchrow(Q.employer_by_key_hash, hash_key(api_key))
    return Employer(row["id"], row["name"]) if row else None
