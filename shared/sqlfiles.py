"""Named SQL blocks loaded from sql/queries/*.sql: a `-- name --` line, a comment saying why, the statement."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

QUERIES_DIR = Path(__file__).resolve().parent.parent / "sql" / "queries"
_HEADER = re.compile(r"^-- ([a-z_]+) --\s*$", re.MULTILINE)


@cache
def load(name: str) -> dict[str, str]:
    """Parse sql/queries/<name>.sql into {query_name: statement}."""
    text = (QUERIES_DIR / f"{name}.sql").read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for query_name, body in zip(parts[1::2], parts[2::2], strict=True):
        if query_name in queries:
            raise ValueError(f"{name}.sql defines {query_name!r} twice")
        queries[query_name] = body.strip().rstrip(";")
    return queries
