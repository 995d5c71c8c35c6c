"""Persistence: see :mod:`checkout.store.store`."""

from checkout.store.store import EmailAttempt
from checkout.store.store import OrderClaimRecord
from checkout.store.store import OrderRecord
from checkout.store.store import OutboxDraft
from checkout.store.store import OutboxEntry
from checkout.store.store import ProductPaused
from checkout.store.store import StepUndone
from checkout.store.store import Store
from checkout.store.store import StoreUnavailable
from checkout.store.store import SubscriptionChanged

__all__ = [
    "EmailAttempt",
    "OrderClaimRecord",
    "OrderRecord",
    "OutboxDraft",
    "OutboxEntry",
    "ProductPaused",
    "StepUndone",
    "Store",
    "StoreUnavailable",
    "SubscriptionChanged",
]
