"""Activity options shared by the workflows, typed so mypy checks every call."""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy


class ActivityOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


def _until_done(
    timeout: timedelta,
    *,
    backoff_up_to: timedelta,
    first_retry_after: timedelta = timedelta(seconds=1),  # Temporal's default
) -> ActivityOptions:
    """Each attempt bounded by ``timeout``; retried without limit, the wait between attempts
    doubling from ``first_retry_after`` up to ``backoff_up_to``."""
    return ActivityOptions(
        start_to_close_timeout=timeout,
        retry_policy=RetryPolicy(
            initial_interval=first_retry_after, maximum_interval=backoff_up_to
        ),
    )


# Reads and pure computations: short, retried until they work (an outage of the store heals).
# Timeouts are short on purpose: after a worker dies, its running attempt is retried only once
# start_to_close passes, so it bounds how long a crash delays an order.
QUICK = _until_done(timedelta(seconds=10), backoff_up_to=timedelta(seconds=30))
# Undo steps and a trial's expiry must get through: retried without limit, backing off.
MUST_FINISH = _until_done(timedelta(seconds=30), backoff_up_to=timedelta(seconds=60))
# The charge is idempotent by key, so retrying a gateway outage or timeout charges once;
# declines are typed non-retryable by the activity.
CHARGE = _until_done(timedelta(seconds=30), backoff_up_to=timedelta(minutes=2))
# An e-mail that cannot go out after a few tries is reported, never allowed to undo the order.
EMAIL = ActivityOptions(
    # The SMTP client gives up after 30 s itself.
    start_to_close_timeout=timedelta(seconds=45),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=2),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=5,
    ),
)
# Short store reads and writes and pure work, run as local activities in the workflow task that
# needs them. Retried until they work: an outage of the store heals.
LOCAL = _until_done(timedelta(seconds=10), backoff_up_to=timedelta(seconds=30))
# The VAT check against VIES: its backoff happens inside, then it answers "unverified".
VIES = _until_done(timedelta(minutes=2), backoff_up_to=timedelta(seconds=30))
# A payment that settles later is asked after again with backoff, for as long as it takes (a
# SEPA Direct Debit settles within days); each attempt asks the gateway once.
SETTLE = _until_done(
    timedelta(seconds=30),
    first_retry_after=timedelta(seconds=30),
    backoff_up_to=timedelta(hours=1),
)
# The last step: one try at the e-mail, then the outcome recorded. Only an outage of the store
# makes it fail, and that heals: retried without limit. The SMTP client gives up after 30 s.
NOTIFY = _until_done(timedelta(seconds=60), backoff_up_to=timedelta(seconds=30))
# The steps of the product's side (provisioning, the anchor): the attempts before an order
# parks come from CHECKOUT_PROVISIONING_MAX_ATTEMPTS.
PRODUCT_SIDE_TIMEOUT = timedelta(seconds=30)
