"""The cluster and the repairs: ``setup``, ``reconcile``, ``codec-server``, and ``demo`` (the
embedded stack, :mod:`demo.stack`, which :func:`cli.main.main` hands its arguments to)."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from checkout.config import Settings
from checkout.contract import RECONCILE_SCHEDULE_ID
from checkout.search_attributes import ensure_reconcile_schedule
from checkout.search_attributes import register_search_attributes
from cli import render
from cli.common import connect
from cli.common import open_store


async def cmd_setup(_: argparse.Namespace, settings: Settings) -> int:
    client = await connect()
    added = await register_search_attributes(client)
    where = f"{client.service_client.config.target_host}, namespace {client.namespace}"
    if added:
        print(f"registered search attributes {', '.join(added)} on {where}")
    else:
        print(f"search attributes CheckoutStatus and AccountId already registered on {where}")
    if await ensure_reconcile_schedule(client, settings.task_queue):
        print(f"created schedule {RECONCILE_SCHEDULE_ID}: the reconciliation check, daily")
    else:
        print(f"schedule {RECONCILE_SCHEDULE_ID} already exists")
    return 0


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from activities.reconcile import Reconciler  # noqa: PLC0415 - only this command needs it
    from worker import build_activities  # noqa: PLC0415 - the worker's own wiring

    client = await connect()
    async with open_store(settings) as store:
        reconciler = Reconciler(
            client=client, store=store, activities=build_activities(settings, store)
        )
        report = await reconciler.run(fix=args.fix)
    if args.json:
        print(json.dumps({"findings": [f.model_dump(mode="json") for f in report.findings]}))
        return 0
    if not report.findings:
        print(f"checked {report.checked_orders} unfinished orders: nothing inconsistent")
        return 0
    print(render.reconcile_findings(report.findings))
    if not args.fix:
        print("repair with `checkout reconcile --fix` (safe to repeat)")
    elif failed := sum(f.action == "failed" for f in report.findings):
        print(
            f"{failed} repair(s) failed (DETAIL says why): remove the cause and run"
            " `checkout reconcile --fix` again; it resumes where it stopped"
        )
    return 0


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    from checkout import codec_server  # noqa: PLC0415 - only this command needs the HTTP server

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    await codec_server.serve(settings, host=args.host, port=args.port)
    return 0


def add_commands(commands: Any) -> None:
    setup = commands.add_parser(
        "setup", help="register the search attributes and the daily reconcile schedule"
    )
    setup.set_defaults(handler=cmd_setup)

    reconcile = commands.add_parser(
        "reconcile", help="find orders the store and Temporal disagree on (terminated runs)"
    )
    reconcile.add_argument("--fix", action="store_true", help="repair them (safe to repeat)")
    reconcile.add_argument("--json", action="store_true", help="print the findings as JSON")
    reconcile.set_defaults(handler=cmd_reconcile)

    # Only for --help: main() hands `checkout demo ...` to the stack before parsing.
    commands.add_parser(
        "demo",
        help="run the local stack with example orders (checkout demo --help)",
        add_help=False,
    )

    codec = commands.add_parser(
        "codec-server", help="decrypt payloads for the Web UI and the CLI (--codec-endpoint)"
    )
    codec.add_argument("--port", type=int, default=8081, help="port to listen on (8081)")
    codec.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this host only)"
    )
    codec.set_defaults(handler=cmd_codec_server)
