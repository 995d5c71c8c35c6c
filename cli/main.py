"""The ``checkout`` program: the parser, one command run inside an event loop, and the process.

Everything reads the same environment as the worker (``TEMPORAL_*``, ``CHECKOUT_*``). Exit status:
0 on success; 1 with one line on stderr for any error; 2 for a usage error; 3 when ``submit
--wait`` saw the order end rejected or compensated (the result is still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError
from temporalio.service import RPCError

from checkout.catalog import CatalogError
from checkout.config import ConfigError
from checkout.config import Settings
from checkout.process import finish
from cli import accounts
from cli import admin
from cli import emails
from cli import orders
from cli import products
from cli.common import EXIT_ORDER_NOT_COMPLETED
from cli.common import CliError
from cli.common import Handler
from cli.common import one_line

__all__ = ["EXIT_ORDER_NOT_COMPLETED", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout",
        description="Durable checkout for Kestrel Cloud: orders, accounts and operators' actions.",
        epilog="Exit status: 0 ok, 1 error (one line on stderr), 2 usage, 3 the order ended"
        " rejected or compensated (submit --wait). Connection: TEMPORAL_ADDRESS,"
        " TEMPORAL_NAMESPACE; store: CHECKOUT_DATABASE_URL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    orders.add_commands(commands)
    accounts.add_commands(commands)
    products.add_commands(commands)
    emails.add_commands(commands)
    admin.add_commands(commands)
    return parser


async def run(argv: Sequence[str]) -> int:
    """Parse and run one command inside a running event loop (what the tests call)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return int(exc.code or 0)
    handler: Handler = args.handler
    try:
        settings = Settings.from_env()
        code = await handler(args, settings)
    except (CliError, ConfigError, CatalogError) as exc:
        print(f"checkout: {one_line(str(exc), 2000)}", file=sys.stderr)
        return 1
    except RPCError as exc:
        print(f"checkout: Temporal: {one_line(exc.message)}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"checkout: database: {one_line(str(exc).splitlines()[0])}", file=sys.stderr)
        return 1
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The program. With ``argv`` (a caller in this process) it returns the exit status; without,
    it owns the process and ends it with that status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        from demo import stack  # noqa: PLC0415 - only the demo needs the worker and SMTP

        code = stack.main(args[1:], prog="checkout demo")
    else:
        try:
            code = asyncio.run(run(args))
        except KeyboardInterrupt:
            print("checkout: interrupted", file=sys.stderr)
            code = 130
    return finish(code, owns_process=argv is None)


if __name__ == "__main__":
    main()
