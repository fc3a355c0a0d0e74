"""The simulator's settings, read once from ``SIM_*`` environment variables into a frozen object.

Tests build :class:`SimConfig` directly, so nothing else in the simulator reads ``os.environ``. A bad value
fails with :class:`SimConfigError` naming the variable, so a typo in a benchmark script is caught at start.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

T = TypeVar("T")

ENDPOINTS: tuple[str, ...] = ("initiate", "approve", "status", "wallets")


class SimConfigError(ValueError):
    """A ``SIM_*`` variable has a value the simulator cannot use; the message names the variable."""


# (name, default as shown in --help, meaning). The single source for --help, so the two cannot drift.
ENV_VARS: tuple[tuple[str, str, str], ...] = (
    ("SIM_HOST", "127.0.0.1", "address to listen on"),
    ("SIM_PORT", "8900", "port to listen on (0 = any free port; the start line shows which)"),
    (
        "SIM_MAX_RPS",
        "5",
        "accepted requests to /api/ per sliding 1-second window; more get 429 (0 = no limit)",
    ),
    ("SIM_429_RETRY_AFTER", "1", "1 = send a Retry-After header (whole seconds) on 429s, 0 = omit it"),
    (
        "SIM_429_STORM_RATE",
        "0",
        "probability 0..1 of a 429 to an /api/ request however slowly the client goes",
    ),
    ("SIM_LATENCY_MS", "0", "delay added to every /api/ request, in milliseconds"),
    ("SIM_SLOW_RATE", "0", "probability 0..1 that an /api/ request is delayed a further SIM_SLOW_MS"),
    ("SIM_SLOW_MS", "5000", "the extra delay of a slow request, in milliseconds"),
    ("SIM_ERROR_RATE_BEFORE", "0", "probability 0..1 of answering 500 without acting"),
    (
        "SIM_ERROR_RATE_AFTER",
        "0",
        "probability 0..1 of acting (creating/approving the batch), then answering 500",
    ),
    ("SIM_HANG_AFTER_RATE", "0", "probability 0..1 of acting, then not answering until the client gives up"),
    ("SIM_FAULT_ENDPOINTS", ",".join(ENDPOINTS), "comma list of endpoints the 500/hang faults apply to"),
    ("SIM_FAIL_ACCOUNTS", "(none)", "comma list of accounts whose transactions fail: TF106 Unsuccessful"),
    (
        "SIM_UNDETERMINED_ACCOUNTS",
        "(none)",
        "comma list of accounts whose transactions end TF105 (undetermined;"
        " the ledger records whether money really moved, chosen at random)",
    ),
    (
        "SIM_INVALID_ACCOUNTS",
        "(none)",
        "comma list of accounts initiate refuses (400 naming each transaction, as for a number IntaSend"
        " does not accept); the rest of the request is refused with them",
    ),
    ("SIM_BALANCE", "1000000000.00", "opening wallet balance in KES; a batch it cannot cover fails BF105"),
    ("SIM_PROCESSING_S", "0.3", "seconds from approval until the batch completes (BC100)"),
    (
        "SIM_STATUS_LAG_S",
        "0",
        "seconds after an approval during which status still shows the batch waiting for approval"
        " (BP103); a second approve is refused with 400 either way, unless SIM_SECOND_APPROVE_PAYS",
    ),
    (
        "SIM_SECOND_APPROVE_PAYS",
        "0",
        "1 = accept an approve of a batch already approved and pay its transactions again (new ledger"
        " entries for the same request_reference_id: a client that approves twice is caught paying twice);"
        " 0 = refuse it with 400. /sim/stats counts such approves as second_approves either way",
    ),
    ("SIM_SEED", "(random)", "integer seed for ids, outcomes and faults, for reproducible runs"),
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator's behaviour depends on; the defaults are a well-behaved IntaSend."""

    host: str = "127.0.0.1"
    port: int = 8900
    max_rps: int = 5
    retry_after: bool = True
    storm_rate: float = 0.0
    latency_ms: float = 0.0
    slow_rate: float = 0.0
    slow_ms: float = 5000.0
    error_rate_before: float = 0.0
    error_rate_after: float = 0.0
    hang_after_rate: float = 0.0
    fault_endpoints: frozenset[str] = frozenset(ENDPOINTS)
    fail_accounts: frozenset[str] = frozenset()
    undetermined_accounts: frozenset[str] = frozenset()
    invalid_accounts: frozenset[str] = frozenset()
    balance: Decimal = Decimal("1000000000.00")
    processing_s: float = 0.3
    status_lag_s: float = 0.0
    second_approve_pays: bool = False
    seed: int | None = None
    # Not an environment variable: how long a "hung" request sleeps; tests shorten it.
    hang_s: float = field(default=3600.0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimConfig:
        env = os.environ if environ is None else environ
        return cls(
            host=_read(env, "SIM_HOST", str, "127.0.0.1"),
            port=_read(env, "SIM_PORT", _port, 8900),
            max_rps=_read(env, "SIM_MAX_RPS", _non_negative_int, 5),
            retry_after=_read(env, "SIM_429_RETRY_AFTER", _flag, True),
            storm_rate=_read(env, "SIM_429_STORM_RATE", _probability, 0.0),
            latency_ms=_read(env, "SIM_LATENCY_MS", _non_negative_float, 0.0),
            slow_rate=_read(env, "SIM_SLOW_RATE", _probability, 0.0),
            slow_ms=_read(env, "SIM_SLOW_MS", _non_negative_float, 5000.0),
            error_rate_before=_read(env, "SIM_ERROR_RATE_BEFORE", _probability, 0.0),
            error_rate_after=_read(env, "SIM_ERROR_RATE_AFTER", _probability, 0.0),
            hang_after_rate=_read(env, "SIM_HANG_AFTER_RATE", _probability, 0.0),
            fault_endpoints=_read(env, "SIM_FAULT_ENDPOINTS", _endpoints, frozenset(ENDPOINTS)),
            fail_accounts=_read(env, "SIM_FAIL_ACCOUNTS", _accounts, frozenset()),
            undetermined_accounts=_read(env, "SIM_UNDETERMINED_ACCOUNTS", _accounts, frozenset()),
            invalid_accounts=_read(env, "SIM_INVALID_ACCOUNTS", _accounts, frozenset()),
            balance=_read(env, "SIM_BALANCE", _balance, Decimal("1000000000.00")),
            processing_s=_read(env, "SIM_PROCESSING_S", _non_negative_float, 0.3),
            status_lag_s=_read(env, "SIM_STATUS_LAG_S", _non_negative_float, 0.0),
            second_approve_pays=_read(env, "SIM_SECOND_APPROVE_PAYS", _flag, False),
            seed=_read(env, "SIM_SEED", int, None),
        )


def _read(environ: Mapping[str, str], name: str, cast: Callable[[str], T], default: T) -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw.strip())
    except InvalidOperation:
        raise SimConfigError(f"{name}={raw!r} is not valid: not a number") from None
    except (TypeError, ValueError) as exc:
        raise SimConfigError(f"{name}={raw!r} is not valid: {exc}") from None


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value < 65536:
        raise ValueError("must be a port number from 0 to 65535")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be a whole number, 0 or more")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number, 0 or more")
    return value


def _probability(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError("must be a probability from 0 to 1")
    return value


def _flag(raw: str) -> bool:
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError("must be 1 or 0")


def _split(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def _endpoints(raw: str) -> frozenset[str]:
    names = _split(raw)
    unknown = sorted(names - set(ENDPOINTS))
    if unknown:
        raise ValueError(f"unknown endpoint(s) {', '.join(unknown)}; use {', '.join(ENDPOINTS)}")
    return names


def _accounts(raw: str) -> frozenset[str]:
    return _split(raw)


def _balance(raw: str) -> Decimal:
    value = Decimal(raw)
    if not value.is_finite() or value < 0:
        raise ValueError("must be an amount in KES, 0 or more")
    return value.quantize(Decimal("0.01"))
