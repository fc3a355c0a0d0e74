"""Signatures of the events payrun POSTs to employers (docs/api.md section 11), Stripe-like.

`Payrun-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the employer's secret. The
timestamp is signed with the body, so a receiver that refuses old timestamps (REPLAY_WINDOW_S) refuses a
captured request replayed later; the event id lets it drop a delivery it already took (at-least-once).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Payrun-Signature"
EVENT_ID_HEADER = "Payrun-Event-Id"
EVENT_TYPE_HEADER = "Payrun-Event-Type"
SECRET_PREFIX = "whsec_"
REPLAY_WINDOW_S = 300  # what docs/api.md tells receivers to accept, either side of their clock


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of b"<timestamp>." + body under the secret (its UTF-8 bytes, prefix included)."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"
