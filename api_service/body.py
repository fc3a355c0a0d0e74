"""Reading a JSON request body: the media type, a size cap, and a parser that no input can crash.

`Content-Type` other than `application/json` → 415; larger than `MAX_BODY_BYTES` (by `Content-Length` or by
what actually streams in) → 413; anything `json.loads` cannot read, NaN/Infinity, or nesting too deep → 400.
Numbers with a fraction or exponent are parsed as `Decimal`, never float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from shared import errors

MAX_BODY_BYTES = 8 * 1024 * 1024


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_bytes(request: Request, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The raw JSON body, at most `max_bytes`, or a `UnsupportedMediaType` / `BodyTooLarge` error."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise errors.UnsupportedMediaType()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise errors.BodyTooLarge(f"the body must be at most {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise errors.BodyTooLarge(f"the body must be at most {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """`raw` parsed, or a `MalformedBody` error."""
    if not raw.strip():
        raise errors.MalformedBody("the body is empty: send a JSON object")
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)
    except RecursionError:
        raise errors.MalformedBody("the body is not readable JSON: it is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, over-long integers
        raise errors.MalformedBody(f"the body is not readable JSON: {exc}") from None


async def read_json(request: Request, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The parsed body, or a `UnsupportedMediaType` / `BodyTooLarge` / `MalformedBody` error."""
    return parse_json(await read_bytes(request, max_bytes))


async def read_optional_json(request: Request, max_bytes: int = MAX_BODY_BYTES) -> Any | None:
    """The parsed body of a route whose body is optional: None when nothing (or only whitespace) was sent,
    whatever the `Content-Type`; otherwise as `read_json` (415, 413, 400)."""
    chunks: list[bytes] = []
    size = 0
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise errors.BodyTooLarge(f"the body must be at most {max_bytes} bytes")
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise errors.BodyTooLarge(f"the body must be at most {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return None
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise errors.UnsupportedMediaType()
    return parse_json(raw)
