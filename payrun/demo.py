"""The demo employer of `payrun dev`: created once per database, its key kept in .data/demo.json.

Only a hash of an API key is stored in the database, so the key itself is kept in the file (mode 0600),
under the database it belongs to (its DSN without password): the same key after every restart, and the
payrolls made with it stay visible. A key the database no longer knows (the database was dropped) is
replaced by a new demo employer.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shared import db, employers

NAME = "Demo employer"


def database_key(dsn: str) -> str:
    """The DSN without its password: which database a kept key belongs to."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _read(path: Path) -> dict[str, Any]:
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}  # unreadable: a new demo employer is made and the file rewritten
    return kept if isinstance(kept, dict) else {}


def _write(path: Path, kept: dict[str, Any]) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp's file is 0600: the key is a secret, if a demo one
            json.dump(kept, out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


async def keep(conn: db.Connection, path: Path, dsn: str) -> tuple[employers.NewEmployer, bool]:
    """The demo employer of this database, and whether it was created just now."""
    kept = _read(path)
    where = database_key(dsn)
    known = kept.get(where)
    if isinstance(known, dict) and isinstance(known.get("api_key"), str):
        found = await employers.by_api_key(conn, known["api_key"])
        if found is not None and str(found.id) == known.get("id"):
            return {
                "id": str(found.id),
                "name": found.name,
                "api_key": known["api_key"],
                "wallet_id": None,
            }, False
    created = await employers.create(conn, NAME)
    kept[where] = {"id": created["id"], "name": created["name"], "api_key": created["api_key"]}
    _write(path, kept)
    return created, True
