"""Metrics as operators scrape them (docs/metrics.md): ``worker.py`` as its own process with
CHECKOUT_METRICS_PORT, on the Temporal dev server, a real database and a real SMTP server; the
endpoint serves the SDK's metrics and ours, and ours move with real orders."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.runtime import MetricBuffer
from temporalio.runtime import Runtime
from temporalio.runtime import TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from activities.checkout import CheckoutActivities
from checkout.config import Settings
from checkout.metrics import CheckoutMetrics
from checkout.models import CheckoutResult
from checkout.models import CheckoutState
from checkout.models import CheckoutStatus
from checkout.models import EmailPurpose
from checkout.models import ResultStatus
from checkout.models import SendEmailInput
from checkout.money import to_minor_units
from checkout.store import Store
from devtools import LOOPBACK
from devtools import SmtpSink
from devtools import free_port
from tests.helpers import MakeSettings
from tests.helpers import activities_with
from tests.helpers import address_of
from tests.helpers import eventually
from tests.helpers import make_store
from tests.helpers import new_order
from tests.helpers import order
from tests.helpers import park_order
from tests.helpers import reaches
from tests.helpers import result_of
from tests.helpers import run_order
from tests.helpers import run_worker_to_exit
from tests.helpers import seeded_account
from tests.helpers import settings_for
from tests.helpers import start_order
from tests.helpers import worker_env
from tests.helpers import worker_process
from tests.helpers.metrics import Samples
from tests.helpers.metrics import parse_metrics
from tests.helpers.metrics import scrape

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parent.parent / "docs"
_METRIC_NAME = re.compile(r"\b(?:checkout|temporal)_[a-z_]*[a-z]")


def metric_names(text: str) -> set[str]:
    """The metric names in ``text``, a histogram's series by the histogram's name."""
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in _METRIC_NAME.findall(text)}


def documented() -> set[str]:
    return metric_names((DOCS / "metrics.md").read_text())


def minor(result: CheckoutResult, what: str) -> int:
    info = getattr(result, what)
    assert info is not None, result
    return to_minor_units(info.amount, info.currency)


async def test_metrics_move_with_real_orders(
    dev_env: WorkflowEnvironment, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """A paid, a declined and a parked-then-compensated order move the outcome, money and e-mail
    counters by exactly their amounts and the parked gauge to 1, next to the SDK's own metrics."""
    port = free_port()
    async with make_store("sqlite", tmp_path) as store:
        settings = settings_for(store, smtp_sink, provisioning_max_attempts=1)
        env = worker_env(
            address_of(dev_env),
            settings,
            CHECKOUT_METRICS_PORT=str(port),
            CHECKOUT_PROVISIONING_MAX_ATTEMPTS="1",
        )
        async with worker_process(env, tmp_path / "worker.log") as worker:
            assert f"metrics on http://127.0.0.1:{port}/metrics" in worker.log()

            async def gauges_counted() -> Samples:
                samples = await asyncio.to_thread(scrape, port)
                for name in (
                    "checkout_orders_parked",
                    "checkout_orders_queued",
                    "checkout_orders_awaiting_approval",
                ):
                    assert name in samples.names(), sorted(samples.names())
                    assert samples.types[name] == "gauge"
                return samples

            before = await eventually(gauges_counted)
            assert before.value("checkout_orders_total") == 0

            paid = await run_order(dev_env.client, settings, await new_order(store))
            declined = await run_order(
                dev_env.client,
                settings,
                await new_order(store, payment_method="pm_card_chargeDeclined"),
            )
            compensated, waited, parked = await park_queue_and_compensate(
                dev_env, store, settings, port
            )
            await check_counters(port, smtp_sink, [paid, waited], declined, compensated, parked)
            code, _ = await worker.stop()
        assert code == 0


async def park_queue_and_compensate(
    dev_env: WorkflowEnvironment, store: Store, settings: Settings, port: int
) -> tuple[CheckoutResult, CheckoutResult, Samples]:
    """Pause provisioning, let an order park and a second order of the account queue behind it,
    see both gauges at 1; resume, compensate the first, and the second completes."""
    first = await new_order(store)
    handle, _ = await park_order(dev_env.client, store, settings, first)
    behind = await start_order(dev_env.client, settings, order(str(first["account_id"])))
    await reaches(behind, CheckoutStatus.QUEUED)

    async def waiting_counted() -> Samples:
        samples = await asyncio.to_thread(scrape, port)
        waiting = {
            name: samples.value(name)
            for name in ("checkout_orders_parked", "checkout_orders_queued")
        }
        assert waiting == {"checkout_orders_parked": 1, "checkout_orders_queued": 1}
        assert samples.value("checkout_orders_awaiting_approval") == 0
        return samples

    # The gauges are counted every 15 s.
    parked = await eventually(waiting_counted, within=40)
    await store.set_paused("remote-support", False)
    await handle.execute_update("compensate", {"reason": "metrics test"}, result_type=CheckoutState)
    return await result_of(handle), await result_of(behind), parked


