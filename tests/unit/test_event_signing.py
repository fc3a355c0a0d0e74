"""The signature receivers are told to check (docs/api.md section 11) is the one payrun makes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher_service import event_delivery
from shared import events, signing

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _documented_verify() -> Callable[..., bool]:
    """The Python snippet of docs/api.md section 11, run as a receiver would paste it."""
    text = API_MD.read_text()
    section = text[text.index(". Employer events: told when a payroll is done") :]
    [snippet] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(snippet, "docs/api.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["REPLAY_WINDOW_S"] == signing.REPLAY_WINDOW_S
    verify: Callable[..., bool] = namespace["verify"]
    return verify


PAYLOAD = {
    "event_id": "0b6f7c1e",
    "type": "payroll.completed",
    "paid_amount": "400.00",
    "counts": {"PAID": 4},
}


def test_the_documented_check_accepts_what_payrun_signs() -> None:
    verify = _documented_verify()
    secret, body, now = signing.new_secret(), events.body(PAYLOAD), int(time.time())
    header = signing.signature_header(secret, now, body)
    assert verify(secret, header, body)
    assert verify(secret, header, body, now=now + signing.REPLAY_WINDOW_S)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s, h, b, t: (s, h, b.replace(b"400.00", b"900.00"), t),  # the body changed
        lambda s, h, b, t: (signing.new_secret(), h, b, t),  # another secret
        lambda s, h, b, t: (s, h, b, t + signing.REPLAY_WINDOW_S + 1),  # replayed too late
        lambda s, h, b, t: (s, h, b, t - signing.REPLAY_WINDOW_S - 1),  # from the future
        lambda s, h, b, t: (s, h.replace(f"t={t}", f"t={t + 1}"), b, t),  # the timestamp changed
        lambda s, h, b, t: (s, "v1=abc", b, t),  # no timestamp
        lambda s, h, b, t: (s, "garbage", b, t),
    ],
)
def test_the_documented_check_refuses_anything_else(tamper: Callable[..., tuple[Any, ...]]) -> None:
    verify = _documented_verify()
    secret, body, now = signing.new_secret(), events.body(PAYLOAD), int(time.time())
    s, h, b, t = tamper(secret, signing.signature_header(secret, now, body), body, now)
    assert not verify(s, h, b, now=t)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    # A fixed vector (openssl dgst -sha256 -hmac whsec_test over `1700000000.{"a":1}`), so a change of algorithm or of what is signed cannot pass unnoticed.
    assert signing.signature("whsec_test", 1700000000, b'{"a":1}') == (
        "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
    )


def test_an_event_body_is_compact_sorted_json_of_the_payload() -> None:
    assert events.body({"b": 1, "a": {"d": 2, "c": "x"}}) == b'{"a":{"c":"x","d":2},"b":1}'
    assert json.loads(events.body(PAYLOAD)) == PAYLOAD


def test_retries_back_off_exponentially_up_to_an_hour() -> None:
    delays = [event_delivery.retry_delay_s(10.0, attempt) for attempt in range(1, 12)]
    for attempt, delay in enumerate(delays, start=1):
        base = min(3600.0, 10.0 * 2 ** (attempt - 1))
        assert 0.8 * base <= delay <= 1.2 * base


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example/hook",
        "hooks.example.com/x",
        "https://",
        "https://a b.example/",
        "http://x/" + "a" * 2000,
    ],
)
def test_a_callback_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(events.InvalidCallbackUrl):
        events.check_url(url)


def test_a_good_callback_url_is_kept_as_given() -> None:
    assert (
        events.check_url("  https://hooks.example.com/payrun?x=1 ") == "https://hooks.example.com/payrun?x=1"
    )
