"""Rows for dispatcher tests, written straight into PostgreSQL the way the API writes them."""

from __future__ import annotations

import uuid
from decimal import Decimal

import asyncpg

from shared import employers, outbox


async def employer(pool: asyncpg.Pool, name: str = "Acme") -> uuid.UUID:
    async with pool.acquire() as conn:
        created = await employers.create(conn, name)
    return uuid.UUID(created["id"])


async def processing_payroll(
    pool: asyncpg.Pool,
    *,
    employer_id: uuid.UUID | None = None,
    accounts: list[str] | None = None,
    amount: Decimal = Decimal("100.00"),
    batch_size: int = 500,
    provider: str = "MPESA-B2C",
) -> uuid.UUID:
    """A payroll set to PROCESSING with its outbox rows, as POST .../process does."""
    employer_id = employer_id or await employer(pool)
    accounts = accounts or [f"2547{n:08d}" for n in range(10)]
    payroll_id = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO payrolls (id, employer_id, reference, currency, status, item_count, total_amount)
               VALUES ($1, $2, $3, 'KES', 'DRAFT', $4, $5)""",
            payroll_id,
            employer_id,
            f"REF-{payroll_id.hex[:8]}",
            len(accounts),
            amount * len(accounts),
        )
        await conn.executemany(
            """INSERT INTO payroll_items (payroll_id, position, name, account, amount, provider, bank_code)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [
                (
                    payroll_id,
                    n,
                    f"Worker {n}",
                    acct,
                    amount,
                    provider,
                    "2" if provider == "PESALINK" else None,
                )
                for n, acct in enumerate(accounts)
            ],
        )
    assert await outbox.start_payroll(pool, payroll_id, employer_id, batch_size)
    return payroll_id
