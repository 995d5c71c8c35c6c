"""Orders: ``submit``, ``quote``, ``status``, ``list`` and the operators' updates ``retry``,
``compensate``, ``approve`` and ``reject``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Awaitable
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any
from typing import TypeVar

from pydantic import BaseModel
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.client import WithStartWorkflowOperation
from temporalio.client import WorkflowExecutionStatus
from temporalio.client import WorkflowFailureError
from temporalio.client import WorkflowHandle
from temporalio.client import WorkflowQueryFailedError
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.service import RPCStatusCode

from checkout.catalog import load_catalog
from checkout.config import Settings
from checkout.contract import ACCOUNT_ID
from checkout.contract import CHECKOUT_STATUS
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.contract import DECISION_UPDATE
from checkout.contract import RETRY_PROVISIONING_UPDATE
from checkout.contract import checkout_workflow_id
from checkout.contract import order_id_from_workflow_id
from checkout.echo import quote
from checkout.errors import CheckoutRejected
from checkout.models import ApproveRequest
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import CompensateRequest
from checkout.models import Decision
from checkout.models import DecisionStatus
from checkout.models import RejectRequest
from checkout.models import ResultStatus
from checkout.order_input import describe_validation_error
from checkout.order_input import find_card_number
from checkout.order_input import parse_order
from checkout.quoting import quote as quote_order
from checkout.summary import order_summary
from checkout.vies import VatVerifier
from cli import render
from cli.common import EXIT_ORDER_NOT_COMPLETED
from cli.common import IDENTIFIER
from cli.common import QUERY_TIMEOUT
from cli.common import CheckoutList
from cli.common import CliError
from cli.common import ListedCheckout
from cli.common import connect
from cli.common import describe_ended
from cli.common import no_checkout
from cli.common import one_line
from cli.common import open_store
from cli.common import os_user
from cli.common import print_json
from cli.common import read_json

_Request = TypeVar("_Request", bound=BaseModel)


# --- submit ------------------------------------------------------------------------------------


def _order_file(path: Path) -> tuple[dict[str, Any], str]:
    """The order file's JSON object and its order id, or a CliError before anything is sent."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CliError(f"{path}: an order is a JSON object, got {type(raw).__name__}")
    order_id = raw.get("order_id")
    if not isinstance(order_id, str) or not IDENTIFIER.match(order_id):
        raise CliError(f"{path}: order_id: needs 1-64 of A-Z a-z 0-9 _ - (got {quote(order_id)})")
    card_field = find_card_number(raw)
    if card_field is not None:
        # Refused here so the number never reaches the cluster's history.
        raise CliError(
            f"{path}: {card_field}: looks like a card number; send a payment token, never card"
            " data (not submitted)"
        )
    return raw, order_id


async def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    raw, order_id = _order_file(args.order)
    workflow_id = checkout_workflow_id(order_id)
    client = await connect()
    if await describe_ended(client, order_id) is not None:
        print(
            f"order {order_id} was already submitted ({workflow_id}): not running it again",
            file=sys.stderr,
        )
    # One call places the order and answers once it is decided (charged, invoiced, rejected):
    # update-with-start, joining the run that already has this id if there is one.
    start: WithStartWorkflowOperation[Any, CheckoutResult] = WithStartWorkflowOperation(
        CHECKOUT_WORKFLOW,
        raw,
        id=workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        result_type=CheckoutResult,
        static_summary=order_summary(raw),
    )
    try:
        decision = await client.execute_update_with_start_workflow(
            DECISION_UPDATE, start_workflow_operation=start, result_type=Decision
        )
    except WorkflowUpdateFailedError as exc:
        raise CliError(f"order {order_id}: {_refusal(exc.cause)}") from None
    result: CheckoutResult | None = None
    if args.wait:
        handle = await start.workflow_handle()
        try:
            result = await handle.result()
        except WorkflowFailureError as exc:
            raise CliError(f"checkout {workflow_id} failed: {one_line(str(exc.cause))}") from None
    if args.json:
        document: dict[str, Any] = {"decision": decision.model_dump(mode="json")}
        if result is not None:
            document["result"] = result.model_dump(mode="json")
        print(json.dumps(document, indent=2))
    else:
        print(render.decision(decision, workflow_id))
        if result is not None:
            print(render.result(result))
    if decision.status is DecisionStatus.REJECTED or (
        result is not None and result.status is not ResultStatus.COMPLETED
    ):
        ended = render.outcome(result) if result is not None else f"rejected: {decision.reason}"
        print(f"order {order_id} {ended}", file=sys.stderr)
        return EXIT_ORDER_NOT_COMPLETED
    return 0


# --- quote -------------------------------------------------------------------------------------


