"""The simulator's settings, read once from ``SIM_*`` environment variables into a frozen object.

Tests build :class:`SimConfig` directly, so nothing else in the simulator reads ``os.environ``. A bad value
fails with :class:`SimConfigError` naming the variable, so a typo in a benchmark script is caught at start.
Each variable's name, parser, default and meaning are written once, on its field (shared/envconfig.py);
``--help`` prints :data:`ENV_VARS`, which is read from those fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from shared.envconfig import from_environ, setting, variables

ENDPOINTS: tuple[str, ...] = ("initiate", "approve", "status", "wallets")


class SimConfigError(ValueError):
    """A ``SIM_*`` variable has a value the simulator cannot use; the message names the variable."""


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


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator's behaviour depends on; the defaults are a well-behaved IntaSend."""

    host: str = setting("SIM_HOST", str, "127.0.0.1", meaning="address to listen on")
    port: int = setting(
        "SIM_PORT", _port, 8900, meaning="port to listen on (0 = any free port; the start line shows which)"
    )
    max_rps: int = setting(
        "SIM_MAX_RPS",
        _non_negative_int,
        5,
        meaning="accepted requests to /api/ per sliding 1-second window; more get 429 (0 = no limit)",
    )
    retry_after: bool = setting(
        "SIM_429_RETRY_AFTER",
        _flag,
        True,
        meaning="1 = send a Retry-After header (whole seconds) on 429s, 0 = omit it",
    )
    storm_rate: float = setting(
        "SIM_429_STORM_RATE",
        _probability,
        0.0,
        meaning="probability 0..1 of a 429 to an /api/ request however slowly the client goes",
    )
    latency_ms: float = setting(
        "SIM_LATENCY_MS",
        _non_negative_float,
        0.0,
        meaning="delay added to every /api/ request, in milliseconds",
    )
    slow_rate: float = setting(
        "SIM_SLOW_RATE",
        _probability,
        0.0,
        meaning="probability 0..1 that an /api/ request is delayed a further SIM_SLOW_MS",
    )
    slow_ms: float = setting(
        "SIM_SLOW_MS",
        _non_negative_float,
        5000.0,
        meaning="the extra delay of a slow request, in milliseconds",
    )
    error_rate_before: float = setting(
        "SIM_ERROR_RATE_BEFORE", _probability, 0.0, meaning="probability 0..1 of answering 500 without acting"
    )
    error_rate_after: float = setting(
        "SIM_ERROR_RATE_AFTER",
        _probability,
        0.0,
        meaning="probability 0..1 of acting (creating/approving the batch), then answering 500",
    )
    hang_after_rate: float = setting(
        "SIM_HANG_AFTER_RATE",
        _probability,
        0.0,
        meaning="probability 0..1 of acting, then not answering until the client gives up",
    )
    fault_endpoints: frozenset[str] = setting(
        "SIM_FAULT_ENDPOINTS",
        _endpoints,
        frozenset(ENDPOINTS),
        meaning="comma list of endpoints the 500/hang faults apply to",
        shown=",".join(ENDPOINTS),
    )
    fail_accounts: frozenset[str] = setting(
        "SIM_FAIL_ACCOUNTS",
        _accounts,
        frozenset(),
        meaning="comma list of accounts whose transactions fail: TF106 Unsuccessful",
        shown="(none)",
    )
    undetermined_accounts: frozenset[str] = setting(
        "SIM_UNDETERMINED_ACCOUNTS",
        _accounts,
        frozenset(),
        meaning=(
            "comma list of accounts whose transactions end TF105 (undetermined; the ledger records "
            "whether money really moved, chosen at random)"
        ),
        shown="(none)",
    )
    undetermined_settle_s: float | None = setting(
        "SIM_UNDETERMINED_SETTLE_S",
        _non_negative_float,
        None,
        meaning=(
            "seconds after its batch completed when a TF105 transaction settles late: status then shows it "
            "TS100 (with a reference) if the ledger paid it, TF106 if not"
        ),
        shown="(never)",
    )
    invalid_accounts: frozenset[str] = setting(
        "SIM_INVALID_ACCOUNTS",
        _accounts,
        frozenset(),
        meaning=(
            "comma list of accounts initiate refuses (400 naming each transaction, as for a number "
            "IntaSend does not accept); the rest of the request is refused with them"
        ),
        shown="(none)",
    )
    balance: Decimal = setting(
        "SIM_BALANCE",
        _balance,
        Decimal("1000000000.00"),
        meaning="opening balance of each wallet in KES; an approved batch it cannot cover fails BF105",
    )
    charge: Decimal = setting(
        "SIM_CHARGE",
        _balance,
        Decimal("0.00"),
        meaning=(
            "charge in KES per transaction: in the initiate response's charge_estimate and "
            "total_amount_estimate, and taken from the wallet with each payment"
        ),
    )
    wallets: frozenset[str] = setting(
        "SIM_WALLETS",
        _accounts,
        frozenset(),
        meaning=(
            "comma list of wallet ids initiate accepts as wallet_id besides the default SIMWLT1 (per-employer"
            " WORKING wallets), or * for any id; each wallet opens with SIM_BALANCE of its own (add funds"
            " with POST /sim/wallets/{id}/fund), and the ledger records the wallet each payment named"
        ),
        shown="(none)",
    )
    processing_s: float = setting(
        "SIM_PROCESSING_S",
        _non_negative_float,
        0.3,
        meaning="seconds from approval until the batch completes (BC100)",
    )
    status_lag_s: float = setting(
        "SIM_STATUS_LAG_S",
        _non_negative_float,
        0.0,
        meaning=(
            "seconds after an approval during which status still shows the batch waiting for approval"
            " (BP103); a second approve is refused with 400 either way, unless "
            "SIM_SECOND_APPROVE_PAYS"
        ),
    )
    second_approve_pays: bool = setting(
        "SIM_SECOND_APPROVE_PAYS",
        _flag,
        False,
        meaning=(
            "1 = accept an approve of a batch already approved and pay its transactions again (new "
            "ledger entries for the same request_reference_id: a client that approves twice is caught"
            " paying twice); 0 = refuse it with 400. /sim/stats counts such approves as "
            "second_approves either way"
        ),
    )
    seed: int | None = setting(
        "SIM_SEED",
        int,
        None,
        meaning="integer seed for ids, outcomes and faults, for reproducible runs",
        shown="(random)",
    )
    state_file: Path | None = setting(
        "SIM_STATE_FILE",
        Path,
        None,
        meaning=(
            "file that keeps batches, ledger and balance across restarts (written before each answer to a"
            " request that may act, and at shutdown; `payrun dev` uses .data/simulator-state.pickle)"
        ),
        shown="(none: state is lost at exit)",
    )
    # Not an environment variable: how long a "hung" request sleeps; tests shorten it.
    hang_s: float = 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimConfig:
        return from_environ(cls, environ, SimConfigError)


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


# (name, default as --help shows it, meaning), from SimConfig's fields: the single source for --help.
ENV_VARS: tuple[tuple[str, str, str], ...] = tuple(
    (f.metadata["env"], f.metadata["shown"] or _shown(f.default), f.metadata["meaning"])
    for f in variables(SimConfig)
)