async def check_counters(
    port: int,
    smtp_sink: SmtpSink,
    completed: list[CheckoutResult],
    declined: CheckoutResult,
    compensated: CheckoutResult,
    parked: Samples,
) -> None:
    """The counters once the orders ended: one per outcome, the money to the cent, one e-mail
    counted per e-mail that arrived, and the SDK's metrics beside ours."""
    assert [r.status for r in completed] == [ResultStatus.COMPLETED] * len(completed)
    assert (declined.status, declined.reason) == (ResultStatus.REJECTED, "card_declined")
    assert (compensated.status, compensated.reason) == (
        ResultStatus.COMPENSATED,
        "operator_compensated",
    )
    assert compensated.charge is not None
    currency = compensated.charge.currency
    charged = sum(minor(r, "charge") for r in [*completed, compensated])

    async def counted() -> Samples:
        samples = await asyncio.to_thread(scrape, port)
        orders = {
            (labels["outcome"], labels["reason"]): samples.value("checkout_orders_total", **labels)
            for labels in samples.labels_of("checkout_orders_total")
        }
        assert orders == {
            ("completed", "none"): len(completed),
            ("rejected", "card_declined"): 1,
            ("compensated", "operator_compensated"): 1,
        }
        assert samples.value("checkout_charged_minor_units_total", currency=currency) == charged
        assert samples.value("checkout_refunded_minor_units_total", currency=currency) == minor(
            compensated, "refund"
        )
        arrived = len(smtp_sink.messages)
        assert arrived >= 3  # two confirmations and the compensation notice at least
        assert samples.value("checkout_emails_total", status="sent") == arrived
        assert samples.value("checkout_emails_total", status="failed") == 0
        return samples

    samples = await eventually(counted)
    assert samples.types["checkout_orders_total"] == "counter"
    # docs/metrics.md lists exactly the checkout's metrics the endpoint serves.
    ours = {name for name in samples.types if name.startswith("checkout_")}
    assert ours == {name for name in documented() if name.startswith("checkout_")}
    # The SDK's own metrics come from the same endpoint: runs completed, step latencies.
    assert samples.value("temporal_workflow_completed_total", workflow_type="CheckoutWorkflow") >= 4
    assert samples.types["temporal_activity_execution_latency"] == "histogram"
    assert (
        samples.value("temporal_activity_execution_latency_count", activity_type="charge_payment")
        >= 3
    )
    # While the first order was parked, nothing had been refunded yet.
    assert parked.value("checkout_refunded_minor_units_total") == 0


async def test_a_taken_metrics_port_stops_the_worker_with_a_one_line_error(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A worker whose metrics port is taken exits 1 naming CHECKOUT_METRICS_PORT, no traceback."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'checkout.db'}")
        env = worker_env(address_of(dev_env), settings, CHECKOUT_METRICS_PORT=str(port))
        done = await run_worker_to_exit(env, within=60)
    assert done.returncode == 1, done.stderr
    assert "CHECKOUT_METRICS_PORT" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_parser_reads_the_text_format() -> None:
    """The test's reader of the exposition format keeps names, escaped labels and types."""
    samples = parse_metrics(
        "# HELP x_total Things\n# TYPE x_total counter\n"
        'x_total{a="1",b="say \\"hi\\""} 2\nx_total{a="2"} 3.5\ny 7\n'
    )
    assert samples.types == {"x_total": "counter"}
    assert samples.value("x_total") == 5.5
    assert samples.value("x_total", b='say "hi"') == 2
    assert samples.value("y") == 7


def buffered() -> tuple[CheckoutMetrics, MetricBuffer]:
    """Our metrics on an SDK runtime that buffers them for the test (no port bound)."""
    buffer = MetricBuffer(1000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer, attach_service_name=False))
    return CheckoutMetrics(runtime.metric_meter), buffer


def counted(buffer: MetricBuffer, name: str) -> list[tuple[int | float, dict[str, object]]]:
    return [
        (update.value, dict(update.attributes))
        for update in buffer.retrieve_updates()
        if update.metric.name == name
    ]


