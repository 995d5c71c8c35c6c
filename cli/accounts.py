"""Accounts: ``accounts import`` and ``accounts show``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from checkout.config import Settings
from checkout.echo import quote
from checkout.models import Account
from checkout.order_input import describe_validation_error
from cli import render
from cli.common import CliError, open_store, print_json, read_json


def parse_accounts(raw: Any, source: str) -> list[Account]:
    """The account file's list, or a CliError naming the account and the field."""
    if not isinstance(raw, list):
        raise CliError(f"{source}: expected a JSON list of accounts, got {type(raw).__name__}")
    accounts: list[Account] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        name = item.get("account_id") if isinstance(item, dict) else None
        label = f"account {name}" if isinstance(name, str) and name else f"account #{index + 1}"
        try:
            account = Account.model_validate(item)
        except ValidationError as exc:
            raise CliError(f"{source}: {label}: {describe_validation_error(exc)}") from None
        if account.account_id in seen:
            raise CliError(f"{source}: {label}: account_id appears twice in the file")
        seen.add(account.account_id)
        accounts.append(account)
    return accounts


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    accounts = parse_accounts(read_json(args.file), str(args.file))
    async with open_store(settings) as store:
        await store.import_accounts(accounts)
    names = ", ".join(a.account_id for a in accounts)
    print(f"imported {len(accounts)} account{'s' if len(accounts) != 1 else ''}: {names}")
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        view = await store.account_view(args.account_id)
    if view is None:
        raise CliError(f"no account {quote(args.account_id)}")
    if args.json:
        print_json(view)
    else:
        print(render.account_view(view))
    return 0


def add_commands(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="load and show accounts").add_subparsers(
        dest="accounts_command", required=True, metavar="ACTION"
    )
    load = accounts.add_parser("import", help="create or replace accounts from a JSON list")
    load.add_argument("file", type=Path, metavar="FILE.json")
    load.set_defaults(handler=cmd_import)
    show = accounts.add_parser("show", help="an account with its subscriptions and payments")
    show.add_argument("account_id", metavar="ACCOUNT_ID")
    show.add_argument("--json", action="store_true", help="print the account as JSON")
    show.set_defaults(handler=cmd_show)
