"""Accounts: ``accounts import`` and ``accounts show``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from checkout.account_checks import account_problems
from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.config import Settings
from checkout.echo import quote
from checkout.models import Account
from checkout.order_input import validation_errors
from cli import render
from cli.common import CliError
from cli.common import open_store
from cli.common import print_json
from cli.common import read_json


def _account_lines(text: str) -> list[int] | None:
    """The line each element of a top-level JSON list starts on, or None when the text is not
    one (read_json has already said whether it is JSON at all)."""
    decoder = json.JSONDecoder()
    whitespace = " \t\r\n"
    index = len(text) - len(text.lstrip(whitespace))
    if not text.startswith("[", index):
        return None
    index += 1
    lines: list[int] = []
    while True:
        while index < len(text) and text[index] in whitespace + ",":
            index += 1
        if index >= len(text) or text[index] == "]":
            return lines
        lines.append(text.count("\n", 0, index) + 1)
        try:
            _, index = decoder.raw_decode(text, index)
        except ValueError:
            return None


def _read_account_file(path: Path) -> tuple[Any, list[int] | None]:
    """The file's JSON and the line each account starts on."""
    raw = read_json(path)
    # read_json has read it as UTF-8 JSON already; the positions only name the account.
    return raw, _account_lines(path.read_text(encoding="utf-8"))


def _invalid(source: str, where: str, field: str, problem: str, more: int) -> CliError:
    also = f" (and {more} more problem{'s' if more != 1 else ''})" if more else ""
    return CliError(f"{source}: {where}, field {quote(field)}: {problem}{also}")


def parse_accounts(
    raw: Any, source: str, catalog: Catalog | None = None, lines: Sequence[int] | None = None
) -> list[Account]:
    """The account file's list, or a CliError naming the account (its position in the list and
    the line it starts on, when known) and the field: the shape of each account, then that its
    time zone, currency (one the catalog prices in), country, locale and texts are usable."""
    if not isinstance(raw, list):
        raise CliError(f"{source}: expected a JSON list of accounts, got {type(raw).__name__}")
    catalog = catalog or load_catalog()
    accounts: list[Account] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        line = lines[index] if lines is not None and index < len(lines) else None
        where = f"account {index + 1}" + (f" (line {line})" if line is not None else "")
        if not isinstance(item, dict):
            raise CliError(f"{source}: {where}: expected a JSON object, got {type(item).__name__}")
        try:
            account = Account.model_validate(item)
        except ValidationError as exc:
            errors = validation_errors(exc)
            raise _invalid(source, where, *errors[0], len(errors) - 1) from None
        problems = account_problems(account, catalog)
        if problems:
            raise _invalid(source, where, *problems[0], len(problems) - 1)
        if account.account_id in seen:
            raise CliError(
                f"{source}: {where}: account_id {quote(account.account_id)} appears twice in the"
                " file"
            )
        seen.add(account.account_id)
        accounts.append(account)
    return accounts


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    raw, lines = _read_account_file(args.file)
    accounts = parse_accounts(raw, str(args.file), load_catalog(settings.catalog_path), lines)
    # Every account is checked before any is written; the import is one transaction.
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
