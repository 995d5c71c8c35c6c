"""The ``checkout`` command (docs/contract.md, section 4): submit and quote orders, look at
checkouts and act on them, load accounts, pause products, set up a cluster, and run the demo stack.

Everything reads the same environment as the worker (``TEMPORAL_*``, ``CHECKOUT_*``). Exit status:
0 on success; 1 with one line on stderr for any error; 2 for a usage error; 3 when ``submit
--wait`` saw the order end rejected or compensated (the result is still printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from checkout import cli_format as fmt
from checkout.catalog import Catalog, CatalogError, load_catalog
from checkout.client import connect_client
from checkout.config import ConfigError, Settings
from checkout.contract import (
    ACCOUNT_ID,
    CHECKOUT_STATUS,
    CHECKOUT_WORKFLOW,
    RECONCILE_SCHEDULE_ID,
    checkout_workflow_id,
    order_id_from_workflow_id,
)
from checkout.errors import CheckoutRejected
from checkout.models import (
    Account,
    AccountView,
    ApproveRequest,
    CheckoutResult,
    CheckoutState,
    CheckoutStatus,
    CompensateRequest,
    Order,
    RejectRequest,
    ResultStatus,
)
from checkout.order_input import describe_validation_error, find_card_number, parse_order
from checkout.process import exit_process
from checkout.quoting import Quote, quote
from checkout.search_attributes import ensure_reconcile_schedule, register_search_attributes
from checkout.store import Store
from checkout.summary import order_summary
from checkout.vies import VatVerifier

#: ``submit --wait`` saw the order end rejected or compensated.
EXIT_ORDER_NOT_COMPLETED = 3

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: A query against a stopped worker would wait for the server's own deadline (about a minute).
_QUERY_TIMEOUT = timedelta(seconds=15)


_Request = TypeVar("_Request", bound=BaseModel)


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit status 1."""


# --- shared plumbing ---------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def _temporal_target() -> str:
    try:
        return str(ClientConfig.load_client_connect_config().get("target_host", "localhost:7233"))
    except Exception:  # only for the error message: connect reports the real failure
        return "localhost:7233"


async def _client() -> Client:
    try:
        return await connect_client()
    except Exception as exc:  # the SDK raises RuntimeError whatever the cause
        text = str(exc)
        why = "connection refused" if "ConnectionRefused" in text else _one_line(text, 200)
        raise CliError(
            f"cannot reach Temporal at {_temporal_target()}: {why}"
            " (is the server running? set TEMPORAL_ADDRESS)"
        ) from None


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Store]:
    """The migrated store; the same schema step the worker takes at start."""
    store = Store.from_url(settings.database_url)
    try:
        try:
            await store.migrate()
        except (SQLAlchemyError, OSError) as exc:
            url = store.engine.url.render_as_string(hide_password=True)
            raise CliError(f"database {url}: {_one_line(str(exc).splitlines()[0])}") from None
        yield store
    finally:
        await store.close()


def _print_json(value: BaseModel) -> None:
    print(value.model_dump_json(indent=2))


