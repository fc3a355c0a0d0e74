"""Bulk fixtures in SQL: employers and DRAFT payrolls made set-based, with a different amount and account per
worker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from decimal import Decimal

import asyncpg

from shared import employers


def amount_of(k: int) -> Decimal:
    """A different amount per worker (100 to 10,072 KES, whole shillings as MPESA-B2C requires), so the ledger
    check can catch a swapped one."""
    return Decimal(100 + k % 9973)


def account_of(k: int) -> str:
    return f"2547{k % 100_000_000:08d}"


AMOUNT_SQL = "(100 + (k % 9973))::numeric(14, 2)"
ACCOUNT_SQL = "'2547' || lpad((k % 100000000)::text, 8, '0')"


async def create_employers(
    conn: asyncpg.Connection, n: int, prefix: str = "Bench"
) -> list[tuple[uuid.UUID, str]]:
    """n employers in one COPY; returns (id, api_key) pairs."""
    made = [(uuid.uuid4(), employers.new_api_key()) for _ in range(n)]
    await conn.copy_records_to_table(
        "employers",
        records=[
            (eid, f"{prefix} employer {i}", employers.hash_key(key)) for i, (eid, key) in enumerate(made)
        ],
        columns=["id", "name", "api_key_hash"],
    )
    return made


async def create_payrolls_sql(
    conn: asyncpg.Connection,
    owners: Sequence[uuid.UUID],
    workers: int,
    *,
    first_worker: int = 0,
    tag: str = "S",
) -> list[uuid.UUID]:
    """DRAFT payrolls (one per entry of `owners`, an employer id) of `workers` items each, set-based: what
    POST /payrolls would store, without its validation cost. Worker k (numbered across all payrolls from
    `first_worker`) gets account_of(k) and amount_of(k)."""
    ids = [uuid.uuid4() for _ in owners]
    refs = [f"{tag}-{uuid.uuid4().hex[:12]}" for _ in owners]
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO payrolls (id, employer_id, reference, currency, item_count, total_amount)
               SELECT id, emp, ref, 'KES', $4, 1 FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS t(id, emp, ref)""",
            ids,
            list(owners),
            refs,
            workers,
        )
        await conn.execute(
            f"""INSERT INTO payroll_items (payroll_id, position, name, account, amount, provider)
                SELECT p.id, g, 'Worker ' || k, {ACCOUNT_SQL}, {AMOUNT_SQL}, 'MPESA-B2C'
                FROM unnest($1::uuid[]) WITH ORDINALITY AS p(id, n)
                CROSS JOIN generate_series(0, $2 - 1) AS g
                CROSS JOIN LATERAL (SELECT $3::bigint + (p.n - 1) * $2 + g AS k) kk""",
            ids,
            workers,
            first_worker,
        )
        await conn.execute(
            """UPDATE payrolls p SET total_amount = s.total
               FROM (SELECT payroll_id, sum(amount) AS total FROM payroll_items
                     WHERE payroll_id = ANY($1::uuid[]) GROUP BY payroll_id) s
               WHERE p.id = s.payroll_id""",
            ids,
        )
    return ids
