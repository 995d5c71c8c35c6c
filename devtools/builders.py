"""Raw records the tests and the benchmarks feed the checkout, as a client or an import file
would write them (plain dicts: this package does not import the checkout)."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def paid_subscription(
    start: datetime, end: datetime | None = None, **fields: Any
) -> dict[str, Any]:
    """An active subscription paid from ``start`` to ``end`` (a year later by default): 5 annual
    seats of Remote Support Standard for 1450.00, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "product": "remote-support",
        "plan": "standard",
        "seats": 5,
        "billing_cycle": "annual",
        "status": "active",
        "current_period_start": start.isoformat(),
        "current_period_end": (end or start.replace(year=start.year + 1)).isoformat(),
        "period_amount": "1450.00",
    }
    values.update(fields)
    return values
