"""Plain numbered .sql migrations, applied in order under an advisory lock and recorded in a table.

Two `payrun migrate` runs at once are safe: the second waits on the lock, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from shared import db
from shared.errors import PayrunError, SchemaNotCurrent
from shared.logging import get_logger

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "sql" / "migrations"
_LOCK_ID = 0x7061_7972_756E  # "payrun"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

log = get_logger(__name__)


# Migrations whose comments were reworded after they shipped, their statements unchanged: the checksums of
# the earlier texts, which databases that applied them have recorded.
EARLIER_WORDINGS: dict[int, frozenset[str]] = {
    # 0001 named a document outside the repository; it names docs/audit.md now.
    1: frozenset({"7f65fef71a229ad7aace402e3dc6a3e14644c451ae654142b3b1fb58a908e1a9"}),
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def applied_as(self, recorded_checksum: str) -> bool:
        """Is a database that recorded this checksum for this version running this migration?"""
        return recorded_checksum == self.checksum or recorded_checksum in EARLIER_WORDINGS.get(
            self.version, frozenset()
        )


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise PayrunError(f"migration file name {path.name!r} is not NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise PayrunError("two migration files share a version number")
    return found


def latest_version() -> int:
    return max((m.version for m in available()), default=0)


async def applied_version(conn: db.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def apply(conn: db.Connection) -> list[Migration]:
    """Apply every pending migration; return the ones this call applied."""
    done: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        recorded = {r["version"]: r["checksum"] for r in rows}
        for migration in available():
            if migration.version in recorded:
                if not migration.applied_as(recorded[migration.version]):
                    log.warning(
                        "migration_changed_after_apply", version=migration.version, name=migration.name
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration_applied", version=migration.version, name=migration.name)
            done.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return done


async def missing_versions(conn: db.Connection) -> list[int]:
    """The migrations of this code the database has not applied, a gap below its highest included."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    recorded = (
        {int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return sorted(m.version for m in available() if m.version not in recorded)


async def ensure_current(conn: db.Connection) -> None:
    """Refuse to serve on a database whose schema is behind this code: every migration must be applied,
    not only the highest (one numbered below an applied one can land later, e.g. from a merged branch)."""
    missing = await missing_versions(conn)
    if missing:
        have = await applied_version(conn)
        raise SchemaNotCurrent(
            f"the database schema is at version {have} but lacks migration(s) "
            f"{', '.join(f'{v:04d}' for v in missing)} that this code needs: run `payrun migrate`"
        )
