# ruff: noqa: INP001, T201, S603 - a docs tool run by hand: it prints, and runs the project's commands
"""Take the operator guide's screenshots (docs/images/*.png) from the Web UI of a running demo.

Not part of the project's code: it needs Playwright and a Chromium, which the project does not
depend on. How to run it:

    apt-get install -y chromium                      # Debian's; Playwright's own is not needed
    python3 -m venv /tmp/pw && /tmp/pw/bin/pip install playwright
    .venv/bin/python -m demo.stack &                 # the demo, with its Web UI, left running
    /tmp/pw/bin/python docs/images/take_screenshots.py

With a demo on other ports: --ui http://127.0.0.1:18233 --address 127.0.0.1:17233
--data-dir DIR --codec-port 18081 --ui-codec-port 18082 (the demo's flags of the same names).

Besides the demo's example orders it places three more, through the project's own commands
(.venv/bin/checkout and .venv/bin/temporal, with the demo's key and token from DIR/demo.env):
one of a corporate account, which waits in AwaitingApproval; one that parks in NeedsAttention
(the demo pauses device-backup); and one more of the same account for the same product, which
waits Queued behind it. It then compensates the parked one through the UI's update form.
The browser profile (column choices and saved views live in the browser's localStorage) is
a fresh temporary folder. Each image is 1400 x 900.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page
from playwright.sync_api import Route
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
BIN = ROOT / ".venv" / "bin"
WIDTH, HEIGHT = 1400, 900
WAIT_MS = 2500
CHECKOUTS = 'WorkflowType = "CheckoutWorkflow"'
#: Saved views: name -> CheckoutStatus.
VIEWS = {
    "needs-attention": "NeedsAttention",
    "queued": "Queued",
    "awaiting-approval": "AwaitingApproval",
}


def account(account_id: str, *, corporate: bool) -> dict[str, object]:
    """A made-up German account of its own, so that no earlier order of the account (of the
    demo, or of an earlier run of this script) holds the products these orders change."""
    return {
        "account_id": account_id,
        "name": "Globex Holdings GmbH" if corporate else "Erika Beispiel",
        "billing_email": "procurement@globex.example" if corporate else "erika@beispiel.example",
        "country": "DE",
        "locale": "en",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "corporate": corporate,
        "subscriptions": [],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ui", default="http://127.0.0.1:8233")
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument("--codec-port", type=int, default=8081)
    parser.add_argument("--ui-codec-port", type=int, default=8082)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


# --- the orders, through the project's commands ------------------------------------------------


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ, TEMPORAL_ADDRESS=args.address, TEMPORAL_NAMESPACE="default")
    env.setdefault("CHECKOUT_DATABASE_URL", f"sqlite+aiosqlite:///{args.data_dir / 'checkout.db'}")
    for line in (args.data_dir / "demo.env").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not name.startswith("#"):
            env[name] = value
    return env


def run(env: dict[str, str], *command: str) -> str:
    print("$", *(c if len(c) < 60 else c[:57] + "..." for c in command), flush=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)}: {done.stdout}{done.stderr}")
    return done.stdout


def write(folder: Path, name: str, value: object) -> str:
    path = folder / name
    path.write_text(json.dumps(value))
    return str(path)


def count(env: dict[str, str], query: str) -> int:
    out = run(env, str(BIN / "temporal"), "workflow", "count", "--query", query)
    return int(out.split(":")[-1].strip())


def wait_for(env: dict[str, str], order_id: str, status: str, within: float = 120) -> None:
    query = f'WorkflowId = "order-{order_id}" AND CheckoutStatus = "{status}"'
    deadline = time.monotonic() + within
    while count(env, query) == 0:
        if time.monotonic() > deadline:
            sys.exit(f"order {order_id} did not reach {status} within {within:.0f} s")
        time.sleep(1)


def place_orders(env: dict[str, str], folder: Path) -> dict[str, str]:
    """Three orders beside the demo's: AwaitingApproval, NeedsAttention and one Queued behind."""
    suffix = datetime.now(UTC).strftime("%H%M%S")
    ids = {name: f"shots-{name}-{suffix}" for name in ("corporate", "parked", "queued")}
    corp, consumer = f"acc-corp-{suffix}", f"acc-shop-{suffix}"
    checkout = str(BIN / "checkout")
    accounts = [account(corp, corporate=True), account(consumer, corporate=False)]
    run(env, checkout, "accounts", "import", write(folder, "accounts.json", accounts))
    corporate = {
        "order_id": ids["corporate"],
        "account_id": corp,
        "vat_id": "DE136695976",
        "items": [
            {"product": "remote-support", "plan": "premium", "seats": 25,
             "billing_cycle": "annual", "mode": "buy"},
        ],
    }  # fmt: skip
    run(env, checkout, "submit", write(folder, "corporate.json", corporate))

    def backup(order_id: str, seats: int) -> dict[str, object]:
        return {
            "order_id": order_id,
            "account_id": consumer,
            "items": [
                {"product": "device-backup", "plan": "essentials", "seats": seats,
                 "billing_cycle": "monthly", "mode": "buy"},
            ],
            "payment_method": "pm_card_visa",
        }  # fmt: skip

    run(env, checkout, "submit", write(folder, "parked.json", backup(ids["parked"], 3)))
    wait_for(env, ids["parked"], "NeedsAttention")
    # `submit` would wait for the decision, which a queued order gets only when it runs:
    # start it as a backend without the codec does, with plain JSON.
    run(
        env, str(BIN / "temporal"), "workflow", "start", "--type", "CheckoutWorkflow",
        "--task-queue", "checkout", "--workflow-id", f"order-{ids['queued']}",
        "--input", json.dumps(backup(ids["queued"], 5)),
        "--static-summary", f"Order {ids['queued']} for {consumer} (started with plain JSON)",
    )  # fmt: skip
    wait_for(env, ids["queued"], "Queued")
    return ids


