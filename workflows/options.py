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
