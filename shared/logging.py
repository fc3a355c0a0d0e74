"""structlog, configured once: one JSON object per line on stderr, or a console renderer for people.

Context (request_id, payroll_id, tracking_id, ...) is bound with ``structlog.contextvars`` and appears on every
line logged while it is bound. API keys and full phone numbers never reach a log line: the
``redact_secrets`` processor masks them wherever a caller put them by mistake.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)(\d)(\d{5})(\d{3})(?!\d)")
_SECRET_FIELDS = {"api_key", "authorization", "secret_key", "intasend_secret_key", "challenge", "password"}


def mask_phone(text: str) -> str:
    """`254712345678` → `2547*****678`: enough to tell numbers apart, not enough to call one."""
    return _PHONE.sub(lambda m: f"254{m.group(1)}*****{m.group(3)}", text)


def redact_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_FIELDS:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = mask_phone(value)
    return event


def configure(level: str = "info", fmt: str = "json") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (uvicorn, asyncpg, aiohttp) log through the standard library: send them to stderr too.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s")


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
