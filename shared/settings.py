"""Configuration, read once from the environment into a frozen object.

Only the names of docs/configuration.md (including a few payrun-specific knobs with safe defaults) are read, and
nothing else in payrun reads ``os.environ`` (shared/envconfig.py reads it for this class and the simulator's).
Each variable, its parser and its default are written once, on its field. A bad value fails with an error that
names the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.envconfig import from_environ, setting
from shared.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a whole number above 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a port number from 1 to 65535")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a number above 0")
    return value


def _share(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError("must be a number above 0 and at most 1")
    return value


def _database_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("postgres", "postgresql"):
        raise ValueError("must look like postgresql://user:pass@host:port/db")
    return raw


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be scheme, host and port, e.g. https://sandbox.intasend.com")
    return f"{parts.scheme}://{parts.netloc}"


def _choice(*allowed: str) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        value = raw.lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return cast


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = setting("DATABASE_URL", _database_url, None)
    api_host: str = setting("API_HOST", str, "127.0.0.1")
    api_port: int = setting("API_PORT", _port, 8000)
    api_workers: int = setting("API_WORKERS", _positive_int, 1)
    api_key_rate: float = setting("API_KEY_RATE", _positive_float, 50.0)
    api_key_burst: int = setting("API_KEY_BURST", _positive_int, 100)
    api_db_acquire_timeout_s: float = setting("API_DB_ACQUIRE_TIMEOUT_S", _positive_float, 2.0)
    api_auth_failure_rate: float = setting("API_AUTH_FAILURE_RATE", _positive_float, 20.0)
    api_auth_failure_burst: int = setting("API_AUTH_FAILURE_BURST", _positive_int, 100)
    intasend_base_url: str = setting("INTASEND_BASE_URL", _base_url, "https://sandbox.intasend.com")
    intasend_secret_key: str | None = setting("INTASEND_SECRET_KEY", str, None, repr=False)
    intasend_max_rps: float = setting("INTASEND_MAX_RPS", _positive_float, 5.0)
    intasend_timeout_s: float = setting("INTASEND_TIMEOUT_S", _positive_float, 30.0)
    intasend_batch_size: int = setting("INTASEND_BATCH_SIZE", _positive_int, 500)
    intasend_wallet_id: str | None = setting("INTASEND_WALLET_ID", str, None)
    intasend_callback_url: str | None = setting("INTASEND_CALLBACK_URL", str, None)
    intasend_webhook_challenge: str | None = setting("INTASEND_WEBHOOK_CHALLENGE", str, None, repr=False)
    dispatcher_concurrency: int = setting("DISPATCHER_CONCURRENCY", _positive_int, 64)
    dispatcher_lease_s: float = setting("DISPATCHER_LEASE_S", _positive_float, 30.0)
    dispatcher_metrics_port: int | None = setting("DISPATCHER_METRICS_PORT", _port, None)
    dispatcher_grace_s: float = setting("DISPATCHER_GRACE_S", _positive_float, 20.0)
    dispatcher_max_errors: int = setting("DISPATCHER_MAX_ERRORS", _positive_int, 12)
    # A batch the wallet cannot cover waits: re-checked after this, doubling up to the max (docs/operations.md).
    dispatcher_funds_recheck_s: float = setting("DISPATCHER_FUNDS_RECHECK_S", _positive_float, 30.0)
    dispatcher_funds_recheck_max_s: float = setting("DISPATCHER_FUNDS_RECHECK_MAX_S", _positive_float, 600.0)
    employer_callback_timeout_s: float = setting("EMPLOYER_CALLBACK_TIMEOUT_S", _positive_float, 5.0)
    employer_callback_concurrency: int = setting("EMPLOYER_CALLBACK_CONCURRENCY", _positive_int, 8)
    employer_callback_max_attempts: int = setting("EMPLOYER_CALLBACK_MAX_ATTEMPTS", _positive_int, 20)
    employer_callback_max_age_s: float = setting("EMPLOYER_CALLBACK_MAX_AGE_S", _positive_float, 259200.0)
    employer_callback_retry_s: float = setting("EMPLOYER_CALLBACK_RETRY_S", _positive_float, 10.0)
    # The re-check of NEEDS_REVIEW items (dispatcher_service/recheck.py): first wait, longest wait, how long
    # to keep asking, and the most of INTASEND_MAX_RPS one dispatcher spends on it.
    recheck_first_s: float = setting("RECHECK_FIRST_S", _positive_float, 300.0)
    recheck_max_s: float = setting("RECHECK_MAX_S", _positive_float, 6 * 3600.0)
    recheck_horizon_s: float = setting("RECHECK_HORIZON_S", _positive_float, 7 * 24 * 3600.0)
    recheck_share: float = setting("RECHECK_SHARE", _share, 0.1)
    sim_host: str = setting("SIM_HOST", str, "127.0.0.1")
    sim_port: int = setting("SIM_PORT", _port, 8900)
    log_level: str = setting("LOG_LEVEL", _choice(*LOG_LEVELS), "info")
    log_format: str = setting("LOG_FORMAT", _choice("json", "console"), "json")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return from_environ(cls, environ, ConfigError)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/payrun)")
        return self.database_url

    def require_secret_key(self) -> str:
        if not self.intasend_secret_key:
            raise ConfigError("INTASEND_SECRET_KEY is not set: the dispatcher needs IntaSend's secret key")
        return self.intasend_secret_key