# --- the browser --------------------------------------------------------------------------------


def settle(page: Page, ms: int = WAIT_MS) -> None:
    page.wait_for_load_state("load")
    page.wait_for_timeout(ms)


def shot(page: Page, out: Path, name: str) -> None:
    path = out / name
    page.screenshot(path=str(path))
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)


def visible(page: Page, selector: str) -> Callable[[], None]:
    return page.locator(f"{selector} >> visible=true").first.click


def list_url(ui: str, query: str) -> str:
    return f"{ui}/namespaces/default/workflows?query={quote(query)}"


def order_url(ui: str, order_id: str) -> str:
    return f"{ui}/namespaces/default/workflows/order-{order_id}"


def configure_columns(page: Page) -> None:
    """Through the list's column settings: keep Status and Workflow ID, add CheckoutStatus and
    AccountId (at 1400 px the start and end times would push AccountId off the table)."""
    visible(page, "[data-testid=workflows-summary-table-configuration-button]")()
    page.wait_for_timeout(800)
    for name in ("Run ID", "Type", "Start", "End"):
        visible(page, f'[data-testid="orderable-list-item-{name}-remove-button"]')()
    for name in ("CheckoutStatus", "AccountId"):
        visible(page, f'[data-testid="orderable-list-item-{name}-add-button"]')()
    page.keyboard.press("Escape")
    page.wait_for_timeout(800)


def save_view(page: Page, ui: str, name: str, status: str) -> None:
    page.goto(list_url(ui, f'{CHECKOUTS} AND CheckoutStatus = "{status}"'))
    settle(page)
    visible(page, "[data-testid=create-view-button]")()
    page.wait_for_timeout(500)
    page.locator("[data-testid=workflow-save-view-modal-input] >> visible=true").first.fill(name)
    visible(page, "dialog [data-testid=confirm-modal-button]")()
    settle(page, 1500)


def open_order(page: Page, ui: str, order_id: str) -> None:
    page.goto(order_url(ui, order_id))
    page.locator("[data-testid=execution-status] >> visible=true").first.wait_for()
    settle(page)


