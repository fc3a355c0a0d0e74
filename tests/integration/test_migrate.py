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


def test_a_migration_whose_comments_were_reworded_is_still_the_one_a_database_applied() -> None:
    [first] = [m for m in migrate.available() if m.version == 1]
    assert first.applied_as(first.checksum)
    assert first.applied_as("7f65fef71a229ad7aace402e3dc6a3e14644c451ae654142b3b1fb58a908e1a9")
    assert not first.applied_as("0" * 64)
    assert "CONTRACT" not in first.sql


async def test_a_service_refuses_a_database_missing_a_migration_below_its_highest(pg_admin_dsn: str) -> None:
    """A migration numbered below applied ones (it landed later, from another branch) is not forgotten."""
    name = f"payrun_g_{id(object()):x}"
    conn = await asyncpg.connect(pg_admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        a = await db.connect(pg.with_database(pg_admin_dsn, name))
        try:
            await migrate.apply(a)
            middle = migrate.available()[len(migrate.available()) // 2].version
            await a.execute("DELETE FROM schema_migrations WHERE version = $1", middle)
            assert await migrate.applied_version(a) == migrate.latest_version()
            assert await migrate.missing_versions(a) == [middle]
            try:
                await migrate.ensure_current(a)
            except migrate.SchemaNotCurrent as exc:
                assert f"{middle:04d}" in str(exc) and "payrun migrate" in str(exc)
            else:
                raise AssertionError("a database missing a migration was taken as current")
        finally:
            await a.close()
    finally:
        await pg.drop(pg_admin_dsn, name)
