"""The simulator's HTTP surface: IntaSend's Send Money routes, plus ``/sim/`` inspection routes.

Every ``/api/`` request passes the same gauntlet, in the order a real provider's edge would apply it: the
sliding-window rate limit (and 429 storms), authentication, latency, then the configured faults around the
handler. "After" faults fire only once the handler has acted (a 2xx), which is what makes them useful: the
client sees a 500 or a timeout for a request that did take effect, and must cope without paying twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simulator import persistence, wire
from simulator.config import SimConfig
from simulator.ledger import CONFIRMING, SimState
from simulator.ratelimit import SlidingWindow
from simulator.stats import Stats
from simulator.validation import (
    FieldError,
    ValidationFailed,
    expect_object,
    parse_fund_amount,
    require_str,
    validate_initiate,
    wallet_known,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LogFn = Callable[[dict[str, Any]], None]

SERVER_ERROR = {
    "type": "server_error",
    "errors": [{"code": "error", "detail": "A server error occurred.", "attr": None}],
}
NOT_FOUND = {"detail": "Not found."}
THROTTLED = {"detail": "Request was throttled."}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
# Approve carries the whole initiate response back, about 650 bytes per transaction: aiohttp's 1 MiB default
# would answer 413 to approving a batch of some 1,600, far below the 5,000 a batch may hold.
MAX_BODY_BYTES = 32 * 1024 * 1024


def stderr_log(record: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(record, default=str) + "\n")
    sys.stderr.flush()


class Simulator:
    """The state shared by all requests of one app: config, batches, counters, limiter and the fault dice."""

    def __init__(
        self, config: SimConfig, *, clock: Callable[[], float] = time.monotonic, log: LogFn = stderr_log
    ):
        self.config = config
        self.clock = clock
        self.log = log
        self.state = SimState(config, clock=clock)
        self.stopping = asyncio.Event()  # set on shutdown, so "hung" requests let the server stop promptly
        self.store: persistence.StateFile | None = None
        self.reset()

    def reset(self) -> None:
        self.state.reset()
        self.stats = Stats()
        self.limiter = SlidingWindow(self.config.max_rps)
        seed = self.config.seed
        self.dice = random.Random(f"{seed}-faults") if seed is not None else random.Random()

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.dice.random() < rate


SIM: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
# Why a request ended as it did, for the log. RequestKey is recent (pyproject allows aiohttp>=3.9).
OUTCOME: Any = web.RequestKey("sim_outcome", str) if hasattr(web, "RequestKey") else "sim_outcome"


def _sim(request: web.Request) -> Simulator:
    return request.app[SIM]


def _endpoint(request: web.Request) -> str:
    name = request.match_info.route.name or ""
    if name.startswith("wallet"):
        return "wallets"
    return name if name in ("initiate", "approve", "status") else "other"


async def _body(request: web.Request, *, approval: bool = False) -> Any:
    """Parse JSON like DRF: an empty body is ``{}``; floats become Decimal so amounts stay exact. With
    `approval`, an object body keeps only tracking_id and nonce, all approve reads of the batch it carries
    (simulator/wire.py: its other values are checked as JSON but not built)."""
    text = await request.text()
    if not text.strip():
        return {}
    try:
        return wire.loads_approval(text) if approval else wire.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            [FieldError("parse_error", f"JSON parse error - {exc}", None)], "client_error"
        ) from None


@web.middleware
async def log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON line per request; cancelled (client gave up) requests are logged too."""
    sim = _sim(request)
    started = time.monotonic()
    status: int | str = "cancelled"
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        sim.log(
            {
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "event": "sim_request",
                "method": request.method,
                "path": request.path,
                "status": status,
                "outcome": request.get(OUTCOME, "ok"),
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            }
        )


