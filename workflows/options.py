"""Activity options shared by the workflows, typed so mypy checks every call."""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from temporalio.common import RetryPolicy


class ActivityOptions(TypedDict):
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


# Reads and pure computations: short, retried until they work (an outage of the store heals).
# Timeouts are short on purpose: after a worker dies, its running attempt is retried only once
# start_to_close passes, so it bounds how long a crash delays an order.
QUICK = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# Undo steps and a trial's expiry must get through: retried without limit, backing off.
MUST_FINISH = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=60)),
)
# The charge is idempotent by key, so retrying a gateway outage or timeout charges once;
# declines are typed non-retryable by the activity.
CHARGE = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=2)),
)
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
LOCAL = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# The VAT check against VIES: its backoff happens inside, then it answers "unverified".
VIES = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# A payment that settles later is asked after again with backoff, for as long as it takes (a
# SEPA Direct Debit settles within days); each attempt asks the gateway once.
SETTLE = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=30),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(hours=1),
        non_retryable_error_types=None,
    ),
)
# The last step: one try at the e-mail, then the outcome recorded. Only an outage of the store
# makes it fail, and that heals: retried without limit. The SMTP client gives up after 30 s.
NOTIFY = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# The steps of the product's side (provisioning, the anchor): the attempts before an order
# parks come from CHECKOUT_PROVISIONING_MAX_ATTEMPTS.
PRODUCT_SIDE_TIMEOUT = timedelta(seconds=30)
