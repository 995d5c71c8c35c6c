"""The e-mail outbox: ``emails list`` (what was sent, is pending or failed) and ``emails resend``
(one e-mail of an order sent again, exactly as it went out before, with its Message-ID).

Both work on the store alone (no Temporal): the outbox is the record of what was sent. A resend
goes through the SMTP server of the same ``CHECKOUT_SMTP_*`` settings the worker uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import email
import email.policy
from email.message import EmailMessage
from typing import Any

from pydantic import BaseModel

from checkout.config import Settings
from checkout.mail import SmtpMailer
from checkout.models import EmailPurpose
from checkout.models import UtcDateTime
from checkout.store import OutboxEntry
from checkout.store import Store
from cli import render
from cli.common import CliError
from cli.common import one_line
from cli.common import open_store
from cli.common import print_json

STATUSES = ("sent", "pending", "failed")
PURPOSES = tuple(p.value for p in EmailPurpose)


class ListedEmail(BaseModel):
    """One row of ``emails list --json``."""

    order_id: str
    purpose: str
    status: str
    message_id: str
    to: str
    attempts: int
    last_error: str | None
    sent_at: UtcDateTime | None


class EmailList(BaseModel):
    """``emails list --json``: the outbox, oldest first."""

    emails: list[ListedEmail]


def _listed(entry: OutboxEntry) -> ListedEmail:
    """The entry's fields under their own names, but the recipient as ``to``."""
    return ListedEmail.model_validate({**dataclasses.asdict(entry), "to": entry.recipient})


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        entries = await store.outbox(status=args.status)
    if args.json:
        print_json(EmailList(emails=[_listed(e) for e in entries]))
    elif not entries:
        print("no e-mails" + (f" {args.status}" if args.status else " in the outbox"))
    else:
        print(render.email_list(entries))
    return 0


async def _entry(store: Store, order_id: str, purpose: str | None) -> OutboxEntry:
    """The e-mail to resend: the one of ``purpose``, or the order's only one. With several and
    no ``--purpose``, nothing is guessed: a second copy of the wrong e-mail confuses a customer
    more than a command that asks which one."""
    if purpose is not None and purpose not in PURPOSES:
        raise CliError(f"unknown purpose {purpose!r} (purposes: {', '.join(PURPOSES)})")
    entries = await store.outbox(order_id)
    if not entries:
        raise CliError(f"no e-mail of order {order_id} in the outbox")
    if purpose is None:
        if len(entries) > 1:
            have = ", ".join(e.purpose for e in entries)
            raise CliError(
                f"order {order_id} has several e-mails ({have}): choose one with --purpose"
            )
        return entries[0]
    for entry in entries:
        if entry.purpose == purpose:
            return entry
    have = ", ".join(e.purpose for e in entries)
    raise CliError(f"order {order_id} has no {purpose} e-mail (it has: {have})")


async def cmd_resend(args: argparse.Namespace, settings: Settings) -> int:
    async with open_store(settings) as store:
        entry = await _entry(store, args.order_id, args.purpose)
        what = f"the {entry.purpose} e-mail of order {args.order_id}"
        text = await store.outbox_message(entry.order_id, entry.purpose)
        if text is None:
            raise CliError(
                f"{what} has no kept copy to resend (never tried, or recorded before the outbox"
                f" kept copies); it is {entry.status}"
            )
        message = email.message_from_string(text, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        try:
            await SmtpMailer(settings).send(message)
        except Exception as exc:  # whatever the SMTP client raises: recorded, then reported
            error = f"{type(exc).__name__}: {exc}"
            await store.outbox_resent(entry.order_id, entry.purpose, sent=False, error=error)
            raise CliError(
                f"{what} could not be sent ({one_line(error, 200)}); it stays {entry.status}"
            ) from None
        done = await store.outbox_resent(entry.order_id, entry.purpose, sent=True)
    if args.json:
        print_json(_listed(done))  # the row `emails list --json` shows for it
    else:
        print(render.email_resent(done))
    return 0


def add_commands(commands: Any) -> None:
    emails = commands.add_parser(
        "emails", help="the e-mail outbox: list what was sent, is pending or failed; resend"
    ).add_subparsers(dest="emails_command", required=True, metavar="ACTION")
    listing = emails.add_parser("list", help="the outbox's e-mails, oldest first")
    listing.add_argument(
        "--status", choices=STATUSES, metavar="S", help=f"only this one: {', '.join(STATUSES)}"
    )
    listing.add_argument("--json", action="store_true", help="print the e-mails as JSON")
    listing.set_defaults(handler=cmd_list)
    resend = emails.add_parser(
        "resend", help="send one e-mail of an order again, with the same Message-ID"
    )
    resend.add_argument("order_id", metavar="ORDER_ID")
    resend.add_argument(
        "--purpose",
        metavar="P",
        help=f"which e-mail ({', '.join(PURPOSES)}); needed when the order has several",
    )
    resend.add_argument(
        "--json", action="store_true", help="print the e-mail's outbox row as JSON once sent"
    )
    resend.set_defaults(handler=cmd_resend)
