"""``payrun sim`` / ``python -m simulator``: serve the IntaSend simulator until SIGTERM or SIGINT.

Configuration is environment-only, like the rest of payrun; ``--help`` lists every ``SIM_*`` variable from
:data:`simulator.config.ENV_VARS`, so the help text cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import textwrap

from aiohttp import web

from simulator.app import SIM, make_app
from simulator.config import ENV_VARS, SimConfig, SimConfigError
from simulator.persistence import StateFileError

DESCRIPTION = """\
Serve a simulator of IntaSend's Send Money API (initiate, approve, status, wallets) for development,
tests and benchmarks. It moves no real money: it keeps a ledger of what it would have paid.

Any "Authorization: Bearer <key>" is accepted. A batch holds 1 to 5000 transactions (IntaSend's tested
figure); more are refused with a 400. Inspection routes (no auth): GET /sim/ledger (each transaction
processed, and whether money moved), GET /sim/stats (requests, 429s, max_in_any_window, second_approves,
faults), POST /sim/reset, GET /sim/healthz."""


def _epilog() -> str:
    width = max(len(name) for name, _, _ in ENV_VARS)
    lines = ["environment variables (all optional):"]
    indent = " " * (width + 4)
    for name, default, meaning in ENV_VARS:
        # A no-break space keeps "[default: X]" on one line; it is turned back into a space after wrapping.
        text = textwrap.fill(
            f"{meaning} [default:\u00a0{default}]",
            width=100,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        ).replace("\u00a0", " ")
        lines.append(f"  {name:<{width}}  {text[len(indent) :]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="payrun sim",
        description=DESCRIPTION,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


async def serve(config: SimConfig) -> None:
    """Run until a signal; a short shutdown timeout because "hung" requests are released on shutdown."""
    app = make_app(config)
    runner = web.AppRunner(
        app, handle_signals=False, handler_cancellation=True, shutdown_timeout=2.0, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:  # the port is taken: one line, not a traceback
        await runner.cleanup()
        where = f"{config.host}:{config.port}"
        raise SystemExit(f"payrun sim: cannot listen on {where}: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host, port = runner.addresses[0][:2]
    print(
        f"payrun sim: IntaSend SIMULATOR listening on http://{host}:{port} - no real money moves",
        file=sys.stderr,
        flush=True,
    )
    if config.state_file is not None:
        batches = len(app[SIM].state.batches)
        print(
            f"payrun sim: state kept in {config.state_file} ({batches} batches)", file=sys.stderr, flush=True
        )
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    print("payrun sim: stopped", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = SimConfig.from_env()
    except SimConfigError as exc:
        parser.exit(2, f"payrun sim: error: {exc}\n")
    try:
        asyncio.run(serve(config))
    except StateFileError as exc:
        parser.exit(2, f"payrun sim: error: {exc}\n")


if __name__ == "__main__":
    main()
