"""Persistence: see :mod:`checkout.store.store`."""

from checkout.store.store import OutboxEntry, StepUndone, Store

__all__ = ["OutboxEntry", "StepUndone", "Store"]
