"""JSON with money in it: one encoder for what payrun writes (to IntaSend, and to jsonb columns).

Provider responses are parsed with `parse_float=Decimal` so that no amount goes through binary floating
point on the way in; on the way out a Decimal becomes a JSON number again (an integer when it is one),
exact to 15 significant digits, far beyond numeric(14,2).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    return json.dumps(value, default=default)