async def _describe_ended(client: Client, order_id: str) -> str | None:
    """``Completed`` (its CheckoutStatus) when the checkout exists, None when it does not."""
    try:
        description = await client.get_workflow_handle(checkout_workflow_id(order_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    status = description.typed_search_attributes.get(CHECKOUT_STATUS)
    if status:
        return status
    return description.status.name.lower() if description.status else "unknown"


def _no_checkout(order_id: str) -> CliError:
    return CliError(f"no checkout for order {order_id} (workflow {checkout_workflow_id(order_id)})")


# --- submit ------------------------------------------------------------------------------------


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.order
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise CliError(f"{path}: an order is a JSON object, got {type(raw).__name__}")
    order_id = raw.get("order_id")
    if not isinstance(order_id, str) or not _IDENTIFIER.match(order_id):
        raise CliError(f"{path}: order_id: needs 1-64 of A-Z a-z 0-9 _ - (got {order_id!r})")
    card_field = find_card_number(raw)
    if card_field is not None:
        # Refused here so the number never reaches the cluster's history.
        raise CliError(
            f"{path}: {card_field}: looks like a card number; send a payment token, never card"
            " data (not submitted)"
        )
    workflow_id = checkout_workflow_id(order_id)
    client = await _client()
    try:
        handle = await client.start_workflow(
            CHECKOUT_WORKFLOW,
            raw,
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=CheckoutResult,
            # A finished checkout is never run again under the same order id; a running one
            # raises too, and we attach to it below.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=order_summary(raw),
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=CheckoutResult)
        print(
            f"order {order_id} was already submitted ({workflow_id}): not starting it again",
            file=sys.stderr,
        )
    if not args.wait:
        print(workflow_id)
        return 0
    try:
        result = await handle.result()
    except WorkflowFailureError as exc:
        raise CliError(f"checkout {workflow_id} failed: {_one_line(str(exc.cause))}") from None
    assert isinstance(result, CheckoutResult)
    _print_json(result)
    if result.status is not ResultStatus.COMPLETED:
        print(
            f"order {order_id} {fmt.outcome(result)}: {result.message or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_ORDER_NOT_COMPLETED
    return 0


# --- quote -------------------------------------------------------------------------------------


async def _quote(path: Path, settings: Settings, at: datetime) -> tuple[Order, Quote]:
    raw = _read_json(path)
    catalog = load_catalog(settings.catalog_path)
    order = parse_order(raw)
    verifier = VatVerifier(settings.vat_verification, vies_url=settings.vies_url)
    async with _store(settings) as store:
        return order, await quote(order, store, catalog, verifier, at)


async def cmd_quote(args: argparse.Namespace, settings: Settings) -> int:
    # The workflow's anchor is its start time to the second; quote the same way.
    at = datetime.now(UTC).replace(microsecond=0)
    try:
        order, quoted = await _quote(args.order, settings, at)
    except CheckoutRejected as exc:
        raise CliError(f"{exc.reason.value}: {exc.message}") from None
    account, plan = quoted.account, quoted.plan
    invoice = plan.invoice
    if args.json:
        _print_json(invoice)
        return 0
    if invoice.total <= 0:
        payment = "nothing is charged"
    elif plan.corporate:
        payment = "invoice (corporate account: an account manager approves the order)"
    else:
        payment = order.payment_method or fmt.NONE
    seats = sum(line.new_seats for line in invoice.lines)
    print(
        f"Checkout review: order {order.order_id} for {account.name}"
        f" ({account.account_id}, {account.country}), prices in {invoice.currency}"
    )
    print(f"Quoted at {fmt.timestamp(at)}; nothing has been charged or started.\n")
    print(fmt.invoice_lines(invoice))
    print()
    print(
        fmt.fields(
            [
                ("Billing period", f"starts now, {fmt.timestamp(at)}"),
                ("Seats to assign", str(seats)),
                ("Payment", payment),
            ]
        )
    )
    print()
    print(fmt.invoice_totals(invoice))
    return 0


# --- status and list ---------------------------------------------------------------------------


def _render_state(state: CheckoutState, workflow_id: str) -> str:
    attempts = ", ".join(f"{step}: {n}" for step, n in state.attempts.items()) or fmt.NONE
    pairs = [
        ("Order", f"{state.order_id or fmt.NONE} (workflow {workflow_id})"),
        ("Account", state.account_id or fmt.NONE),
        ("State", state.state.value),
        ("Current step", state.current_step or fmt.NONE),
        ("Steps done", ", ".join(state.steps_done) or fmt.NONE),
        ("Compensations", ", ".join(state.compensations_run) or fmt.NONE),
        ("Last error", state.last_error or fmt.NONE),
        ("Attempts", attempts),
    ]
    result = state.result
    if result is not None:
        pairs.append(("Result", fmt.outcome(result)))
        if result.message:
            pairs.append(("Message", result.message))
        pairs.append(("Total", fmt.total(result)))
        if result.charge:
            pairs.append(("Charge", fmt.payment(result.charge)))
        if result.refund:
            pairs.append(("Refund", fmt.payment(result.refund)))
        pairs.append(("E-mail", fmt.email_status(result)))
    return fmt.fields(pairs)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    order_id: str = args.order_id
    workflow_id = checkout_workflow_id(order_id)
    client = await _client()
    handle = client.get_workflow_handle(workflow_id)
    try:
        state = await handle.query("status", result_type=CheckoutState, rpc_timeout=_QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _no_checkout(order_id) from None
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.FAILED_PRECONDITION):
            # Queries are answered by a worker, also for finished checkouts.
            ended = await _describe_ended(client, order_id)
            raise CliError(
                f"order {order_id} is {ended}, but no worker answered the status query"
                f" ({_one_line(exc.message)}); is the worker running?"
            ) from None
        raise
    except WorkflowQueryFailedError as exc:
        raise CliError(f"status query of {workflow_id} failed: {_one_line(exc.message)}") from None
    assert isinstance(state, CheckoutState)
    state, note = await _after_hard_stop(handle, state, order_id, settings)
    if args.json:
        _print_json(state)
    else:
        print(_render_state(state, workflow_id))
        if note:
            print(note)
    return 0


_RESULT_STATE = {
    ResultStatus.COMPLETED: CheckoutStatus.COMPLETED,
    ResultStatus.REJECTED: CheckoutStatus.REJECTED,
    ResultStatus.COMPENSATED: CheckoutStatus.COMPENSATED,
}


async def _after_hard_stop(
    handle: WorkflowHandle[Any, Any], state: CheckoutState, order_id: str, settings: Settings
) -> tuple[CheckoutState, str | None]:
    """A terminated (or failed) run's query shows where it stopped, not how the order ended:
    the store knows, once `checkout reconcile --fix` repaired it."""
    description = await handle.describe()
    stopped = description.status not in (None, WorkflowExecutionStatus.RUNNING) and (
        description.status is not WorkflowExecutionStatus.COMPLETED
    )
    if not stopped or state.result is not None:
        return state, None
    assert description.status is not None
    how = description.status.name.lower()
    async with _store(settings) as store:
        record = await store.order(order_id)
    if record is None or record.result is None:
        return state, (
            f"The run was {how} in {state.state.value} and nothing ran its compensation:"
            " repair it with `checkout reconcile --fix`."
        )
    result = CheckoutResult.model_validate_json(record.result)
    repaired = state.model_copy(update={"state": _RESULT_STATE[result.status], "result": result})
    return repaired, f"The run was {how}; `checkout reconcile --fix` repaired the order."


async def cmd_list(args: argparse.Namespace, _: Settings) -> int:
    query = f"WorkflowType = '{CHECKOUT_WORKFLOW}'"
    if args.status:
        query += f' AND CheckoutStatus = "{args.status}"'
    if args.account:
        if not _IDENTIFIER.match(args.account):
            raise CliError(f"--account: {args.account!r} is not an account id")
        query += f' AND AccountId = "{args.account}"'
    client = await _client()
    rows: list[list[str]] = []
    try:
        async for execution in client.list_workflows(query, limit=args.limit):
            attributes = execution.typed_search_attributes
            status = attributes.get(CHECKOUT_STATUS) or (
                execution.status.name.lower() if execution.status else fmt.NONE
            )
            rows.append(
                [
                    order_id_from_workflow_id(execution.id) or execution.id,
                    status,
                    attributes.get(ACCOUNT_ID) or fmt.NONE,
                    fmt.timestamp(execution.start_time),
                ]
            )
    except RPCError as exc:
        hint = " (run `checkout setup` to register them)" if "not defined" in exc.message else ""
        raise CliError(f"cannot list checkouts: {_one_line(exc.message)}{hint}") from None
    if not rows:
        print(f"no checkouts match {query}")
        return 0
    print(fmt.table(["ORDER", "STATUS", "ACCOUNT", "STARTED"], rows))
    return 0


# --- operator updates --------------------------------------------------------------------------


def _refusal(cause: BaseException) -> str:
    while isinstance(cause, ApplicationError) and cause.cause is not None:
        cause = cause.cause
    return _one_line(cause.message if isinstance(cause, ApplicationError) else str(cause))


async def _update(order_id: str, name: str, arg: BaseModel | None = None) -> int:
    client = await _client()
    handle = client.get_workflow_handle(checkout_workflow_id(order_id))
    try:
        if arg is None:
            state = await handle.execute_update(name, result_type=CheckoutState)
        else:
            state = await handle.execute_update(name, arg, result_type=CheckoutState)
    except WorkflowUpdateFailedError as exc:
        raise CliError(f"{name} refused for order {order_id}: {_refusal(exc.cause)}") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            ended = await _describe_ended(client, order_id)
            if ended is None:
                raise _no_checkout(order_id) from None
            raise CliError(
                f"{name} refused for order {order_id}: the checkout has ended ({ended})"
            ) from None
        raise CliError(f"{name} refused for order {order_id}: {_one_line(exc.message)}") from None
    assert isinstance(state, CheckoutState)
    line = f"{name}: order {order_id} is {state.state.value}"
    if state.result is not None:
        line += f" ({fmt.outcome(state.result)})"
    print(line)
    return 0


def _request(model: type[_Request], **values: Any) -> _Request:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc).replace("approver", "--by")) from None


async def cmd_retry(args: argparse.Namespace, _: Settings) -> int:
    return await _update(args.order_id, "retry_provisioning")


async def cmd_compensate(args: argparse.Namespace, _: Settings) -> int:
    request = _request(CompensateRequest, reason=args.reason)
    return await _update(args.order_id, "compensate", request)


async def cmd_approve(args: argparse.Namespace, _: Settings) -> int:
    return await _update(args.order_id, "approve", _request(ApproveRequest, approver=args.by))


async def cmd_reject(args: argparse.Namespace, _: Settings) -> int:
    request = _request(RejectRequest, approver=args.by, reason=args.reason)
    return await _update(args.order_id, "reject", request)


# --- accounts ----------------------------------------------------------------------------------


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


async def cmd_accounts_import(args: argparse.Namespace, settings: Settings) -> int:
    accounts = parse_accounts(_read_json(args.file), str(args.file))
    async with _store(settings) as store:
        await store.import_accounts(accounts)
    names = ", ".join(a.account_id for a in accounts)
    print(f"imported {len(accounts)} account{'s' if len(accounts) != 1 else ''}: {names}")
    return 0


def _render_account(view: AccountView) -> str:
    header = fmt.fields(
        [
            ("Account", f"{view.account_id}  {view.name}"),
            ("Billing e-mail", view.billing_email),
            ("Country", view.country),
            ("Locale", view.locale),
            ("Currency", view.currency),
            ("Time zone", view.timezone),
            ("Corporate", "yes" if view.corporate else "no"),
            ("Payment customer", view.payment_customer_id or fmt.NONE),
        ]
    )
    subscriptions = [
        [
            s.product,
            s.plan,
            str(s.seats),
            s.status.value,
            s.billing_cycle.value if s.billing_cycle else fmt.NONE,
            f"{fmt.day(s.current_period_start)} to {fmt.day(s.current_period_end)}",
            fmt.day(s.trial_end) if s.trial_end else fmt.NONE,
            fmt.money(s.period_amount, view.currency),
        ]
        for s in view.subscriptions
    ]
    payments = [
        [
            p.id,
            p.kind,
            fmt.money(p.amount, p.currency),
            p.status + (f" ({p.failure_code})" if p.failure_code else ""),
            p.order_id or fmt.NONE,
            fmt.timestamp(p.created_at),
        ]
        for p in view.payments
    ]
    parts = [header, "", "Subscriptions"]
    parts.append(
        fmt.table(
            ["PRODUCT", "PLAN", "SEATS", "STATUS", "CYCLE", "PERIOD", "TRIAL END", "PAID (NET)"],
            subscriptions,
            right={2, 7},
        )
        if subscriptions
        else "  none"
    )
    parts += ["", "Payments"]
    parts.append(
        fmt.table(["ID", "KIND", "AMOUNT", "STATUS", "ORDER", "CREATED"], payments, right={2})
        if payments
        else "  none"
    )
    return "\n".join(parts)


async def cmd_accounts_show(args: argparse.Namespace, settings: Settings) -> int:
    async with _store(settings) as store:
        view = await store.account_view(args.account_id)
    if view is None:
        raise CliError(f"no account {args.account_id}")
    if args.json:
        _print_json(view)
    else:
        print(_render_account(view))
    return 0


# --- products ----------------------------------------------------------------------------------


def _product(catalog: Catalog, code: str) -> str:
    product = catalog.products.get(code)
    if product is None:
        known = ", ".join(sorted(catalog.products))
        raise CliError(f"unknown product {code!r} (the catalog has: {known})")
    return product.name


async def _set_paused(args: argparse.Namespace, settings: Settings, paused: bool) -> int:
    name = _product(load_catalog(settings.catalog_path), args.product)
    async with _store(settings) as store:
        await store.set_paused(args.product, paused)
    if paused:
        print(
            f"paused {args.product} ({name}): its provisioning fails as in an outage; orders"
            f" park in NeedsAttention after {settings.provisioning_max_attempts} attempts"
        )
    else:
        print(f"resumed {args.product} ({name}): parked orders continue with `checkout retry`")
    return 0


async def cmd_products_pause(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, True)


async def cmd_products_resume(args: argparse.Namespace, settings: Settings) -> int:
    return await _set_paused(args, settings, False)


# --- setup -------------------------------------------------------------------------------------


async def cmd_setup(_: argparse.Namespace, settings: Settings) -> int:
    client = await _client()
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


# --- reconcile ---------------------------------------------------------------------------------


async def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from activities.reconcile import Reconciler  # noqa: PLC0415 - only this command needs it
    from worker import build_activities  # noqa: PLC0415 - the worker's own wiring

    client = await _client()
    async with _store(settings) as store:
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
    rows = [
        [
            f.order_id,
            f.problem,
            fmt.NONE if f.charged is None else str(f.charged),
            fmt.NONE if f.refunded is None else str(f.refunded),
            f.action or ("no" if not f.fixed else "yes"),
            f.detail,
        ]
        for f in report.findings
    ]
    print(fmt.table(["ORDER", "PROBLEM", "CHARGED", "REFUNDED", "FIXED", "DETAIL"], rows))
    if not args.fix:
        print("repair with `checkout reconcile --fix` (safe to repeat)")
    return 0


# --- codec server ------------------------------------------------------------------------------


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    from checkout import codec_server  # noqa: PLC0415 - only this command needs the HTTP server

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    await codec_server.serve(settings, host=args.host, port=args.port)
    return 0


def _add_codec_command(commands: Any) -> None:
    codec = commands.add_parser(
        "codec-server", help="decrypt payloads for the Web UI and the CLI (--codec-endpoint)"
    )
    codec.add_argument("--port", type=int, default=8081, help="port to listen on (8081)")
    codec.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this host only)"
    )
    codec.set_defaults(handler=cmd_codec_server)


