"""What the contract's ids and keys must do (docs/contract.md, section 1): a workflow id gives
back its order id, and idempotency keys are deterministic and never collide. That the names
and forms are the documented ones is tests/test_docs_contract.py's part."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from checkout.contract import checkout_workflow_id
from checkout.contract import idempotency_key
from checkout.contract import order_id_from_workflow_id

order_ids = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
    min_size=1,
    max_size=64,
)


@given(order_ids)
def test_order_id_round_trips_through_the_workflow_id(order_id: str) -> None:
    """order_id_from_workflow_id(checkout_workflow_id(x)) == x for every valid order id."""
    assert order_id_from_workflow_id(checkout_workflow_id(order_id)) == order_id


def test_order_id_from_the_contract_example() -> None:
    """ "order-ord-1001" gives back "ord-1001", keeping the inner "order-" of an id like it."""
    assert order_id_from_workflow_id("order-ord-1001") == "ord-1001"
    assert order_id_from_workflow_id("order-order-7") == "order-7"


def test_other_workflow_ids_have_no_order_id() -> None:
    """Ids that are not checkout workflow ids give None."""
    assert order_id_from_workflow_id("trial-acc-42-meetings") is None
    assert order_id_from_workflow_id("ord-1001") is None
    assert order_id_from_workflow_id("Order-ord-1001") is None


def test_idempotency_key_is_deterministic() -> None:
    """The same order id and step always give the same key (never random, never the run), in
    the form payment records made before the order queue already carry."""
    first = idempotency_key("ord-1001", "charge")
    assert first == idempotency_key("ord-1001", "charge")
    assert first == "order-ord-1001/charge"


def test_idempotency_key_differs_per_step_and_per_order() -> None:
    """Charge and refund of one order, and the charges of two orders, have distinct keys."""
    keys = {
        idempotency_key("ord-1001", "charge"),
        idempotency_key("ord-1001", "refund"),
        idempotency_key("ord-1001", "invoice"),
        idempotency_key("ord-1002", "charge"),
    }
    assert len(keys) == 4


@given(order_ids, order_ids, st.sampled_from(["charge", "refund", "invoice", "provision"]))
def test_idempotency_keys_never_collide(a: str, b: str, step: str) -> None:
    """Different orders never share a key for the same step; one order never across steps."""
    key_a = idempotency_key(a, step)
    key_b = idempotency_key(b, step)
    assert (key_a == key_b) == (a == b)
    assert key_a != idempotency_key(a, step + "-undo")
