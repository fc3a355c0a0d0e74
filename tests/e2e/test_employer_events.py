"""Employer events with the real processes: `payrun employer set-callback`, then payrolls paid by real
dispatchers (one SIGKILLed on the way) against the simulator; every payroll's event reaches a real receiver,
signed, at least once, after the receiver failed at first."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import sys
import time

import asyncpg
from aiohttp import web

from tests.e2e.conftest import assert_ledger_agrees
from tests.e2e.stack import ROOT


def _verify(secret: str, header: str, body: bytes) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) <= 300


async def test_every_payroll_tells_its_employer_once_paid(make_stack) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        # The receiver fails its first three requests: those events are retried after a back-off.
        return web.Response(status=500 if len(received) <= 3 else 204)

    app = web.Application()
    app.router.add_post("/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/events"
    try:
        stack, client = await make_stack(dispatchers=2, EMPLOYER_CALLBACK_RETRY_S="0.5")
        conn = await asyncpg.connect(stack.database_url)
        try:
            employer_id = await conn.fetchval("SELECT id FROM employers WHERE name = 'E2E Ltd'")
        finally:
            await conn.close()
        ran = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "payrun", "employer", "set-callback", str(employer_id), "--url", url],
            cwd=ROOT, env=stack.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        secret = json.loads(ran.stdout)["secret"]

        ids = [await client.create(f"EV-{p}", [f"2547{p:04d}{i:04d}" for i in range(10)]) for p in range(6)]
        assert {await client.process(pid) for pid in ids} == {202}
        await asyncio.sleep(0.5)
        stack.kill(stack.dispatchers()[0], signal.SIGKILL)
        stack.start("dispatcher")
        states = await client.wait_final(ids, within_s=90)
        assert set(states.values()) == {"COMPLETED"}
        assert await assert_ledger_agrees(stack) == {"PAID": 60}

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            delivered = {json.loads(body)["payroll_id"] for headers, body in received[3:]}
            if delivered >= set(ids):
                break
            await asyncio.sleep(0.1)
        assert delivered == set(ids), "every payroll's event got through after the receiver's failures"
        events = [json.loads(body) for _, body in received]
        assert all(_verify(secret, h["Payrun-Signature"], body) for h, body in received)
        assert all(h["Payrun-Event-Id"] == e["event_id"] for (h, _), e in zip(received, events, strict=True))
        assert {e["type"] for e in events} == {"payroll.completed"}
        assert len({e["event_id"] for e in events}) == 6, "one event per payroll, however often it was sent"
        assert all(e["counts"]["PAID"] == 10 and e["paid_amount"] == "1000.00" for e in events)
    finally:
        await runner.cleanup()
