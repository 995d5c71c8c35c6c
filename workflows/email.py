"""``EmailDeliveryWorkflow``: one e-mail the outbox could not send at once, tried again with
backoff until it goes out or ``CHECKOUT_EMAIL_RETRY_FOR`` has passed (then it is ``failed``, for
an operator's ``checkout emails resend``).

A workflow per e-mail rather than a dispatcher polling the outbox: it exists only for the rare
e-mail that failed, it is durable through worker restarts and deploys by construction, its
backoff is Temporal's retry policy, and an operator sees each undelivered e-mail (and why) as a
run of its own. Every try carries the same Message-ID (the outbox keeps it), so a message the
server may already have accepted is never sent again as a fresh one: at worst it arrives twice
with one Message-ID, which mail clients fold.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from checkout.contract import EMAIL_DELIVERY_WORKFLOW
    from checkout.models import EmailDeliveryInput
    from checkout.models import EmailInfo
    from checkout.steps import CheckoutSteps
    from workflows.options import MUST_FINISH


#: The first try again after the one the checkout made.
FIRST_RETRY = timedelta(seconds=10)
#: The longest pause between tries, for the default window of two days.
LONGEST_RETRY = timedelta(minutes=30)


def retry_interval_cap(retry_for_seconds: float) -> timedelta:
    """The longest pause between tries: a fortieth of the retry window, at most 30 minutes (the
    default window of two days), at least the first pause. So an e-mail goes out at most that
    long after the SMTP server is back: half an hour after an outage of hours, under a minute
    for the short windows tests and demos use."""
    return max(FIRST_RETRY, min(LONGEST_RETRY, timedelta(seconds=retry_for_seconds / 40)))


@workflow.defn(name=EMAIL_DELIVERY_WORKFLOW)
class EmailDeliveryWorkflow:
    @workflow.run
    async def run(self, request: EmailDeliveryInput) -> EmailInfo:
        email = request.email
        workflow.set_current_details(
            f"**delivering** the {email.purpose.value} e-mail of order {email.order_id}"
        )
        try:
            sent = await workflow.execute_activity_method(
                CheckoutSteps.send_email,
                email,
                # Longer than the SMTP client's own timeout, so a slow server is not given a
                # second copy while it may still be accepting the first.
                start_to_close_timeout=timedelta(seconds=90),
                schedule_to_close_timeout=timedelta(seconds=request.retry_for_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=FIRST_RETRY,
                    backoff_coefficient=2.0,
                    maximum_interval=retry_interval_cap(request.retry_for_seconds),
                ),
                summary=f"send the {email.purpose.value} e-mail",
            )
        except ActivityError as error:
            workflow.logger.warning(
                "e-mail %s of %s given up: %s", email.purpose.value, email.order_id, error
            )
            failed = await workflow.execute_activity_method(
                CheckoutSteps.give_up_email, email, summary="mark the e-mail failed", **MUST_FINISH
            )
            workflow.set_current_details(f"**failed**: {email.purpose.value} of {email.order_id}")
            return failed
        workflow.set_current_details(f"**sent**: {email.purpose.value} of {email.order_id}")
        return sent
