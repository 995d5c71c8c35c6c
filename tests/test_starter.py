"""The `checkout` command: run in this process against the real dev server, a real worker on a
fresh task queue and a SQLite store, with the environment a person would set; and as a program
for the exit status and the one-line errors."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

import starter
from checkout.contract import checkout_workflow_id
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import ResultStatus
from checkout.store import Store
from cli import main as checkout_command
from tests.conftest import SmtpSink
from tests.conftest import free_port
from tests.conftest import make_store
from tests.conftest import settings_for
from tests.conftest import unique_queue
from tests.helpers import Cli
from tests.helpers import account
from tests.helpers import checkout_worker
from tests.helpers import eventually
from tests.helpers import now
from tests.helpers import order
from tests.helpers import point_checkout_at
from tests.helpers import store_url

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def cli(
    dev_env: WorkflowEnvironment,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
) -> AsyncIterator[Cli]:
    """Every command against the dev server, with a worker on a fresh task queue."""
    async with make_store("sqlite", tmp_path) as store:
        settings = settings_for(store_url(store), smtp_sink, unique_queue())
        point_checkout_at(monkeypatch, settings, dev_env.client.service_client.config.target_host)
        async with checkout_worker(dev_env.client, settings, store):
            yield Cli(capsys, tmp_path, store, settings, dev_env.client)


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    return err.strip()


def accounts_file(*accounts: Any) -> list[dict[str, Any]]:
    return [a.model_dump(mode="json") for a in accounts]


# --- accounts ----------------------------------------------------------------------------------


async def test_accounts_import_and_show_json(offline_cli: Cli) -> None:
    """`accounts import` loads accounts; `show --json` adds payments, money as strings."""
    start = now().replace(microsecond=0) - timedelta(days=30)
    acc = account(
        subscriptions=[
            {
                "product": "remote-support", "plan": "standard", "seats": 5,
                "billing_cycle": "annual", "status": "active",
                "current_period_start": start.isoformat(),
                "current_period_end": (start + timedelta(days=365)).isoformat(),
                "period_amount": "1450.00",
            }
        ]
    )  # fmt: skip
    code, out, err = await offline_cli("accounts", "import", offline_cli.file(accounts_file(acc)))
    assert (code, err) == (0, "")
    assert out == f"imported 1 account: {acc.account_id}\n"

    code, out, err = await offline_cli("accounts", "show", acc.account_id, "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert shown["account_id"] == acc.account_id
    assert shown["payments"] == []
    assert shown["subscriptions"][0]["period_amount"] == "1450.00"
    assert shown["subscriptions"][0]["trial_end"] is None

    code, out, _ = await offline_cli("accounts", "show", acc.account_id)
    assert code == 0
    assert "remote-support" in out and "1450.00 EUR" in out and "Payments" in out


async def test_accounts_show_names_the_payment_customer(offline_cli: Cli) -> None:
    """An account's payment_customer_id (its Stripe customer) is imported and shown, in the text
    and in the JSON; an account without one shows none."""
    with_customer = account(payment_customer_id="cus_Nffrf4nRy3Tq2b")
    without = account()
    code, _, err = await offline_cli(
        "accounts", "import", offline_cli.file(accounts_file(with_customer, without))
    )
    assert (code, err) == (0, "")

    code, out, _ = await offline_cli("accounts", "show", with_customer.account_id, "--json")
    assert code == 0
    assert json.loads(out)["payment_customer_id"] == "cus_Nffrf4nRy3Tq2b"
    code, out, _ = await offline_cli("accounts", "show", with_customer.account_id)
    assert code == 0
    assert re.search(r"Payment customer\s+cus_Nffrf4nRy3Tq2b", out)

    code, out, _ = await offline_cli("accounts", "show", without.account_id, "--json")
    assert code == 0
    assert json.loads(out)["payment_customer_id"] is None


def _raw_account(**fields: Any) -> dict[str, Any]:
    return {"account_id": "acc-bad", "name": "X", "billing_email": "a@b.example", **fields}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[{", "not valid JSON (line 1"),
        ({"account_id": "acc-1"}, "expected a JSON list of accounts"),
        ([_raw_account(billing_email="no-at-sign")], 'account 1 (line 1), field "billing_email":'),
        ([_raw_account(country="de")], 'account 1 (line 1), field "country":'),
        ([_raw_account(country="DE", seats=3)], 'account 1 (line 1), field "seats": Extra inputs'),
        (
            [{"name": "no id", "billing_email": "a@b.example"}],
            'account 1 (line 1), field "account_id":',
        ),
        ([_raw_account(country="DE"), "acc-2"], "account 2 (line 1): expected a JSON object"),
    ],
)
async def test_accounts_import_bad_file_is_one_line(
    offline_cli: Cli, content: Any, expected: str
) -> None:
    """A bad account file: exit 1, one line naming account and field, nothing imported."""
    code, out, err = await offline_cli("accounts", "import", offline_cli.file(content))
    assert code == 1
    assert out == ""
    assert expected in one_line(err)
    assert await offline_cli.store.get_account("acc-bad") is None


def _account_file_text(*accounts: dict[str, Any]) -> str:
    """A file as a person writes one: each field on its own line, so with six fields (eight lines)
    per account after the opening bracket, account 3 starts on line 18."""
    return json.dumps(list(accounts), indent=2)


def _good(account_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "account_id": account_id, "name": "Muster GmbH", "billing_email": "billing@muster.example",
        "country": "DE", "currency": "EUR", "timezone": "Europe/Berlin", **fields,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"timezone": "Mars/Olympus_Mons"},
            'field "timezone": unknown time zone "Mars/Olympus_Mons"',
        ),
        ({"currency": "XXX"}, 'field "currency": the catalog has no prices in "XXX" (only in '),
        ({"name": "Muster\u0000GmbH"}, 'field "name": "Muster\\x00GmbH" holds the invisible'),
        ({"name": "Muster \u202eHbmG"}, 'field "name": "Muster \\u202eHbmG" holds the invisible'),
        ({"name": "   "}, 'field "name": is blank'),
        ({"billing_email": "bill\u2066ing@muster.example"}, 'field "billing_email": "bill\\u2066'),
        ({"country": "UK"}, 'field "country": "UK" is not an ISO 3166 country code'),
        ({"country": "ZZ"}, 'field "country": "ZZ" is not an ISO 3166 country code'),
        ({"locale": "xx"}, 'field "locale": unknown locale "xx"'),
        ({"locale": "de_ZZ"}, 'field "locale": unknown locale "de_ZZ"'),
    ],
)
async def test_accounts_import_refuses_unusable_values(
    offline_cli: Cli, fields: dict[str, Any], expected: str
) -> None:
    """`accounts import` checks time zone (IANA), currency (one the catalog prices in), names and
    e-mail addresses (no control or bidi characters), country (ISO 3166) and locale; the one-line
    error names the file, the account's position and line, and the field, and nothing of the file
    is imported, not even the valid accounts before the bad one."""
    path = offline_cli.file(
        _account_file_text(_good("acc-ok-1"), _good("acc-ok-2"), _good("acc-bad-3", **fields))
    )
    code, out, err = await offline_cli("accounts", "import", path)
    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"checkout: {path}: account 3 (line 18), {expected}")
    for account_id in ("acc-ok-1", "acc-ok-2", "acc-bad-3"):
        assert await offline_cli.store.get_account(account_id) is None


async def test_accounts_import_accepts_real_zones_locales_and_names(offline_cli: Cli) -> None:
    """Real values pass: any IANA zone, a regional locale, a currency of the catalog, a name with
    accents and an apostrophe."""
    austria = {"country": "AT", "locale": "de-AT", "timezone": "Asia/Kolkata"}
    accounts = [
        _good("acc-at", name="Café Müller's", **austria),
        _good("acc-us", country="US", locale="en_US", currency="USD", timezone="America/Chicago"),
    ]
    code, out, err = await offline_cli("accounts", "import", offline_cli.file(accounts))
    assert (code, err) == (0, "")
    assert out == "imported 2 accounts: acc-at, acc-us\n"
    stored = await offline_cli.store.get_account("acc-at")
    assert stored is not None and stored.name == "Café Müller's"


async def test_accounts_import_missing_file(offline_cli: Cli) -> None:
    """A file that is not there is a one-line error, not a traceback."""
    code, _, err = await offline_cli("accounts", "import", str(offline_cli.tmp_path / "nope.json"))
    assert code == 1
    assert "cannot read it" in one_line(err)


async def test_accounts_show_unknown_account(offline_cli: Cli) -> None:
    """An unknown account is a one-line error."""
    code, _, err = await offline_cli("accounts", "show", "acc-nobody")
    assert code == 1
    assert one_line(err) == 'checkout: no account "acc-nobody"'


# --- quote -------------------------------------------------------------------------------------


async def _mid_term_account(store: Store) -> str:
    """A German consumer half way through a paid year of 5 Remote Support seats that cost 12.00:
    the credit is 6.00 to the cent whatever second the quote runs."""
    half = timedelta(days=182, hours=12)
    acc = account(
        subscriptions=[
            {
                "product": "remote-support", "plan": "standard", "seats": 5,
                "billing_cycle": "annual", "status": "active",
                "current_period_start": (now() - half).isoformat(),
                "current_period_end": (now() + half).isoformat(),
                "period_amount": "12.00",
            }
        ]
    )  # fmt: skip
    await store.import_accounts([acc])
    return acc.account_id


def _upgrade_order(account_id: str, **fields: Any) -> dict[str, Any]:
    return order(
        account_id,
        {"product": "remote-support", "plan": "standard", "seats": 6, "billing_cycle": "annual"},
        {"product": "password-vault", "plan": "teams", "seats": 10, "billing_cycle": "monthly"},
        **fields,
    )


async def test_quote_prints_the_checkout_review_to_the_cent(offline_cli: Cli) -> None:
    """`quote` prints lines, credit, period, VAT and total due, to the cent."""
    account_id = await _mid_term_account(offline_cli.store)
    code, out, err = await offline_cli("quote", offline_cli.file(_upgrade_order(account_id)))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    seat_line = next(line for line in lines if line.startswith("Remote Support"))
    assert seat_line.split()[3:9] == ["6", "annual", "290.00", "EUR", "1740.00", "EUR"]
    assert "-6.00 EUR" in seat_line and "change (+1 seat)" in seat_line
    vault_line = next(line for line in lines if line.startswith("Password Vault"))
    assert "40.00 EUR" in vault_line and "new" in vault_line
    assert any(line.startswith("Billing period") and "starts now" in line for line in lines)
    totals = {
        line.rsplit("  ", 1)[0].strip(): line.rsplit("  ", 1)[1].strip() for line in lines[-3:]
    }
    assert totals == {
        "Net": "1774.00 EUR",
        "VAT 19 % (DE, standard rate)": "337.06 EUR",
        "Total due": "2111.06 EUR",
    }
    # A quote starts nothing and charges nothing.
    assert await offline_cli.store.payments(account_id=account_id) == []


async def test_quote_json_is_the_invoice(offline_cli: Cli) -> None:
    """`quote --json` prints the invoice with money as decimal strings."""
    account_id = await _mid_term_account(offline_cli.store)
    code, out, _ = await offline_cli(
        "quote", offline_cli.file(_upgrade_order(account_id)), "--json"
    )
    assert code == 0
    invoice = json.loads(out)
    assert (invoice["net"], invoice["vat"], invoice["total"]) == ("1774.00", "337.06", "2111.06")
    assert invoice["vat_rate"] == "0.19"
    assert invoice["tax_treatment"] == "standard"
    assert [(line["kind"], line["credit"]) for line in invoice["lines"]] == [
        ("change", "6.00"),
        ("new", "0.00"),
    ]


async def test_quote_reverse_charge_with_a_valid_vat_id(offline_cli: Cli) -> None:
    """A French business with a valid VAT ID is quoted reverse charge at 0 %, both IDs shown."""
    fr = account(country="FR", locale="fr", name="Dupont SARL")
    await offline_cli.store.import_accounts([fr])
    raw = order(fr.account_id, vat_id="FR40303265045")
    code, out, _ = await offline_cli("quote", offline_cli.file(raw))
    assert code == 0
    assert "reverse charge: customer FR40303265045, seller" in out
    assert out.splitlines()[-1].split() == ["Total", "due", "2450.00", "EUR"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"vat_id": "FR41303265045"}, "invalid_vat_id: "),
        ({"account_id": "acc-nobody"}, 'unknown_account: account_id: no account "acc-nobody"'),
        ({"payment_method": None}, "payment_method_required: "),
        ({"items": []}, "invalid_order: items:"),
    ],
)
async def test_quote_rejection_prints_reason_and_message(
    offline_cli: Cli, fields: dict[str, Any], expected: str
) -> None:
    """An order the rules refuse prints its reason code and message on one line, exit 1."""
    fr = account(country="FR", locale="fr")
    await offline_cli.store.import_accounts([fr])
    raw = {**order(fr.account_id), **fields}
    code, out, err = await offline_cli("quote", offline_cli.file(raw))
    assert (code, out) == (1, "")
    assert one_line(err).startswith(f"checkout: {expected}")


# --- products ----------------------------------------------------------------------------------


async def test_products_pause_and_resume(offline_cli: Cli) -> None:
    """`products pause` and `resume` set the flag the provisioning activity reads."""
    code, out, _ = await offline_cli("products", "pause", "meetings")
    assert code == 0 and out.startswith("paused meetings (Meetings)")
    assert await offline_cli.store.paused_products() == {"meetings"}
    code, out, _ = await offline_cli("products", "resume", "meetings")
    assert code == 0 and out.startswith("resumed meetings")
    assert await offline_cli.store.paused_products() == set()


async def test_products_pause_unknown_product(offline_cli: Cli) -> None:
    """A product the catalog does not have is refused, naming the ones it has."""
    code, _, err = await offline_cli("products", "pause", "teleporter")
    assert code == 1
    assert 'unknown product "teleporter" (the catalog has: device-backup' in one_line(err)
    assert await offline_cli.store.paused_products() == set()


# --- errors before anything runs ---------------------------------------------------------------


async def test_unreachable_server_is_one_line(offline_cli: Cli) -> None:
    """With no server at TEMPORAL_ADDRESS, a command says so on one line."""
    code, _, err = await offline_cli("status", "ord-1")
    assert code == 1
    assert "cannot reach Temporal at 127.0.0.1:" in one_line(err)
    assert "connection refused" in err


async def test_submit_refuses_what_it_cannot_start(offline_cli: Cli) -> None:
    """Broken JSON, a missing order id and a card number are refused before connecting."""
    cases = [
        ("{not json", "not valid JSON"),
        ({"account_id": "acc-1", "items": []}, "order_id: needs 1-64 of"),
        (order("acc-1", payment_method="4242 4242 4242 4242"), "payment_method: looks like a card"),
    ]
    for content, expected in cases:
        code, _, err = await offline_cli("submit", offline_cli.file(content))
        assert code == 1
        assert expected in one_line(err)


async def test_usage_error_exit_status_2(offline_cli: Cli) -> None:
    """A missing required option is a usage error (2), as argparse reports it."""
    code, _, err = await offline_cli("compensate", "ord-1")
    assert code == 2
    assert "--reason" in err


# --- against the dev server --------------------------------------------------------------------


async def _submit_wait(cli: Cli, raw: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    code, out, err = await cli("submit", cli.file(raw), "--wait", "--json")
    return code, json.loads(out)["result"], err


async def test_submit_wait_prints_the_completed_result(cli: Cli) -> None:
    """`submit --wait` prints the CheckoutResult as JSON; `status --json` answers the query."""
    acc = account()
    assert (await cli("accounts", "import", cli.file(accounts_file(acc))))[0] == 0
    raw = order(acc.account_id)
    code, result, err = await _submit_wait(cli, raw)
    assert (code, err) == (0, "")
    assert result["status"] == "completed"
    assert result["invoice"]["total"] == "2915.50"
    assert result["charge"]["amount"] == "2915.50"
    assert result["email"]["status"] == "sent"

    code, out, _ = await cli("status", raw["order_id"], "--json")
    assert code == 0
    state = json.loads(out)
    assert state["state"] == "Completed"
    assert "charge_payment" in state["steps_done"]
    assert state["result"]["status"] == "completed"

    code, out, _ = await cli("status", raw["order_id"])
    assert code == 0
    assert "State          Completed" in out and "2915.50 EUR" in out


async def test_submitting_the_same_order_twice_charges_once(cli: Cli) -> None:
    """`submit` prints the decision at once; a second submit says already submitted and shows
    the same decision and result; one charge."""
    acc = account()
    await cli.store.import_accounts([acc])
    raw = order(acc.account_id)
    path = cli.file(raw)
    code, out, err = await cli("submit", path)
    assert (code, err) == (0, "")
    assert "Decision  accepted" in out
    assert checkout_workflow_id(raw["order_id"]) in out
    assert "Visa •••• 4242" in out
    first = await cli("submit", path, "--wait", "--json")
    second = await cli("submit", path, "--wait", "--json")
    assert first[0] == second[0] == 0
    assert json.loads(first[1]) == json.loads(second[1])
    assert json.loads(first[1])["decision"]["status"] == "accepted"
    assert "already submitted" in one_line(second[2])
    payments = await cli.store.payments(order_id=raw["order_id"])
    assert [(p.kind, p.status) for p in payments] == [("charge", "succeeded")]


async def test_submit_wait_declined_exits_3(cli: Cli) -> None:
    """A declined card: the rejected result is printed and the exit status is 3."""
    acc = account()
    await cli.store.import_accounts([acc])
    code, result, err = await _submit_wait(
        cli, order(acc.account_id, payment_method="pm_card_chargeDeclined")
    )
    assert code == checkout_command.EXIT_ORDER_NOT_COMPLETED
    assert (result["status"], result["reason"]) == ("rejected", "card_declined")
    code, out, _ = await cli(
        "submit", cli.file(order(acc.account_id, payment_method="pm_card_chargeDeclined"))
    )
    assert code == checkout_command.EXIT_ORDER_NOT_COMPLETED
    assert "Decision  rejected" in out and "card_declined" in out
    assert "rejected: card_declined" in one_line(err)


async def test_list_by_status_finds_the_order(cli: Cli) -> None:
    """`list --status Completed` finds a finished order with its account (visibility may lag)."""
    acc = account()
    await cli.store.import_accounts([acc])
    raw = order(acc.account_id)
    assert (await cli("submit", cli.file(raw), "--wait"))[0] == 0

    async def listed() -> str:
        code, out, _ = await cli("list", "--status", "Completed", "--account", acc.account_id)
        assert code == 0 and raw["order_id"] in out
        return out

    out = await eventually(listed)
    header, row = out.splitlines()[:2]
    assert header.split() == ["ORDER", "STATUS", "ACCOUNT", "STARTED"]
    assert row.split()[:3] == [raw["order_id"], "Completed", acc.account_id]

    code, out, err = await cli("list", "--account", acc.account_id, "--json")
    assert (code, err) == (0, "")
    [listed_json] = json.loads(out)["checkouts"]
    assert listed_json["order_id"] == raw["order_id"]
    assert listed_json["workflow_id"] == checkout_workflow_id(raw["order_id"])
    assert (listed_json["status"], listed_json["account_id"]) == ("Completed", acc.account_id)
    assert listed_json["started"].endswith("Z")


async def _result(cli: Cli, order_id: str) -> CheckoutResult:
    assert cli.client is not None
    handle = cli.client.get_workflow_handle(
        checkout_workflow_id(order_id), result_type=CheckoutResult
    )
    result = await asyncio.wait_for(handle.result(), 60)
    assert isinstance(result, CheckoutResult)
    return result


async def _eventually_in(cli: Cli, order_id: str, state: str) -> None:
    async def reached() -> None:
        code, out, _ = await cli("status", order_id, "--json")
        assert code == 0 and json.loads(out)["state"] == state

    await eventually(reached)


async def test_operator_commands_on_a_parked_order(cli: Cli) -> None:
    """A parked order refuses unfitting updates; after resume, `retry` completes it."""
    acc = account()
    await cli.store.import_accounts([acc])
    raw = order(acc.account_id)
    order_id = raw["order_id"]
    assert (await cli("products", "pause", "remote-support"))[0] == 0
    try:
        assert (await cli("submit", cli.file(raw)))[0] == 0
        await _eventually_in(cli, order_id, "NeedsAttention")
        code, out, err = await cli("approve", order_id, "--by", "Jane Doe")
        assert (code, out) == (1, "")
        assert one_line(err) == (
            f"checkout: approve refused for order {order_id}: approve is only possible in"
            " AwaitingApproval; the order is NeedsAttention"
        )
        code, _, err = await cli("compensate", order_id, "--reason", "")
        assert code == 1 and "reason:" in one_line(err)
        # Still paused: the retry's attempt fails again, and the command says so.
        code, out, err = await cli("retry", order_id)
        assert (code, out) == (1, "")
        warning, error = err.splitlines()
        assert warning.startswith("warning: provisioning of remote-support is paused")
        assert f"retry of order {order_id} failed again: provision_subscriptions:" in error
        assert "compensates itself at 20" in error
        await _eventually_in(cli, order_id, "NeedsAttention")
    finally:
        assert (await cli("products", "resume", "remote-support"))[0] == 0
    code, out, err = await cli("retry", order_id, "--json")
    assert (code, err) == (0, "")
    state = CheckoutState.model_validate_json(out)  # --json: the state once it went through
    assert state.state is not CheckoutStatus.NEEDS_ATTENTION
    assert "provision_subscriptions" in state.steps_done
    assert (await _result(cli, order_id)).status is ResultStatus.COMPLETED


async def test_updates_on_an_ended_order_are_refused(cli: Cli) -> None:
    """`retry`, `compensate` and `reject` on a completed order are refused: exit 1, one line."""
    acc = account()
    await cli.store.import_accounts([acc])
    raw = order(acc.account_id)
    assert (await cli("submit", cli.file(raw), "--wait"))[0] == 0
    for argv in (
        ["retry", raw["order_id"]],
        ["compensate", raw["order_id"], "--reason", "too late"],
        ["reject", raw["order_id"], "--by", "Jane", "--reason", "no"],
    ):
        code, out, err = await cli(*argv)
        assert (code, out) == (1, "")
        assert one_line(err).endswith(
            f"refused for order {raw['order_id']}: the checkout has ended (Completed)"
        )


async def test_approve_and_reject_corporate_orders(cli: Cli) -> None:
    """`approve` completes a corporate order (invoiced); `reject` ends one rejected."""
    # Two accounts: two orders of one account for the same product run one after the other
    # (billing-rules.md, O1-O7), so the second would wait Queued behind the first's approval.
    corp, other = account(corporate=True), account(corporate=True)
    await cli.store.import_accounts([corp, other])
    approved = order(corp.account_id, payment_method=None)
    rejected = order(other.account_id, payment_method=None)
    for raw in (approved, rejected):
        assert (await cli("submit", cli.file(raw)))[0] == 0
        await _eventually_in(cli, raw["order_id"], "AwaitingApproval")

    code, out, err = await cli("approve", approved["order_id"])
    assert (code, err) == (0, "")
    assert out.startswith(f"approve: order {approved['order_id']} is ")
    result = await _result(cli, approved["order_id"])
    # Without --by the approver is the OS user running the command.
    assert (result.status, result.approved_by) == (ResultStatus.COMPLETED, getpass.getuser())
    payments = await cli.store.payments(order_id=approved["order_id"])
    assert [p.kind for p in payments] == ["invoice"]

    code, out, err = await cli(
        "reject", rejected["order_id"], "--by", "Jane Doe", "--reason", "no budget", "--json"
    )
    assert (code, err) == (0, "")
    state = CheckoutState.model_validate_json(out)  # --json: the CheckoutState after the update
    assert state.order_id == rejected["order_id"]
    assert state.state is not CheckoutStatus.AWAITING_APPROVAL
    result = await _result(cli, rejected["order_id"])
    assert (result.status, result.reason) == (ResultStatus.REJECTED, "approval_rejected")
    assert await cli.store.payments(order_id=rejected["order_id"]) == []


async def test_operator_updates_carry_the_client_identity_in_history(cli: Cli) -> None:
    """An operator's update is recorded in the history with the command's client identity,
    checkout-cli/<OS user>@<host>, next to the declared --by name; `checkout status` shows both
    from the history."""
    corp = account(corporate=True)
    await cli.store.import_accounts([corp])
    raw = order(corp.account_id, payment_method=None)
    assert (await cli("submit", cli.file(raw)))[0] == 0
    await _eventually_in(cli, raw["order_id"], "AwaitingApproval")
    code, _, err = await cli("reject", raw["order_id"], "--by", "Jane\nDoe", "--reason", "no")
    assert (code, err) == (0, "")

    identity = f"checkout-cli/{getpass.getuser()}@{socket.gethostname()}"
    assert cli.client is not None
    history = await cli.client.get_workflow_handle(
        checkout_workflow_id(raw["order_id"])
    ).fetch_history()
    accepted = [
        event.workflow_execution_update_accepted_event_attributes.accepted_request
        for event in history.events
        if event.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert [(r.input.name, r.meta.identity) for r in accepted if r.input.name != "decision"] == [
        ("reject", identity)
    ]
    code, out, err = await cli("status", raw["order_id"])
    assert (code, err) == (0, "")
    assert "Operator actions (from the history)" in out
    assert f'reject: declared by "Jane\\nDoe", client "{identity}"' in out


async def test_update_and_status_of_an_unknown_order(cli: Cli) -> None:
    """Status and updates of an order that was never submitted are one-line errors."""
    for argv in (["status", "ord-never"], ["retry", "ord-never"]):
        code, _, err = await cli(*argv)
        assert code == 1
        assert (
            one_line(err) == "checkout: no checkout for order ord-never (workflow order-ord-never)"
        )


async def test_setup_is_idempotent(cli: Cli) -> None:
    """`setup` on a cluster that has the search attributes changes nothing and says so."""
    code, out, _ = await cli("setup")
    assert code == 0
    assert "already registered" in out


# --- as a program ------------------------------------------------------------------------------


@pytest.fixture
def program_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "CHECKOUT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'checkout.db'}",
    }


def program(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROJECT / "starter.py"), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=60,
        check=False,
    )


def test_the_installed_command_is_the_cli() -> None:
    """The `checkout` script runs cli.main:main, the same function as `python starter.py`."""
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"] == {"checkout": "cli.main:main"}
    assert starter.main is checkout_command.main


def test_program_bad_file_exit_status_and_one_line(
    program_env: dict[str, str], tmp_path: Path
) -> None:
    """Run as a program, a bad account file gives exit status 1 and one line, no traceback."""
    bad = tmp_path / "accounts.json"
    bad.write_text('[{"account_id": "acc-x", "name": "X"}]')
    completed = program(program_env, "accounts", "import", str(bad))
    assert completed.returncode == 1
    assert completed.stderr.startswith("checkout: ")
    assert 'account 1 (line 1), field "billing_email": Field required' in one_line(completed.stderr)


def test_program_unreachable_server(program_env: dict[str, str]) -> None:
    """Run as a program, an unreachable server is exit status 1 with one line."""
    completed = program(program_env, "list")
    assert completed.returncode == 1
    assert "cannot reach Temporal" in one_line(completed.stderr)


async def test_program_exits_0_after_talking_to_temporal(
    dev_env: WorkflowEnvironment, program_env: dict[str, str]
) -> None:
    """As a program, commands using the Temporal client exit 0, never 134 (abort)."""
    env = {**program_env, "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host}
    for _ in range(4):
        completed = await asyncio.to_thread(program, env, "setup")
        assert (completed.returncode, completed.stderr) == (0, "")
        assert "already registered" in completed.stdout
    ok = await asyncio.to_thread(
        program, env, "accounts", "import", str(PROJECT / "demo" / "accounts.json")
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout == "imported 3 accounts: acc-de, acc-fr, acc-us\n"


async def test_products_list_prints_the_catalog(offline_cli: Cli) -> None:
    """`products list` shows every product and plan with its prices; `--json` parses and names
    a paused product as such."""
    code, out, err = await offline_cli("products", "list")
    assert (code, err) == (0, "")
    assert "remote-support" in out and "29.00/290.00 EUR" in out
    assert (await offline_cli("products", "pause", "meetings"))[0] == 0
    code, out, _ = await offline_cli("products", "list", "--json")
    assert code == 0
    products = {p["product"]: p for p in json.loads(out)["products"]}
    assert products["meetings"]["paused"] is True
    assert products["remote-support"]["paused"] is False
    standard = next(p for p in products["remote-support"]["plans"] if p["plan"] == "standard")
    assert standard["prices"]["EUR"] == {"monthly": "29.00", "annual": "290.00"}
    assert products["meetings"]["trial_days"] == 14
