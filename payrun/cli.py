"""`payrun`: the one command (docs/commands.md). Logs go to stderr; stdout carries only answers."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid

from shared import logging as payrun_logging
from shared.errors import PayrunError
from shared.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payrun", description="Pay salaries through IntaSend from an outbox."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("migrate", help="apply pending sql/ migrations to DATABASE_URL")
    sub.add_parser("api", help="serve the HTTP API on API_HOST:API_PORT")
    sub.add_parser("dispatcher", help="run one dispatcher until SIGTERM/SIGINT")
    employer = sub.add_parser("employer", help="manage employers")
    employer_sub = employer.add_subparsers(dest="employer_command", required=True, metavar="ACTION")
    create = employer_sub.add_parser("create", help="create an employer and print its API key once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--wallet-id", help="the employer's own IntaSend wallet (default: INTASEND_WALLET_ID)"
    )
    set_wallet = employer_sub.add_parser(
        "set-wallet", help="change the IntaSend wallet an employer's next payrolls are paid from"
    )
    set_wallet.add_argument("--employer", required=True, metavar="ID", help="the employer's id")
    which = set_wallet.add_mutually_exclusive_group(required=True)
    which.add_argument("--wallet-id", help="the employer's own IntaSend wallet")
    which.add_argument("--clear", action="store_true", help="back to the default wallet (INTASEND_WALLET_ID)")
    callback = employer_sub.add_parser(
        "set-callback",
        help="send the employer's payroll events to a URL, signed with a secret printed once (or --clear)",
    )
    callback.add_argument("employer", nargs="?", metavar="EMPLOYER", help="the employer's id")
    callback.add_argument("--employer", dest="employer_option", metavar="ID", help="the same, as an option")
    url_or_clear = callback.add_mutually_exclusive_group(required=True)
    url_or_clear.add_argument("--url", help="an http(s) URL the events are POSTed to")
    url_or_clear.add_argument("--clear", action="store_true", help="send no more events")
    callback.add_argument(
        "--keep-secret", action="store_true", help="change the URL only, keep signing with the current secret"
    )
    operator = sub.add_parser("operator", help="manage operators (who settle NEEDS_REVIEW items)")
    operator_sub = operator.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    create_operator = operator_sub.add_parser("create", help="create an operator and print its key once")
    create_operator.add_argument("--name", required=True)
    sub.add_parser(
        "sim", help="serve the bundled IntaSend simulator (see `payrun sim --help`)", add_help=False
    )
    dev = sub.add_parser(
        "dev", help="run everything on one machine for trying payrun out (what `make run` runs)"
    )
    dev.add_argument(
        "--verbose",
        action="store_true",
        help="show every log line, one per request and poll too (or PAYRUN_DEV_VERBOSE=1)",
    )
    return parser


async def _migrate(settings: Settings) -> None:
    from shared import db, migrate

    conn = await db.connect(settings.require_database_url())
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    print(
        json.dumps(
            {"applied": [f"{m.version:04d}_{m.name}" for m in applied], "version": migrate.latest_version()}
        )
    )


async def _create_employer(settings: Settings, name: str, wallet_id: str | None) -> None:
    from shared import db, employers, migrate

    conn = await db.connect(settings.require_database_url())
    try:
        await migrate.ensure_current(conn)
        created = await employers.create(conn, name, wallet_id)
    finally:
        await conn.close()
    print(json.dumps(created))


async def _set_wallet(settings: Settings, employer_id: uuid.UUID, wallet_id: str | None) -> None:
    from shared import db, employers, migrate

    conn = await db.connect(settings.require_database_url())
    try:
        await migrate.ensure_current(conn)
        changed = await employers.set_wallet(conn, employer_id, wallet_id)
    finally:
        await conn.close()
    print(json.dumps(changed))


async def _set_callback(
    settings: Settings, employer_id: uuid.UUID, url: str | None, *, keep_secret: bool
) -> None:
    from shared import db, events, migrate

    conn = await db.connect(settings.require_database_url())
    try:
        await migrate.ensure_current(conn)
        if url is None:
            previous = await events.clear_callback(conn, employer_id)
            answer: dict[str, object] = {
                "employer_id": str(employer_id),
                "url": None,
                "previous_url": previous,
            }
        else:
            answer = dict(await events.set_callback(conn, employer_id, url, keep_secret=keep_secret))
    finally:
        await conn.close()
    print(json.dumps(answer))


async def _create_operator(settings: Settings, name: str) -> None:
    from shared import db, migrate, operators

    conn = await db.connect(settings.require_database_url())
    try:
        await migrate.ensure_current(conn)
        created = await operators.create(conn, name)
    finally:
        await conn.close()
    print(json.dumps(created))


def _employer_id(raw: str, how: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise PayrunError(f"{how} {raw!r} is not an employer id (a UUID)") from None


def _employer(args: argparse.Namespace, settings: Settings) -> None:
    from shared import employers, events

    if args.employer_command == "create":
        name = args.name.strip()
        if not name:
            raise PayrunError("--name must not be empty")
        wallet_id = None if args.wallet_id is None else employers.check_wallet_id(args.wallet_id)
        asyncio.run(_create_employer(settings, name, wallet_id))
    elif args.employer_command == "set-wallet":
        employer_id = _employer_id(args.employer, "--employer")
        wallet_id = None if args.clear else employers.check_wallet_id(args.wallet_id)
        asyncio.run(_set_wallet(settings, employer_id, wallet_id))
    elif args.employer_command == "set-callback":
        if (args.employer is None) == (args.employer_option is None):
            raise PayrunError("name the employer once: EMPLOYER or --employer ID")
        employer_id = _employer_id(args.employer or args.employer_option, "EMPLOYER")
        if args.clear and args.keep_secret:
            raise PayrunError("--keep-secret goes with --url, not --clear")
        url = None if args.clear else events.check_url(args.url)
        asyncio.run(_set_callback(settings, employer_id, url, keep_secret=args.keep_secret))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        from simulator.__main__ import main as sim_main

        sim_main(argv[1:])
        return
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        payrun_logging.configure(settings.log_level, settings.log_format)
        if args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "employer":
            _employer(args, settings)
        elif args.command == "operator":
            from shared import operators

            asyncio.run(_create_operator(settings, operators.check_name(args.name)))
        elif args.command == "api":
            from api_service.__main__ import serve

            serve(settings)
        elif args.command == "dispatcher":
            from dispatcher_service.__main__ import run

            run(settings)
        elif args.command == "dev":
            from payrun.dev import run_dev

            run_dev(settings, verbose=args.verbose)
    except PayrunError as exc:
        what = args.command
        if args.command in ("employer", "operator"):
            what += " " + getattr(args, f"{args.command}_command")
        print(f"payrun {what}: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # connection refused, unknown host, socket missing
        print(f"payrun {args.command}: cannot reach the database: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
