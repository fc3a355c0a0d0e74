"""The demo employer of `payrun dev`: created once per database, the same key after every restart."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from payrun import demo
from shared import db, employers


async def test_the_demo_key_is_kept_and_a_key_the_database_does_not_know_is_replaced(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "demo.json"
    conn = await db.connect(database_url)
    try:
        first, created = await demo.keep(conn, path, database_url)
        assert created
        again, created_again = await demo.keep(conn, path, database_url)
        assert not created_again
        assert again["api_key"] == first["api_key"] and again["id"] == first["id"]
        found = await employers.by_api_key(conn, first["api_key"])
        assert found is not None and str(found.id) == first["id"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        kept = json.loads(path.read_text())
        (entry,) = kept.values()
        entry["api_key"] = employers.new_api_key()  # as if the database had been dropped and made again
        path.write_text(json.dumps(kept))
        replaced, created_now = await demo.keep(conn, path, database_url)
        assert (
            created_now
            and replaced["api_key"]
            == json.loads(path.read_text())[demo.database_key(database_url)]["api_key"]
        )
    finally:
        await conn.close()
