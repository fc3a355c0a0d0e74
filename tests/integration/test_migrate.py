from __future__ import annotations

import asyncio

import asyncpg

from shared import db, migrate
from testkit import postgres as pg


async def test_two_concurrent_migrations_apply_each_file_once(pg_admin_dsn: str) -> None:
    name = f"payrun_m_{id(object()):x}"
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = pg.with_database(pg_admin_dsn, name)
    try:
        a, b = await db.connect(dsn), await db.connect(dsn)
        first, second = await asyncio.gather(migrate.apply(a), migrate.apply(b))
        assert len(first) + len(second) == len(migrate.available())
        assert await migrate.applied_version(a) == migrate.latest_version()
        assert await migrate.apply(a) == []
        await migrate.ensure_current(a)
        await a.close()
        await b.close()
    finally:
        await pg.drop(pg_admin_dsn, name)


async def test_a_service_refuses_an_unmigrated_database(pg_admin_dsn: str) -> None:
    name = f"payrun_e_{id(object()):x}"
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        empty = await db.connect(pg.with_database(pg_admin_dsn, name))
        try:
            await migrate.ensure_current(empty)
        except Exception as exc:
            assert "payrun migrate" in str(exc)
        else:
            raise AssertionError("an empty database was taken for current")
        finally:
            await empty.close()
    finally:
        await pg.drop(pg_admin_dsn, name)
