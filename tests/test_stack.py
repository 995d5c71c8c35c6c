"""The demo stack: its example data, and `python -m demo.stack --exit-after-demo` end to end
on free ports, its own data folder and SQLite, so it never meets a demo someone is running."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from checkout.models import Account
from checkout.models import Subscription
from checkout.order_input import parse_order
from cli.accounts import parse_accounts
from demo.stack import DEFAULT_DEMO_DIR
from demo.stack import load_orders
from demo.stack import mid_term
from tests.conftest import free_port
from tests.helpers import paid_subscription

PROJECT = Path(__file__).resolve().parent.parent

#: What each example order must end as, by its file name.
EXPECTED = {
    "purchase": ("completed", "540.00 USD"),
    "seat-increase": ("completed", "EUR"),
    "trial": ("completed", "0.00 USD"),
    "declined-card": ("rejected: card_declined", "-"),
    "invalid-vat-id": ("rejected: invalid_vat_id", "-"),
    "cart": ("completed", "1592.50 EUR"),
    "parked": ("parked", "-"),
}


# --- the example data --------------------------------------------------------------------------


def test_demo_accounts_file_imports() -> None:
    """demo/accounts.json passes the same validation as `accounts import`."""
    raw = json.loads((DEFAULT_DEMO_DIR / "accounts.json").read_text())
    accounts = parse_accounts(raw, "demo/accounts.json")
    assert [a.account_id for a in accounts] == ["acc-de", "acc-fr", "acc-us"]


def test_demo_order_ids_never_look_like_card_numbers() -> None:
    """Suffixed demo order ids stay valid, even where 14 digits would pass Luhn."""
    orders = load_orders(DEFAULT_DEMO_DIR, "20261126T115900")
    assert [o.label for o in orders] == list(EXPECTED)
    for demo in orders:
        assert parse_order(demo.raw).order_id == demo.order_id
        assert demo.order_id.endswith("-20261126T115900")


def test_mid_term_moves_a_stale_period_around_now() -> None:
    """A demo subscription period that ended moves by whole cycles to contain now."""
    # Five annual seats of Remote Support Standard, from 1 June 2026 to 1 June 2027.
    raw = paid_subscription(datetime(2026, 6, 1, tzinfo=UTC), period_amount="0.00")
    stale = Subscription.model_validate(raw)
    acc = Account(
        account_id="acc-1", name="A", billing_email="a@b.example", country="DE",
        subscriptions=[stale],
    )  # fmt: skip
    moved = mid_term(acc, datetime(2029, 2, 3, tzinfo=UTC)).subscriptions[0]
    assert (moved.current_period_start, moved.current_period_end) == (
        datetime(2028, 6, 1, tzinfo=UTC),
        datetime(2029, 6, 1, tzinfo=UTC),
    )
    earlier = mid_term(acc, datetime(2025, 1, 1, tzinfo=UTC)).subscriptions[0]
    assert earlier.current_period_start == datetime(2024, 6, 1, tzinfo=UTC)
    assert mid_term(acc, datetime(2026, 11, 26, tzinfo=UTC)).subscriptions[0] == stale


# --- end to end --------------------------------------------------------------------------------


async def run_stack(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "demo.stack", "--exit-after-demo", "--headless", *args,
        cwd=PROJECT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def outcomes(out: str) -> dict[str, tuple[str, str]]:
    """label -> (result, total) from the summary table."""
    found = {}
    for line in out.splitlines():
        match = re.match(
            r"^demo-([a-z-]+)-\d{8}T\d{6}\s+acc-\w+\s+(.+?)\s{2,}(\S+(?: \w{3})?)\s", line
        )
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def served(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.e2e
async def test_stack_runs_the_demo_and_stops_what_it_started(tmp_path: Path) -> None:
    """The stack reports each order, keeps .eml files, stops its server; reruns work."""
    port, smtp_port = free_port(), free_port()
    args = [
        "--port", str(port), "--ui-port", str(free_port()), "--smtp-port", str(smtp_port),
        "--codec-port", str(free_port()), "--data-dir", str(tmp_path),
        "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'checkout.db'}",
    ]  # fmt: skip
    code, out, err = await run_stack(*args)
    assert code == 0, out + err
    assert f"Starting the Temporal dev server on 127.0.0.1:{port}" in out
    found = outcomes(out)
    assert {label: result for label, (result, _) in found.items()} == {
        label: result for label, (result, _) in EXPECTED.items()
    }, out
    for label, (_, total) in EXPECTED.items():
        assert found[label][1].endswith(total), (label, found[label])
    assert "credit for the unused period" in out
    # The parked order: the output says how to retry or compensate it.
    assert "checkout products resume device-backup &&" in out
    assert "checkout compensate demo-parked-" in out
    completed = [label for label, (result, _) in EXPECTED.items() if result == "completed"]
    assert not any(
        name.startswith("confirmation.demo-parked-")
        for name in (p.name for p in (tmp_path / "mail").glob("*.eml"))
    )
    mail = sorted(p.name for p in (tmp_path / "mail").glob("*.eml"))
    for label in completed:
        assert any(name.startswith(f"confirmation.demo-{label}-") for name in mail), mail
    assert "From:" in (tmp_path / "mail" / mail[0]).read_text()
    assert not served(port) and not served(smtp_port)

    # Again, on the same data folder: new order ids, the server's history kept.
    await asyncio.sleep(1)
    code, out, err = await run_stack(*args)
    assert code == 0, out + err
    assert {label: result for label, (result, _) in outcomes(out).items()} == {
        label: result for label, (result, _) in EXPECTED.items()
    }
    assert "in all" in out and len(list((tmp_path / "mail").glob("*.eml"))) >= 2 * len(completed)


@pytest.mark.e2e
async def test_stack_reuses_a_running_server(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """With a server already on the port, the stack uses it and leaves it running."""
    port = int(dev_env.client.service_client.config.target_host.rsplit(":", 1)[1])
    code, out, err = await run_stack(
        "--port", str(port), "--smtp-port", str(free_port()), "--codec-port", str(free_port()),
        "--data-dir", str(tmp_path),
        "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'checkout.db'}",
    )  # fmt: skip
    assert code == 0, out + err
    assert f"Reusing the Temporal server already on 127.0.0.1:{port}" in out
    assert len(outcomes(out)) == len(EXPECTED)
    assert served(port)
    await dev_env.client.workflow_service.get_system_info(GetSystemInfoRequest())