async def cmd_quote(args: argparse.Namespace, settings: Settings) -> int:
    # The workflow's anchor is its start time to the second; quote the same way.
    at = datetime.now(UTC).replace(microsecond=0)
    raw = read_json(args.order)
    catalog = load_catalog(settings.catalog_path)
    verifier = VatVerifier(settings.vat_verification, vies_url=settings.vies_url)
    try:
        order = parse_order(raw)
        async with open_store(settings) as store:
            quoted = await quote_order(order, store, catalog, verifier, at)
    except CheckoutRejected as exc:
        raise CliError(f"{exc.reason.value}: {exc.message}") from None
    if args.json:
        print_json(quoted.plan.invoice)
    else:
        print(render.quote_review(order, quoted, at))
    return 0


# --- status and list ---------------------------------------------------------------------------


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    order_id: str = args.order_id
    workflow_id = checkout_workflow_id(order_id)
    client = await connect()
    handle = client.get_workflow_handle(workflow_id)
    try:
        state = await handle.query("status", result_type=CheckoutState, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise no_checkout(order_id) from None
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.FAILED_PRECONDITION):
            # Queries are answered by a worker, also for finished checkouts.
            ended = await describe_ended(client, order_id)
            raise CliError(
                f"order {order_id} is {ended}, but no worker answered the status query"
                f" ({one_line(exc.message)}); is the worker running?"
            ) from None
        raise
    except WorkflowQueryFailedError as exc:
        raise CliError(f"status query of {workflow_id} failed: {one_line(exc.message)}") from None
    assert isinstance(state, CheckoutState)
    state, note = await _after_hard_stop(handle, state, order_id, settings)
    if args.json:
        print_json(state)
    else:
        print(render.checkout_state(state, workflow_id))
        actions = await operator_actions(client, handle)
        if actions:
            print(render.operator_actions(actions))
        if note:
            print(note)
    return 0


#: The updates an operator sends (the decision update is the customer's backend asking).
_OPERATOR_UPDATES = frozenset({"approve", "reject", "compensate", RETRY_PROVISIONING_UPDATE})


async def operator_actions(
    client: Client, handle: WorkflowHandle[Any, Any]
) -> list[render.OperatorAction]:
    """Who did what to the checkout, from its history: each operator update the workflow
    accepted, with the client identity Temporal recorded for it and the name the operator
    declared (``--by``). The workflow itself cannot see the identity."""
    actions: list[render.OperatorAction] = []
    try:
        history = await handle.fetch_history()
    except RPCError:
        return actions  # the status above stands without them
    for event in history.events:
        if not event.HasField("workflow_execution_update_accepted_event_attributes"):
            continue
        request = event.workflow_execution_update_accepted_event_attributes.accepted_request
        if request.input.name not in _OPERATOR_UPDATES:
            continue
        declared: str | None = None
        payloads = list(request.input.args.payloads)
        if payloads:
            with contextlib.suppress(Exception):  # an undecodable argument still shows who
                (arg,) = await client.data_converter.decode(payloads[:1])
                declared = arg.get("approver") if isinstance(arg, dict) else None
        actions.append(
            render.OperatorAction(
                update=request.input.name,
                at=event.event_time.ToDatetime(tzinfo=UTC),
                identity=request.meta.identity,
                declared_by=declared,
            )
        )
    return actions


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
    async with open_store(settings) as store:
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
        if not IDENTIFIER.match(args.account):
            raise CliError(f"--account: {quote(args.account)} is not an account id")
        query += f' AND AccountId = "{args.account}"'
    client = await connect()
    rows: list[ListedCheckout] = []
    try:
        async for execution in client.list_workflows(query, limit=args.limit):
            attributes = execution.typed_search_attributes
            status = attributes.get(CHECKOUT_STATUS) or (
                execution.status.name.lower() if execution.status else render.NONE
            )
            rows.append(
                ListedCheckout(
                    order_id=order_id_from_workflow_id(execution.id) or execution.id,
                    workflow_id=execution.id,
                    status=status,
                    account_id=attributes.get(ACCOUNT_ID),
                    started=execution.start_time,
                )
            )
    except RPCError as exc:
        hint = " (run `checkout setup` to register them)" if "not defined" in exc.message else ""
        raise CliError(f"cannot list checkouts: {one_line(exc.message)}{hint}") from None
    if args.json:
        print_json(CheckoutList(checkouts=rows))
    elif not rows:
        print(f"no checkouts match {query}")
    else:
        print(render.checkout_list(rows))
    return 0


# --- operator updates --------------------------------------------------------------------------


def _refusal(cause: BaseException) -> str:
    while isinstance(cause, ApplicationError) and cause.cause is not None:
        cause = cause.cause
    return one_line(cause.message if isinstance(cause, ApplicationError) else str(cause))


async def _update(args: argparse.Namespace, name: str, arg: BaseModel | None = None) -> int:
    order_id = args.order_id
    state = await _send_update(order_id, name, arg)
    if args.json:
        print_json(state)
    else:
        _print_outcome(f"{name}: order {order_id} is", state)
    return 0


def _print_outcome(head: str, state: CheckoutState) -> None:
    """One line: ``head`` with the state the order is in now, and its outcome once it has one."""
    line = f"{head} {state.state.value}"
    if state.result is not None:
        line += f" ({render.outcome(state.result)})"
    print(line)


