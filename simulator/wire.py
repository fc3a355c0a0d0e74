"""JSON bodies in and out, read and written in C (msgspec), meaning exactly what the standard library's did.

A batch of 500 transactions is some 325 kB of JSON each way (approve carries the whole initiate response back),
and the standard library's ``json`` spent as much CPU on it as the rest of the simulator. msgspec does the
same work several times faster. What a body means never depends on which parser read it:

- **Reading**: msgspec is the stricter parser (it refuses ``NaN``, ``Infinity`` and lone surrogates, which
  ``json`` accepts) and, where both accept a body, both give the same values: objects as dicts (the last of a
  repeated key wins), integers of any size as ``int``, numbers with a fraction or exponent as the ``Decimal``
  of their own digits. So any body msgspec refuses is parsed again by ``json`` (``parse_float=Decimal``),
  which answers as before: the value, or the error whose message the 400 quotes.
- **Writing**: the same keys, values and types; the text differs only where JSON allows it (no spaces after
  separators, non-ASCII characters as UTF-8 rather than ``\\u`` escapes, ``1e16`` for ``1e+16``). Anything
  msgspec cannot write (a string with a lone surrogate, which only ``json`` would have read) is written by
  ``json`` as before.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import msgspec
from aiohttp import web

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encoder = msgspec.json.Encoder()


class _Approval(msgspec.Struct):
    """The two fields approve reads from the initiate response it carries; the rest is skipped unbuilt."""

    tracking_id: Any = msgspec.UNSET
    nonce: Any = msgspec.UNSET


_approval_decoder = msgspec.json.Decoder(_Approval, float_hook=Decimal)
_APPROVAL_FIELDS = _Approval.__struct_fields__


def loads(text: str) -> Any:
    """``json.loads(text, parse_float=Decimal)``, faster; raises what that raises."""
    try:
        return _decoder.decode(text)
    except Exception:  # noqa: BLE001 - msgspec refused it; json decides (module docstring)
        return json.loads(text, parse_float=Decimal)


def loads_approval(text: str) -> Any:
    """What :func:`loads` gives, but of an object only the keys approve reads (tracking_id and nonce, those
    present): approve's body is a whole batch, whose other values are checked as JSON but not built."""
    try:
        wanted = _approval_decoder.decode(text)
    except Exception:  # noqa: BLE001 - not an object, or refused by msgspec: the general path answers
        body = loads(text)
        return {key: body[key] for key in _APPROVAL_FIELDS if key in body} if isinstance(body, dict) else body
    return {key: value for key in _APPROVAL_FIELDS if (value := getattr(wanted, key)) is not msgspec.UNSET}


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of a value made of dicts, lists, strings, ints, floats, bools, None and Structs (written
    as objects with their fields as keys, in order)."""
    try:
        return _encoder.encode(value)
    except Exception:  # noqa: BLE001 - e.g. a lone surrogate: json writes it as before (module docstring)
        return json.dumps(value, default=_struct_fields).encode()


def _struct_fields(value: Any) -> dict[str, Any]:
    """For json: a Struct (a transaction's view, simulator/ledger.py) as the dict of its fields in order."""
    if isinstance(value, msgspec.Struct):
        return msgspec.structs.asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``web.json_response(data, status=..., headers=...)``: the same status, headers and content type."""
    return web.Response(
        body=dumps(data), status=status, headers=headers, content_type="application/json", charset="utf-8"
    )
