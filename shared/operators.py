"""Operators and their keys: the people who settle NEEDS_REVIEW items (POST /ops/items/resolve).

An operator key is shown once; only its SHA-256 is stored, in `operators` (migration 0013), never in
`employers`: an employer's key is not an operator's, nor the other way round. The prefix (`pr_op_`, employers'
`pr_live_`) only tells people which is which; the tables are what keep them apart.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import TypedDict

from shared import db, sqlfiles
from shared.employers import hash_key
from shared.errors import PayrunError

KEY_PREFIX = "pr_op_"
NAME_MAX_LENGTH = 200  # operators_name_check in migration 0013
Q = sqlfiles.queries("operators")


@dataclass(frozen=True, slots=True)
class Operator:
    id: uuid.UUID
    name: str


class NewOperator(TypedDict):
    id: str
    name: str
    api_key: str  # shown this once


class InvalidOperatorName(PayrunError):
    """An operator's name is 1 to 200 characters."""


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise InvalidOperatorName(f"the operator's name must be 1 to {NAME_MAX_LENGTH} characters")
    return name


async def create(conn: db.Executor, name: str) -> NewOperator:
    operator_id, api_key, name = uuid.uuid4(), new_api_key(), check_name(name)
    await conn.execute(Q.insert_operator, operator_id, name, hash_key(api_key))
    return {"id": str(operator_id), "name": name, "api_key": api_key}


async def by_api_key(conn: db.Executor, api_key: str) -> Operator | None:
    row = await conn.fetchrow(Q.operator_by_key_hash, hash_key(api_key))
    return Operator(row["id"], row["name"]) if row else None