# --- the parser --------------------------------------------------------------------------------


def _add_order_commands(commands: Any) -> None:
    submit = commands.add_parser("submit", help="start the checkout of an order file")
    submit.add_argument("order", type=Path, metavar="ORDER.json")
    submit.add_argument("--wait", action="store_true", help="wait and print the CheckoutResult")
    submit.set_defaults(handler=cmd_submit)

    quote = commands.add_parser("quote", help="the checkout review, without starting anything")
    quote.add_argument("order", type=Path, metavar="ORDER.json")
    quote.add_argument("--json", action="store_true", help="print the invoice as JSON")
    quote.set_defaults(handler=cmd_quote)

    status = commands.add_parser("status", help="where a checkout is (the status query)")
    status.add_argument("order_id", metavar="ORDER_ID")
    status.add_argument("--json", action="store_true", help="print the CheckoutState as JSON")
    status.set_defaults(handler=cmd_status)

    listing = commands.add_parser("list", help="checkouts, newest first")
    statuses = [s.value for s in CheckoutStatus]
    listing.add_argument(
        "--status", choices=statuses, metavar="STATUS", help=f"only this one: {', '.join(statuses)}"
    )
    listing.add_argument("--account", metavar="ACCOUNT_ID", help="only this account's checkouts")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.set_defaults(handler=cmd_list)

    retry = commands.add_parser("retry", help="run provisioning again (NeedsAttention only)")
    retry.add_argument("order_id", metavar="ORDER_ID")
    retry.set_defaults(handler=cmd_retry)

    compensate = commands.add_parser("compensate", help="undo everything and end Compensated")
    compensate.add_argument("order_id", metavar="ORDER_ID")
    compensate.add_argument("--reason", required=True, metavar="R")
    compensate.set_defaults(handler=cmd_compensate)

    approve = commands.add_parser("approve", help="approve a corporate order")
    approve.add_argument("order_id", metavar="ORDER_ID")
    approve.add_argument("--by", required=True, metavar="NAME")
    approve.set_defaults(handler=cmd_approve)

    reject = commands.add_parser("reject", help="reject a corporate order")
    reject.add_argument("order_id", metavar="ORDER_ID")
    reject.add_argument("--by", required=True, metavar="NAME")
    reject.add_argument("--reason", required=True, metavar="R")
    reject.set_defaults(handler=cmd_reject)