async def _send_update(order_id: str, name: str, arg: BaseModel | None = None) -> CheckoutState:
    client = await connect()
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
            ended = await describe_ended(client, order_id)
            if ended is None:
                raise no_checkout(order_id) from None
            raise CliError(
                f"{name} refused for order {order_id}: the checkout has ended ({ended})"
            ) from None
        raise CliError(f"{name} refused for order {order_id}: {one_line(exc.message)}") from None
    assert isinstance(state, CheckoutState)
    return state


def _request(model: type[_Request], **values: Any) -> _Request:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc).replace("approver", "--by")) from None


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    """Run the parked step again and wait for that attempt's outcome: exit 0 once it went
    through, 1 with the error and the time the order compensates itself when it failed again."""
    async with open_store(settings) as store:
        paused = sorted(await store.paused_products())
    if paused:
        print(
            f"warning: provisioning of {', '.join(paused)} is paused (checkout products resume"
            " PRODUCT first, or the retry fails again)",
            file=sys.stderr,
        )
    state = await _send_update(args.order_id, RETRY_PROVISIONING_UPDATE)
    if args.json:
        print_json(state)  # the state either way; the exit status says whether it went through
    if state.state is CheckoutStatus.NEEDS_ATTENTION:
        when = render.timestamp(state.deadline) if state.deadline else "the park timeout"
        raise CliError(
            f"retry of order {args.order_id} failed again: {state.last_error or 'no error given'};"
            f" it stays parked and compensates itself at {when} unless retried or compensated"
        )
    if not args.json:
        _print_outcome(f"retry_provisioning: order {args.order_id} went through and is", state)
    return 0


async def cmd_compensate(args: argparse.Namespace, _: Settings) -> int:
    request = _request(CompensateRequest, reason=args.reason)
    return await _update(args, "compensate", request)


async def cmd_approve(args: argparse.Namespace, _: Settings) -> int:
    approver = args.by or os_user()
    return await _update(args, "approve", _request(ApproveRequest, approver=approver))


async def cmd_reject(args: argparse.Namespace, _: Settings) -> int:
    request = _request(RejectRequest, approver=args.by or os_user(), reason=args.reason)
    return await _update(args, "reject", request)


# --- the parser --------------------------------------------------------------------------------


_BY_HELP = (
    "the approver's name to record (default: your OS user); a declaration: Temporal records the"
    " client identity checkout-cli/USER@HOST with the update, and only authentication (mTLS, API"
    " keys) proves who sent it"
)


def _on_order(
    commands: Any,
    name: str,
    handler: Callable[[argparse.Namespace, Settings], Awaitable[int]],
    help_: str,
) -> Any:
    """A command on one checkout, named by its ORDER_ID, printing the CheckoutState with
    ``--json``."""
    command = commands.add_parser(name, help=help_)
    command.add_argument("order_id", metavar="ORDER_ID")
    command.add_argument("--json", action="store_true", help="print the CheckoutState as JSON")
    command.set_defaults(handler=handler)
    return command


def add_commands(commands: Any) -> None:
    submit = commands.add_parser(
        "submit", help="place an order file and print its decision (update-with-start)"
    )
    submit.add_argument("order", type=Path, metavar="ORDER.json")
    submit.add_argument(
        "--wait", action="store_true", help="also wait for and print the CheckoutResult"
    )
    submit.add_argument(
        "--json", action="store_true", help='print {"decision": …, "result": …} as JSON'
    )
    submit.set_defaults(handler=cmd_submit)

    quote_ = commands.add_parser("quote", help="the checkout review, without starting anything")
    quote_.add_argument("order", type=Path, metavar="ORDER.json")
    quote_.add_argument("--json", action="store_true", help="print the invoice as JSON")
    quote_.set_defaults(handler=cmd_quote)

    _on_order(commands, "status", cmd_status, "where a checkout is (the status query)")

    listing = commands.add_parser("list", help="checkouts, newest first")
    statuses = [s.value for s in CheckoutStatus]
    listing.add_argument(
        "--status", choices=statuses, metavar="STATUS", help=f"only this one: {', '.join(statuses)}"
    )
    listing.add_argument("--account", metavar="ACCOUNT_ID", help="only this account's checkouts")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="print the checkouts as JSON")
    listing.set_defaults(handler=cmd_list)

    _on_order(commands, "retry", cmd_retry, "run provisioning again (NeedsAttention only)")

    compensate = _on_order(
        commands, "compensate", cmd_compensate, "undo everything and end Compensated"
    )
    compensate.add_argument("--reason", required=True, metavar="R")

    approve = _on_order(commands, "approve", cmd_approve, "approve a corporate order")
    approve.add_argument("--by", metavar="NAME", help=_BY_HELP)

    reject = _on_order(commands, "reject", cmd_reject, "reject a corporate order")
    reject.add_argument("--by", metavar="NAME", help=_BY_HELP)
    reject.add_argument("--reason", required=True, metavar="R")
