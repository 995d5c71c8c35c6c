"""``ReconcileWorkflow``: the daily check that the store and Temporal agree (see
activities/reconcile.py). Started by the ``checkout-reconcile`` schedule that ``checkout setup``
creates; it only reports, in its result and in the worker's log: repairs are an operator's
``checkout reconcile --fix``."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from checkout.contract import RECONCILE_WORKFLOW
    from checkout.models import ReconcileInput
    from checkout.models import ReconcileReport
    from checkout.steps import ReconcileSteps


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self, request: ReconcileInput) -> ReconcileReport:
        report = await workflow.execute_activity_method(
            ReconcileSteps.reconcile,
            request,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=5),
            summary="compare the store with Temporal",
        )
        for finding in report.findings:
            workflow.logger.warning(
                "reconcile: order %s: %s (%s)", finding.order_id, finding.problem, finding.detail
            )
        workflow.set_current_details(
            f"checked {report.checked_orders} unfinished orders:"
            f" {len(report.findings) or 'nothing'} inconsistent"
            + ("" if not report.findings else "; repair with `checkout reconcile --fix`")
        )
        return report