async def test_an_outcome_is_counted_once_by_the_run_that_records_it(
    store: Store, make_settings: MakeSettings
) -> None:
    """Recording an order's outcome counts it; a retry of the same record, or a run that does
    not own the order, counts nothing more."""
    metrics, buffer = buffered()
    acts = activities_with(make_settings(), store, CheckoutActivities, metrics=metrics)
    await store.claim_order("ord-1", "acc-1", "run-a", ["remote-support"])
    declined = CheckoutResult(
        order_id="ord-1", status=ResultStatus.REJECTED, reason="card_declined"
    )

    await acts.record_outcome("ord-1", "run-b", declined)
    assert counted(buffer, "checkout_orders") == []
    await acts.record_outcome("ord-1", "run-a", declined)
    await acts.record_outcome("ord-1", "run-a", declined)
    assert counted(buffer, "checkout_orders") == [
        (1, {"outcome": "rejected", "reason": "card_declined"})
    ]
    assert await store.held_locks() == []


async def test_emails_are_counted_by_what_became_of_them(store: Store, smtp_sink: SmtpSink) -> None:
    """A send that fails counts ``pending``, giving up counts ``failed``, and the resend that
    reaches the SMTP server counts ``sent``; each once."""
    metrics, buffer = buffered()
    acc = await seeded_account(store)
    email = SendEmailInput(
        order_id="ord-1",
        account_id=acc.account_id,
        purpose=EmailPurpose.REJECTION,
        reason="card_declined",
        message="the card was declined",
    )
    no_smtp = activities_with(settings_for(store), store, CheckoutActivities, metrics=metrics)
    with pytest.raises(OSError):
        await no_smtp.send_email(email)
    await no_smtp.give_up_email(email)
    smtp = activities_with(
        settings_for(store, smtp_sink), store, CheckoutActivities, metrics=metrics
    )
    await smtp.send_email(email)
    await smtp.send_email(email)  # already sent: nothing sent, nothing counted
    statuses = [labels for _, labels in counted(buffer, "checkout_emails")]
    assert statuses == [
        {"status": status, "purpose": "rejection"} for status in ("pending", "failed", "sent")
    ]
    assert len(smtp_sink.messages) == 1


def test_the_dashboard_and_the_alerts_use_documented_metrics() -> None:
    """The Grafana dashboard and the alert rules query only metrics docs/metrics.md lists, and
    the alerts are the three the page describes."""
    dashboard = json.loads((DOCS / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs and all(exprs)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    alerts = (DOCS / "monitoring" / "alerts.yml").read_text()
    assert metric_names(" ".join(exprs)) | metric_names(alerts) <= documented()
    names = re.findall(r"^\s*- alert: (\w+)$", alerts, re.MULTILINE)
    assert names == [
        "CheckoutOrdersParked",
        "CheckoutEmailsFailed",
        "CheckoutChargesWithoutCompletions",
    ]
    page = (DOCS / "metrics.md").read_text()
    assert all(f"`{name}`" in page for name in names)


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Prometheus' rule checker, Debian package prometheus) is not installed",
)
def test_the_alert_rules_and_dashboard_queries_pass_promtool(tmp_path: Path) -> None:
    """promtool accepts alerts.yml and every query of the dashboard, and each alert fires and
    stays quiet as alerts_test.yml says (parked for 15 minutes, a failed e-mail, charges with no
    order ending)."""
    dashboard = json.loads((DOCS / "monitoring" / "grafana-dashboard.json").read_text())
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m")
            rules += [
                f"      - record: panel_{panel['id']}_{target['refId']}",
                f"        expr: {json.dumps(expr)}",
            ]
    (tmp_path / "dashboard.yml").write_text("\n".join(rules) + "\n")
    monitoring = DOCS / "monitoring"
    for command in (
        ["check", "rules", str(monitoring / "alerts.yml"), str(tmp_path / "dashboard.yml")],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run(
            ["promtool", *command],
            cwd=monitoring,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_money_is_counted_in_minor_units_and_never_fails_the_step() -> None:
    """1725.50 EUR charged counts 172550 under its currency; an amount the money rules cannot
    express is logged and left out, never raised into the step that moved the money."""
    metrics, buffer = buffered()
    metrics.charged(Decimal("1725.50"), "EUR")
    metrics.refunded(Decimal("0.10"), "GBP")
    metrics.charged(Decimal(100), "JPY")
    metrics.charged(Decimal("0.001"), "EUR")
    updates = [
        (u.metric.name, u.value, dict(u.attributes))
        for u in buffer.retrieve_updates()
        if u.metric.name.startswith("checkout_")
    ]
    assert updates == [
        ("checkout_charged_minor_units", 172550, {"currency": "EUR"}),
        ("checkout_refunded_minor_units", 10, {"currency": "GBP"}),
    ]
