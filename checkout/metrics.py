"""The checkout's own Prometheus metrics (docs/metrics.md), served with the Temporal SDK's from
one endpoint: the worker builds its client on :func:`metrics_runtime`, and the SDK's Prometheus
exporter serves both on ``127.0.0.1:CHECKOUT_METRICS_PORT/metrics``.

Counters are recorded by the activities, after the side effect they count has happened (an
order's outcome recorded, money charged or refunded, an e-mail sent or given up), never by
workflow code: a replay re-runs workflow code but never an activity. An order's outcome is
counted once, when the store records it; money and e-mails are counted per activity execution,
so the rare activity that ran to its end but whose completion Temporal never heard of (a worker
killed in between) runs again and counts again.

Without a port, :class:`CheckoutMetrics` records into the SDK's no-op meter: nothing is kept.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

from temporalio.client import Client
from temporalio.common import MetricCounter
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig
from temporalio.runtime import Runtime
from temporalio.runtime import TelemetryConfig

from checkout.config import ConfigError
from checkout.contract import CHECKOUT_STATUS
from checkout.contract import CHECKOUT_WORKFLOW
from checkout.models import CheckoutResult
from checkout.models import CheckoutStatus
from checkout.money import to_minor_units

log = logging.getLogger("checkout.metrics")

#: Metrics are served on loopback only: put a scraper (or a proxy) beside the worker.
METRICS_HOST = "127.0.0.1"
#: How often the worker counts the orders that wait (the gauges).
WAITING_INTERVAL = 15.0
#: The waiting states an operator watches, and the gauge of each.
WAITING_GAUGES = {
    CheckoutStatus.NEEDS_ATTENTION: "checkout_orders_parked",
    CheckoutStatus.QUEUED: "checkout_orders_queued",
    CheckoutStatus.AWAITING_APPROVAL: "checkout_orders_awaiting_approval",
}


def metrics_runtime(port: int) -> Runtime:
    """An SDK runtime that serves its metrics, and ours, in Prometheus' text format on
    ``127.0.0.1:port/metrics``: counters end in ``_total``, durations are in seconds. Raises
    when the port cannot be bound."""
    config = PrometheusConfig(
        bind_address=f"{METRICS_HOST}:{port}",
        counters_total_suffix=True,
        durations_as_seconds=True,
    )
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=config))
    except ValueError as exc:  # the SDK's word for a port it could not bind
        raise ConfigError(
            f"CHECKOUT_METRICS_PORT: cannot serve metrics on {METRICS_HOST}:{port}: {exc}"
        ) from None


class CheckoutMetrics:
    """The checkout's counters and gauges, on ``meter`` (the SDK's no-op meter by default)."""

    def __init__(self, meter: MetricMeter | None = None) -> None:
        meter = meter or MetricMeter.noop
        self._orders = meter.create_counter(
            "checkout_orders", "Orders ended, by outcome and reason, counted when recorded"
        )
        self._charged = meter.create_counter(
            "checkout_charged_minor_units",
            "Money charged (card payments, and debits once settled), in the currency's minor unit",
        )
        self._refunded = meter.create_counter(
            "checkout_refunded_minor_units",
            "Money refunded (compensations and reconciliation), in the currency's minor unit",
        )
        self._emails = meter.create_counter(
            "checkout_emails",
            "E-mail send outcomes by status: sent; pending (an attempt failed, the outbox tries"
            " again); failed (the outbox gave up)",
        )
        self._waiting = {
            state: meter.create_gauge(name, f"Running orders in {state.value}")
            for state, name in WAITING_GAUGES.items()
        }

    def order_finished(self, result: CheckoutResult) -> None:
        self._orders.add(1, {"outcome": result.status.value, "reason": result.reason or "none"})

    def charged(self, amount: Decimal, currency: str) -> None:
        self._money(self._charged, amount, currency)

    def refunded(self, amount: Decimal, currency: str) -> None:
        self._money(self._refunded, amount, currency)

    @staticmethod
    def _money(counter: MetricCounter, amount: Decimal, currency: str) -> None:
        try:
            units = to_minor_units(amount, currency)
        except ValueError as exc:
            # Counting must never fail the step that moved the money (it would run again).
            log.warning("metrics: %s %s not counted: %s", amount, currency, exc)
            return
        counter.add(units, {"currency": currency})

    def email(self, status: str, purpose: str) -> None:
        self._emails.add(1, {"status": status, "purpose": purpose})

    def waiting(self, state: CheckoutStatus, count: int) -> None:
        self._waiting[state].set(count)


def waiting_query(task_queue: str, state: CheckoutStatus) -> str:
    """The visibility query for the running orders of ``task_queue`` in ``state``."""
    # A task queue name may hold any character: quotes and backslashes are escaped.
    queue = task_queue.replace("\\", "\\\\").replace("'", "\\'")
    return (
        f"WorkflowType = '{CHECKOUT_WORKFLOW}' AND ExecutionStatus = 'Running'"
        f" AND TaskQueue = '{queue}' AND {CHECKOUT_STATUS.name} = '{state.value}'"
    )


async def count_waiting(
    client: Client, task_queue: str, metrics: CheckoutMetrics
) -> dict[CheckoutStatus, int]:
    """Count the task queue's running orders in each waiting state (three visibility counts,
    eventually consistent like every visibility query) and set the gauges."""
    counts: dict[CheckoutStatus, int] = {}
    for state in WAITING_GAUGES:
        counted = await client.count_workflows(waiting_query(task_queue, state))
        counts[state] = counted.count
        metrics.waiting(state, counted.count)
    return counts


async def watch_waiting(
    client: Client,
    task_queue: str,
    metrics: CheckoutMetrics,
    interval: float = WAITING_INTERVAL,
) -> None:
    """Keep the waiting gauges current until cancelled; a failed count is logged and the gauges
    keep their last values until the next count succeeds."""
    failing = False
    while True:
        try:
            await count_waiting(client, task_queue, metrics)
        except Exception as exc:  # a gauge must never stop the worker
            if not failing:
                log.warning("metrics: counting waiting orders failed: %s", exc)
            failing = True
        else:
            failing = False
        await asyncio.sleep(interval)
