"""What the lifespan hands every request (Starlette lifespan state): the pool, the settings, the throttle,
the key books."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict, cast

import asyncpg
from starlette.requests import Request

from shared.settings import Settings

if TYPE_CHECKING:
    from api_service.keys import KeyBook, OperatorBook
    from api_service.throttle import KeyThrottle


class State(TypedDict):
    settings: Settings
    pool: asyncpg.Pool
    throttle: KeyThrottle
    keys: KeyBook
    operator_keys: OperatorBook


def of(request: Request) -> State:
    return cast(State, request.scope["state"])
