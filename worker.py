"""The checkout worker: builds the activities with their dependencies from the environment and
runs the workflows and activities on the ``checkout`` task queue until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import inspect
import logging
import signal
import sys
from collections.abc import AsyncIterator
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker import Worker
from temporalio.worker import WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from activities.checkout import CheckoutActivities
from activities.reconcile import ReconcileActivities
from activities.reconcile import Reconciler
from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.client import connect_client
from checkout.codec import describe_payload_keys
from checkout.config import ConfigError
from checkout.config import Settings
from checkout.gateway import PaymentGateway
from checkout.gateway import SandboxGateway
from checkout.mail import Mailer
from checkout.mail import SmtpMailer
from checkout.metrics import METRICS_HOST
from checkout.metrics import CheckoutMetrics
from checkout.metrics import metrics_runtime
from checkout.metrics import watch_waiting
from checkout.process import exit_process
from checkout.store import Store
from checkout.stripe_gateway import StripeGateway
from checkout.vies import VatVerifier
from workflows.checkout import CheckoutWorkflow
from workflows.email import EmailDeliveryWorkflow
from workflows.interceptors import CheckoutInterceptor
from workflows.reconcile import ReconcileWorkflow
from workflows.trial import TrialWorkflow

log = logging.getLogger("checkout.worker")

GRACEFUL_SHUTDOWN = timedelta(seconds=20)

#: Side-effect-free modules the workflow sandbox may share between runs.
PASSED_THROUGH = ("pydantic", "pydantic_core", "annotated_types", "checkout", "stdnum")

WORKFLOWS: Sequence[type] = (
    CheckoutWorkflow,
    TrialWorkflow,
    ReconcileWorkflow,
    EmailDeliveryWorkflow,
)


def build_gateway(settings: Settings, store: Store) -> PaymentGateway:
    """The payment gateway CHECKOUT_PAYMENT_GATEWAY names: the sandbox, or Stripe."""
    if settings.payment_gateway == "stripe":
        if not settings.stripe_api_key:
            raise ConfigError("STRIPE_API_KEY: must be set when CHECKOUT_PAYMENT_GATEWAY=stripe")
        return StripeGateway(settings.stripe_api_key, store, api_base=settings.stripe_api_base)
    return SandboxGateway(store)


def build_activities(
    settings: Settings,
    store: Store,
    *,
    catalog: Catalog | None = None,
    mailer: Mailer | None = None,
    metrics: CheckoutMetrics | None = None,
) -> CheckoutActivities:
    """Wire the activities to their dependencies: the one place that decides what is real."""
    return CheckoutActivities(
        store=store,
        gateway=build_gateway(settings, store),
        mailer=mailer or SmtpMailer(settings),
        catalog=catalog or load_catalog(settings.catalog_path),
        settings=settings,
        vat_verifier=VatVerifier(settings.vat_verification, vies_url=settings.vies_url),
        metrics=metrics,
    )


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """Temporal's sandbox unless CHECKOUT_WORKFLOW_SANDBOX=off. The sandbox re-imports every
    module a workflow imports, for every run it builds; the pure modules (our models and rules,
    pydantic) are passed through instead: they hold no state a run could change, and re-importing
    them costs CPU and memory."""
    if not settings.workflow_sandbox:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSED_THROUGH)
    )


def build_worker(
    client: Client, settings: Settings, activities: CheckoutActivities, **options: object
) -> Worker:
    reconcile = ReconcileActivities(
        Reconciler(client=client, store=activities.store, activities=activities)
    )
    tuned: dict[str, Any] = {
        # Runs stay cached between their tasks (no replay from the start for each task). Only
        # runs with work to do need a place: orders in flight (an order has about five tasks
        # within a second or two) and their e-mail and trial children. Idle runs (trials waiting
        # on their timers, parked orders) are evicted and replayed when they wake. A larger
        # cache only holds idle runs longer: memory that grows with the orders seen.
        "max_cached_workflows": 250,
    }
    tuned.update(options)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=[*activities.all(), reconcile.reconcile],  # type: ignore[list-item]
        interceptors=[CheckoutInterceptor()],
        workflow_runner=workflow_runner(settings),
        # Small limits: the worker shares two cores with the Temporal server and the database.
        # Local activities (the order's own record) run beside the activities.
        max_concurrent_activities=20,
        max_concurrent_local_activities=20,
        max_concurrent_workflow_tasks=20,
        # On SIGTERM, running activities get this long to finish before they are cancelled
        # (and retried by another worker); our activities are short.
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        **tuned,
    )


async def run_worker(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    settings = settings or Settings.from_env()
    store = Store.from_url(settings.database_url)
    try:
        await _run(settings, store, stop)
    finally:
        await store.close()


async def _run(settings: Settings, store: Store, stop: asyncio.Event | None) -> None:
    await store.migrate()
    # With CHECKOUT_METRICS_PORT, the client (and so the worker) runs on a runtime that serves
    # the SDK's metrics and ours from one endpoint (docs/metrics.md).
    runtime = metrics_runtime(settings.metrics_port) if settings.metrics_port else None
    client = await connect_client(payload_keys=settings.payload_keys, runtime=runtime)
    metrics = CheckoutMetrics(runtime.metric_meter if runtime else None)
    worker = build_worker(client, settings, build_activities(settings, store, metrics=metrics))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not on the main thread (embedded in the demo stack): the caller owns the signals.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if runtime is not None:
        log.info("metrics on http://%s:%s/metrics", METRICS_HOST, settings.metrics_port)
    log.info(
        "worker polling task queue %r on %s (database %s)",
        settings.task_queue,
        client.service_client.config.target_host,
        store.engine.url.render_as_string(hide_password=True),
    )
    log.info(describe_payload_keys(settings.payload_keys))
    async with worker, _watching(client, settings, metrics, serving=runtime is not None):
        await stop.wait()
        log.info(
            "shutting down: running activities get %ss to finish",
            int(GRACEFUL_SHUTDOWN.total_seconds()),
        )
    log.info("worker stopped")


@contextlib.asynccontextmanager
async def _watching(
    client: Client, settings: Settings, metrics: CheckoutMetrics, *, serving: bool
) -> AsyncIterator[None]:
    """While metrics are served: the gauges of waiting orders kept current in the background."""
    if not serving:
        yield
        return
    task = asyncio.create_task(watch_waiting(client, settings.task_queue, metrics))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def precompile_workflows() -> None:
    """Write the workflow modules' bytecode once. The sandbox imports a workflow's module afresh
    for every run it builds; without a cached ``.pyc`` (``PYTHONDONTWRITEBYTECODE``, common in
    containers) each of those imports compiles the source again, a few milliseconds of CPU per
    order. A folder the worker may not write to is left as it is."""
    compileall.compile_dir(Path(inspect.getfile(CheckoutWorkflow)).parent, quiet=2)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    precompile_workflows()
    code = 0
    try:
        asyncio.run(run_worker())
    except Exception as exc:
        print(f"worker: {exc}", file=sys.stderr)  # noqa: T201 - the one-line error for operators
        code = 1
    # Everything is closed by now: leave before the interpreter's teardown can abort.
    exit_process(code)


if __name__ == "__main__":
    main()