def open_tab(page: Page, label: str) -> None:
    visible(page, f'[role=tab]:has-text("{label}"), a:has-text("{label}")')()
    settle(page, 1500)


def take(args: argparse.Namespace, ids: dict[str, str], demo_order: str) -> None:
    ui, out = args.ui, args.out
    profile = tempfile.mkdtemp(prefix="checkout-shots-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            args=["--no-sandbox"],
            viewport={"width": WIDTH, "height": HEIGHT},
        )
        page = context.new_page()

        # The saved views, each with its orders.
        page.goto(list_url(ui, CHECKOUTS))
        settle(page)
        configure_columns(page)
        for name, status in VIEWS.items():
            save_view(page, ui, status, status)
            shot(page, out, f"saved-view-{name}.png")

        # An order's current details (User Metadata) and its search attributes.
        open_order(page, ui, ids["parked"])
        open_tab(page, "User Metadata")
        shot(page, out, "order-detail.png")
        open_tab(page, "Search Attributes")
        shot(page, out, "order-search-attributes.png")

        # A finished order: input and result, decoded by the codec server through the proxy.
        open_order(page, ui, demo_order)
        shot(page, out, "order-result.png")
        open_tab(page, "Event History")
        shot(page, out, "history-decoded.png")

        # The same, as a UI sees it that reaches the codec server without the token (401).
        plain = context.new_page()
        proxy = f"http://127.0.0.1:{args.ui_codec_port}"
        server = f"http://127.0.0.1:{args.codec_port}"

        def around_the_proxy(route: Route) -> None:
            route.continue_(url=route.request.url.replace(proxy, server, 1))

        plain.route(f"{proxy}/**", around_the_proxy)
        open_order(plain, ui, demo_order)
        open_tab(plain, "Event History")
        shot(plain, out, "history-encrypted.png")
        plain.close()

        compensate_from_the_ui(page, ui, ids["parked"], out)

        # Last, the list: every state the orders above reached, Temporal's status beside ours.
        page.goto(list_url(ui, CHECKOUTS))
        settle(page)
        shot(page, out, "workflow-list.png")
        context.close()


def compensate_from_the_ui(page: Page, ui: str, order_id: str, out: Path) -> None:
    """The update form filled in for ``compensate``, sent; then the order, Completed."""
    open_order(page, ui, order_id)
    visible(page, 'button:has-text("More Actions")')()
    visible(page, "[data-testid=update-button]")()
    page.wait_for_timeout(2800)  # the UI asks the worker which updates the workflow has
    dialog = page.locator("dialog[open]").first
    # The name picker is a disabled <input> inside a clickable box: click the box.
    box = dialog.locator("[data-testid=update-select] >> xpath=..").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.locator("[role=option]:has-text('compensate') >> visible=true").first.click()
    page.wait_for_timeout(500)
    dialog.locator(".cm-content, textarea").first.click()
    page.keyboard.type('{"reason": "backend cannot be restored this week"}')
    page.wait_for_timeout(500)
    shot(page, out, "send-update.png")
    dialog.locator("[data-testid=confirm-modal-button]").first.click()
    settle(page, 3000)
    open_order(page, ui, order_id)
    shot(page, out, "order-compensated.png")


def main() -> None:
    args = parse_args()
    env = environment(args)
    demo_order = run(
        env, str(BIN / "temporal"), "workflow", "list", "--limit", "1", "--query",
        f'{CHECKOUTS} AND CheckoutStatus = "Completed"'
        ' AND WorkflowId STARTS_WITH "order-demo-seat"',
        "--output", "json",
    )  # fmt: skip
    seat_increase = json.loads(demo_order)[0]["execution"]["workflowId"].removeprefix("order-")
    earlier = os.environ.get("SHOTS_SUFFIX")  # an earlier run's orders: the browser part again
    if earlier:
        ids = {name: f"shots-{name}-{earlier}" for name in ("corporate", "parked", "queued")}
    else:
        with tempfile.TemporaryDirectory() as folder:
            ids = place_orders(env, Path(folder))
    take(args, ids, seat_increase)


if __name__ == "__main__":
    main()