def _add_admin_commands(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="load and show accounts").add_subparsers(
        dest="accounts_command", required=True, metavar="ACTION"
    )
    load = accounts.add_parser("import", help="create or replace accounts from a JSON list")
    load.add_argument("file", type=Path, metavar="FILE.json")
    load.set_defaults(handler=cmd_accounts_import)
    show = accounts.add_parser("show", help="an account with its subscriptions and payments")
    show.add_argument("account_id", metavar="ACCOUNT_ID")
    show.add_argument("--json", action="store_true", help="print the account as JSON")
    show.set_defaults(handler=cmd_accounts_show)

    products = commands.add_parser("products", help="pause or resume provisioning").add_subparsers(
        dest="products_command", required=True, metavar="ACTION"
    )
    pause = products.add_parser("pause", help="make provisioning of a product fail (outage)")
    pause.add_argument("product", metavar="PRODUCT")
    pause.set_defaults(handler=cmd_products_pause)
    resume = products.add_parser("resume", help="let provisioning of a product work again")
    resume.add_argument("product", metavar="PRODUCT")
    resume.set_defaults(handler=cmd_products_resume)

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

    commands.add_parser(
        "demo",
        help="run the local stack with example orders (checkout demo --help)",
        add_help=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="checkout",
        description="Durable checkout for Kestrel Cloud: orders, accounts and operators' actions.",
        epilog="Exit status: 0 ok, 1 error (one line on stderr), 2 usage, 3 the order ended"
        " rejected or compensated (submit --wait). Connection: TEMPORAL_ADDRESS,"
        " TEMPORAL_NAMESPACE; store: CHECKOUT_DATABASE_URL.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_order_commands(commands)
    _add_admin_commands(commands)
    _add_codec_command(commands)
    return parser


async def run(argv: Sequence[str]) -> int:
    """Parse and run one command inside a running event loop (what the tests call)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return int(exc.code or 0)
    try:
        settings = Settings.from_env()
        code: int = await args.handler(args, settings)
    except (CliError, ConfigError, CatalogError) as exc:
        print(f"checkout: {_one_line(str(exc), 2000)}", file=sys.stderr)
        return 1
    except RPCError as exc:
        print(f"checkout: Temporal: {_one_line(exc.message)}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"checkout: database: {_one_line(str(exc).splitlines()[0])}", file=sys.stderr)
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
    if argv is None:
        exit_process(code)
    return code


if __name__ == "__main__":
    main()
