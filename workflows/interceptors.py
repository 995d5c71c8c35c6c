"""Worker interceptors of the checkout.

A start with more than one argument never reaches ``CheckoutWorkflow.run`` as such: the SDK
would call ``run`` with too many arguments and fail every workflow task, forever and with no
``CheckoutStatus`` for an operator to find. The interceptor hands ``run`` one stand-in argument
instead, which it rejects as ``invalid_order``.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.worker import ExecuteWorkflowInput
from temporalio.worker import Interceptor
from temporalio.worker import WorkflowInboundInterceptor
from temporalio.worker import WorkflowInterceptorClassInput

from checkout.contract import CHECKOUT_WORKFLOW
from workflows.checkout import WRONG_ARGUMENT_COUNT


class _OneArgument(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:  # noqa: A002 - SDK name
        # By type name: inside the sandbox the workflow class is a fresh import of its module.
        if workflow.info().workflow_type == CHECKOUT_WORKFLOW and len(input.args) > 1:
            stand_in = Payload(
                metadata={"encoding": WRONG_ARGUMENT_COUNT},
                data=f"{len(input.args)} arguments".encode(),
            )
            input.args = [RawValue(stand_in)]
        return await super().execute_workflow(input)


class CheckoutInterceptor(Interceptor):
    """Registered on every worker and replayer that runs ``CheckoutWorkflow``."""

    def workflow_interceptor_class(
        self,
        input: WorkflowInterceptorClassInput,  # noqa: A002, ARG002 - the SDK's signature
    ) -> type[WorkflowInboundInterceptor]:
        return _OneArgument