@web.middleware
async def persist_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With SIM_STATE_FILE, what a request did is on disk before its answer leaves, and before any "after"
    fault: the innermost middleware (simulator/persistence.py)."""
    sim = _sim(request)
    try:
        return await handler(request)
    finally:
        if sim.store is not None and request.method != "GET":
            await sim.store.save(sim.state, unless_unchanged=_endpoint(request) == "status")


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = _sim(request)
    sim.state.settle_due()
    if not request.path.startswith("/api/"):
        return await handler(request)
    config, stats = sim.config, sim.stats
    endpoint = _endpoint(request)
    stats.requests += 1
    stats.by_endpoint[endpoint] += 1

    wait = sim.limiter.wait_time(sim.clock())
    if wait is not None:
        stats.rejected_429_pace += 1
        request[OUTCOME] = "429_pace"
        return _throttled(config, SlidingWindow.retry_after_header(wait))
    if sim.roll(config.storm_rate):
        stats.rejected_429_storm += 1
        request[OUTCOME] = "429_storm"
        return _throttled(config, "1")
    sim.limiter.accept(sim.clock())
    stats.accepted += 1

    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        request[OUTCOME] = "401"
        return web.json_response(NO_CREDENTIALS, status=401)

    delay_ms = config.latency_ms
    if sim.roll(config.slow_rate):
        stats.faults["slow"] += 1
        delay_ms += config.slow_ms
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
        sim.state.settle_due()

    faulty = endpoint in config.fault_endpoints
    if faulty and sim.roll(config.error_rate_before):
        stats.faults["error_before"] += 1
        request[OUTCOME] = "error_before"
        return web.json_response(SERVER_ERROR, status=500)
    try:
        response = await handler(request)
    except ValidationFailed as exc:
        return web.json_response(exc.body(), status=400)
    except web.HTTPException as exc:  # unknown /api/ path or wrong method: JSON like DRF, not aiohttp's text
        detail = NOT_FOUND if exc.status == 404 else {"detail": exc.reason}
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(detail, status=exc.status, headers=allow)
    if faulty and 200 <= response.status < 300:
        if sim.roll(config.error_rate_after):
            stats.faults["error_after"] += 1
            request[OUTCOME] = "error_after"
            return web.json_response(SERVER_ERROR, status=500)
        if sim.roll(config.hang_after_rate):
            stats.faults["hang_after"] += 1
            request[OUTCOME] = "hang_after"
            try:
                await asyncio.wait_for(sim.stopping.wait(), timeout=config.hang_s)
            except TimeoutError:
                pass
            return web.json_response(SERVER_ERROR, status=500)
    return response


def _throttled(config: SimConfig, retry_after: str) -> web.Response:
    headers = {"Retry-After": retry_after} if config.retry_after else None
    return web.json_response(THROTTLED, status=429, headers=headers)


# IntaSend routes --------------------------------------------------------------------------------------------
async def initiate(request: web.Request) -> web.Response:
    sim = _sim(request)
    parsed = validate_initiate(
        await _body(request), sim.state.wallet_id, sim.config.invalid_accounts, sim.config.wallets
    )
    batch = sim.state.create(parsed)
    # With requires_approval "NO" the batch is approved at once, and IntaSend answers "Confirming balance".
    state = CONFIRMING if not parsed.requires_approval else None
    return wire.json_response(sim.state.batch_view(batch, state))


async def approve(request: web.Request) -> web.Response:
    sim = _sim(request)
    data = expect_object(await _body(request, approval=True))
    tracking_id = require_str(data, "tracking_id")
    batch = sim.state.batches.get(tracking_id)
    if batch is None:
        return web.json_response(NOT_FOUND, status=404)
    nonce = require_str(data, "nonce")
    if nonce != batch.nonce:
        raise ValidationFailed([FieldError("invalid", "Invalid nonce.", "nonce")])
    if not sim.state.approve(batch):
        sim.stats.second_approves += 1
        # A strict IntaSend refuses it; SIM_SECOND_APPROVE_PAYS plays one that pays the batch again.
        if not sim.config.second_approve_pays:
            raise ValidationFailed([FieldError("invalid", "Batch is not awaiting approval.", "tracking_id")])
        sim.state.approve_again(batch)
    return wire.json_response(sim.state.batch_view(batch, batch.state()))


async def status(request: web.Request) -> web.Response:
    sim = _sim(request)
    tracking_id = require_str(expect_object(await _body(request)), "tracking_id")
    batch = sim.state.batches.get(tracking_id)
    if batch is None:
        return web.json_response(NOT_FOUND, status=404)
    return wire.json_response(sim.state.batch_view(batch))


async def wallets(request: web.Request) -> web.Response:
    sim = _sim(request)
    listed = sorted(sim.config.wallets - {"*", sim.state.wallet_id})
    return web.json_response([sim.state.wallet_view()] + [sim.state.wallet_view(w) for w in listed])


async def wallet(request: web.Request) -> web.Response:
    sim = _sim(request)
    wallet_id = request.match_info["wallet_id"]
    if not wallet_known(wallet_id, sim.state.wallet_id, sim.config.wallets):
        return web.json_response(NOT_FOUND, status=404)
    return web.json_response(sim.state.wallet_view(wallet_id))


# Inspection routes (no auth; never part of IntaSend's API) ---------------------------------------------------
async def sim_ledger(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).state.ledger_view())


async def sim_stats(request: web.Request) -> web.Response:
    sim = _sim(request)
    return web.json_response(
        sim.stats.view(max_in_any_window=sim.limiter.max_in_any_window, batches=len(sim.state.batches))
    )


async def sim_fund(request: web.Request) -> web.Response:
    """`POST /sim/wallets/{wallet_id}/fund` with `{"amount": "150000.00"}`: add funds; answers the wallet."""
    sim = _sim(request)
    wallet_id = request.match_info["wallet_id"]
    if not wallet_known(wallet_id, sim.state.wallet_id, sim.config.wallets):
        return web.json_response(NOT_FOUND, status=404)
    try:
        data = expect_object(await _body(request))
        amount = parse_fund_amount(data.get("amount"))
    except ValidationFailed as exc:
        return web.json_response(exc.body(), status=400)
    sim.state.fund(wallet_id, amount)
    sim.log({"event": "sim_wallet_funded", "wallet_id": wallet_id, "amount": str(amount)})
    return web.json_response(sim.state.wallet_view(wallet_id))


async def sim_reset(request: web.Request) -> web.Response:
    _sim(request).reset()
    return web.json_response({"reset": True})


async def sim_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulator": True})


async def _on_shutdown(app: web.Application) -> None:
    app[SIM].stopping.set()


async def _on_cleanup(app: web.Application) -> None:
    sim = app[SIM]
    if sim.store is not None:
        sim.store.write(sim.state)


def make_app(
    config: SimConfig, *, clock: Callable[[], float] = time.monotonic, log: LogFn = stderr_log
) -> web.Application:
    """Build the app from a config object, so tests need no environment variables. With
    config.state_file, the state saved there is taken up again (raises persistence.StateFileError when the
    file cannot be read)."""
    store = persistence.StateFile(config.state_file) if config.state_file is not None else None
    snapshot = store.load() if store is not None else None
    if snapshot is not None:
        clock = persistence.resumed_clock(snapshot, clock)
    middlewares = [log_middleware, api_middleware, persist_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[SIM] = Simulator(config, clock=clock, log=log)
    app[SIM].store = store
    if snapshot is not None:
        persistence.restore(app[SIM].state, snapshot)
    app.router.add_post("/api/v1/send-money/initiate/", initiate, name="initiate")
    app.router.add_post("/api/v1/send-money/approve/", approve, name="approve")
    app.router.add_post("/api/v1/send-money/status/", status, name="status")
    app.router.add_get("/api/v1/wallets/", wallets, name="wallets")
    app.router.add_get("/api/v1/wallets/{wallet_id}", wallet, name="wallet")
    app.router.add_get("/api/v1/wallets/{wallet_id}/", wallet, name="wallet_slash")
    app.router.add_get("/sim/ledger", sim_ledger)
    app.router.add_get("/sim/stats", sim_stats)
    app.router.add_post("/sim/reset", sim_reset)
    app.router.add_post("/sim/wallets/{wallet_id}/fund", sim_fund)
    app.router.add_get("/sim/healthz", sim_healthz)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
