"""Persistence: see :mod:`checkout.store.store`."""

from checkout.store.store import OutboxEntry, Store, StepUndone

__all__ = ["OutboxEntry", "StepUndone", "Store"]
