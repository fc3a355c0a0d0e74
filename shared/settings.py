"""Configuration, read once from the environment into a frozen object.

Only the names of docs/configuration.md (including a few payrun-specific knobs with safe defaults) are read, and
nothing else in payrun reads ``os.environ``. A bad value fails with an error that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from shared.errors import ConfigError

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _read(environ: Mapping[str, str], name: str, cast: Callable[[str], T], default: T) -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return cast(raw.strip())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None


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
    database_url: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    api_key_rate: float = 50.0
    api_key_burst: int = 100
    api_db_acquire_timeout_s: float = 2.0
    api_auth_failure_rate: float = 20.0
    api_auth_failure_burst: int = 100
    intasend_base_url: str = "https://sandbox.intasend.com"
    intasend_secret_key: str | None = field(default=None, repr=False)
    intasend_max_rps: float = 5.0
    intasend_timeout_s: float = 30.0
    intasend_batch_size: int = 500
    intasend_wallet_id: str | None = None
    intasend_callback_url: str | None = None
    intasend_webhook_challenge: str | None = field(default=None, repr=False)
    dispatcher_concurrency: int = 32
    dispatcher_lease_s: float = 30.0
    dispatcher_metrics_port: int | None = None
    dispatcher_grace_s: float = 20.0
    dispatcher_max_errors: int = 12
    sim_host: str = "127.0.0.1"
    sim_port: int = 8900
    log_level: str = "info"
    log_format: str = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            database_url=_read(env, "DATABASE_URL", _database_url, None),
            api_host=_read(env, "API_HOST", str, "127.0.0.1"),
            api_port=_read(env, "API_PORT", _port, 8000),
            api_workers=_read(env, "API_WORKERS", _positive_int, 1),
            api_key_rate=_read(env, "API_KEY_RATE", _positive_float, 50.0),
            api_key_burst=_read(env, "API_KEY_BURST", _positive_int, 100),
            api_db_acquire_timeout_s=_read(env, "API_DB_ACQUIRE_TIMEOUT_S", _positive_float, 2.0),
            api_auth_failure_rate=_read(env, "API_AUTH_FAILURE_RATE", _positive_float, 20.0),
            api_auth_failure_burst=_read(env, "API_AUTH_FAILURE_BURST", _positive_int, 100),
            intasend_base_url=_read(env, "INTASEND_BASE_URL", _base_url, "https://sandbox.intasend.com"),
            intasend_secret_key=_read(env, "INTASEND_SECRET_KEY", str, None),
            intasend_max_rps=_read(env, "INTASEND_MAX_RPS", _positive_float, 5.0),
            intasend_timeout_s=_read(env, "INTASEND_TIMEOUT_S", _positive_float, 30.0),
            intasend_batch_size=_read(env, "INTASEND_BATCH_SIZE", _positive_int, 500),
            intasend_wallet_id=_read(env, "INTASEND_WALLET_ID", str, None),
            intasend_callback_url=_read(env, "INTASEND_CALLBACK_URL", str, None),
            intasend_webhook_challenge=_read(env, "INTASEND_WEBHOOK_CHALLENGE", str, None),
            dispatcher_concurrency=_read(env, "DISPATCHER_CONCURRENCY", _positive_int, 32),
            dispatcher_lease_s=_read(env, "DISPATCHER_LEASE_S", _positive_float, 30.0),
            dispatcher_metrics_port=_read(env, "DISPATCHER_METRICS_PORT", _port, None),
            dispatcher_grace_s=_read(env, "DISPATCHER_GRACE_S", _positive_float, 20.0),
            dispatcher_max_errors=_read(env, "DISPATCHER_MAX_ERRORS", _positive_int, 12),
            sim_host=_read(env, "SIM_HOST", str, "127.0.0.1"),
            sim_port=_read(env, "SIM_PORT", _port, 8900),
            log_level=_read(env, "LOG_LEVEL", _choice(*LOG_LEVELS), "info"),
            log_format=_read(env, "LOG_FORMAT", _choice("json", "console"), "json"),
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/payrun)")
        return self.database_url

    def require_secret_key(self) -> str:
        if not self.intasend_secret_key:
            raise ConfigError("INTASEND_SECRET_KEY is not set: the dispatcher needs IntaSend's secret key")
        return self.intasend_secret_key
