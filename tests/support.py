"""Moved to tests/helpers/. Kept only for tests/test_starter.py (being changed on another
branch) until it imports from tests.helpers; then delete this module and the transitional
``__all__`` of tests/conftest.py."""

from tests.helpers import account, checkout_worker, eventually, now, order, store_url

__all__ = ["account", "checkout_worker", "eventually", "now", "order", "store_url"]
