"""Persistence: see :mod:`checkout.store.store`."""

from checkout.store.store import (
    OrderClaimRecord,
    OrderRecord,
    OutboxEntry,
    ProductPaused,
    StepUndone,
    Store,
    StoreUnavailable,
    SubscriptionChanged,
)

__all__ = [
    "OrderClaimRecord",
    "OrderRecord",
    "OutboxEntry",
    "ProductPaused",
    "StepUndone",
    "Store",
    "StoreUnavailable",
    "SubscriptionChanged",
]
