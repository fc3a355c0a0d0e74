"""Named SQL blocks loaded from sql/queries/*.sql: a `-- name --` line, a comment saying why, the statement.

A module names its file once, `Q = sqlfiles.queries("outbox")`, and uses `Q.claim_batch` (or `Q["claim_batch"]`);
the file is read on first use.
"""

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


class Queries:
    """The named statements of one sql/queries/<file>.sql, by attribute or by item; read on first use."""

    __slots__ = ("_file",)

    def __init__(self, file: str) -> None:
        self._file = file

    def __getitem__(self, query: str) -> str:
        return load(self._file)[query]

    def __getattr__(self, query: str) -> str:
        try:
            return load(self._file)[query]
        except KeyError:
            raise AttributeError(f"sql/queries/{self._file}.sql has no query {query!r}") from None


def queries(file: str) -> Queries:
    return Queries(file)
