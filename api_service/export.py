"""The CSV export of a payroll's items (`GET /payrolls/{id}/items.csv`), for accountants' spreadsheets.

RFC 4180 text written by the csv module (quoting, embedded quotes and line breaks are its business), UTF-8,
CRLF line ends. Streamed page by page: a page of items is read, written out and dropped before the next is
read, so a 10,000-item payroll is never held whole, let alone twice.

Spreadsheets run a cell that starts with `=`, `+`, `-` or `@` as a formula (and some strip a leading tab or
carriage return first): "CSV injection". Every text cell that starts with one of those characters gets a
leading apostrophe (`'`), which spreadsheets show as text; the rest of the cell is unchanged. A program
reading the file sees the apostrophe: a name sent as `=SUM(A1)` reads `'=SUM(A1)`.
"""

from __future__ import annotations

import csv
import io
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from api_service import render
from shared import payrolls

MEDIA_TYPE = "text/csv; charset=utf-8"
COLUMNS = (
    "position",
    "name",
    "account",
    "amount",
    "provider",
    "state",
    "provider_reference",
    "failure_reason",
    "paid_at",
    "tracking_id",
)
# How many items one query reads while the export streams.
PAGE_SIZE = 1_000

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NOT_FILENAME_SAFE = re.compile(r"[^A-Za-z0-9._-]", re.ASCII)


def neutralise(cell: str) -> str:
    """A text cell a spreadsheet will not run as a formula (see the module's docstring)."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def row(item: payrolls.TrackedItem) -> list[str]:
    paid_at = item.updated_at.isoformat() if item.status == payrolls.ItemStatus.PAID else ""
    cells = (
        str(item.position),
        item.name,
        item.account,
        render.money(item.amount),
        str(item.provider),
        str(item.status),
        item.provider_reference or "",
        item.failure_reason or "",
        paid_at,
        item.tracking_id or "",
    )
    return [neutralise(cell) for cell in cells]


def lines(rows: Iterable[Iterable[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def filename(reference: str) -> str:
    return f"payroll-{reference}.csv"


def content_disposition(reference: str) -> str:
    """`attachment` naming the file after the payroll's reference (RFC 6266): `filename` is an ASCII stand-in
    (every character but letters, digits, `.`, `_` and `-` replaced by `_`, so nothing needs quoting or
    escaping), `filename*` the exact name, percent-encoded UTF-8 (RFC 8187)."""
    name = filename(reference)
    fallback = _NOT_FILENAME_SAFE.sub("_", name)
    exact = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


async def stream(
    page: payrolls.ItemPage, next_page: Callable[[int], Awaitable[payrolls.ItemPage]]
) -> AsyncIterator[bytes]:
    """The header row, then each page's lines: `page` is the first page, `next_page(after)` reads the next."""
    yield lines([COLUMNS])
    while True:
        yield lines(row(item) for item in page.items)
        if page.next_after is None:
            return
        page = await next_page(page.next_after)


async def nothing() -> AsyncIterator[bytes]:
    """An empty body (HEAD)."""
    empty: tuple[bytes, ...] = ()
    for chunk in empty:
        yield chunk
