"""Order input (docs/contract.md, section 2): whatever a JSON client sends becomes an Order or an
invalid_order rejection naming the field, and nothing that looks like a card number gets in."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import BillingCycle
from checkout.models import ItemMode
from checkout.models import Order
from checkout.order_input import find_card_number
from checkout.order_input import parse_order

#: An order in the shape of docs/contract.md, section 2.
EXAMPLE: dict[str, Any] = {
    "order_id": "ord-1001",
    "account_id": "acc-42",
    "items": [
        {
            "product": "remote-support",
            "plan": "premium",
            "seats": 5,
            "billing_cycle": "annual",
            "mode": "buy",
        },
        {"product": "meetings", "plan": "business", "seats": 3, "mode": "trial"},
    ],
    "payment_method": "pm_card_visa",
    "vat_id": "DE136695976",
}

#: Luhn-valid test card numbers (13 to 19 digits).
CARDS = [
    "4222222222222",  # 13 digits, Visa
    "378282246310005",  # 15 digits, American Express
    "4111111111111111",  # 16 digits, Visa
    "5555555555554444",  # 16 digits, Mastercard
    "6011111111111117",  # 16 digits, Discover
    "4000000000000000006",  # 19 digits
]


def example(**changes: Any) -> dict[str, Any]:
    order = copy.deepcopy(EXAMPLE)
    order.update(changes)
    return order


def with_item(index: int = 0, **changes: Any) -> dict[str, Any]:
    order = example()
    order["items"][index].update(changes)
    return order


def reject(raw: Any) -> str:
    """The rejection message of parse_order, asserting the reason is invalid_order."""
    with pytest.raises(CheckoutRejected) as info:
        parse_order(raw)
    assert info.value.reason is Reason.INVALID_ORDER
    return info.value.message


def parse_or_rejection(raw: Any) -> Order | CheckoutRejected:
    try:
        return parse_order(raw)
    except CheckoutRejected as error:
        return error


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


# --- a good order ------------------------------------------------------------------------------


def test_the_contract_example_parses() -> None:
    """The example order of the contract is accepted as is, with its defaults."""
    order = parse_order(example())
    assert isinstance(order, Order)
    assert order.order_id == "ord-1001"
    buy, trial = order.items
    assert (buy.seats, buy.billing_cycle, buy.mode) == (5, BillingCycle.ANNUAL, ItemMode.BUY)
    assert (trial.billing_cycle, trial.mode) == (None, ItemMode.TRIAL)
    assert order.vat_id == "DE136695976"


def test_the_contract_example_parses_from_json_bytes() -> None:
    """Raw JSON bytes of a good order are decoded and accepted."""
    assert parse_order(json.dumps(example()).encode()) == parse_order(example())


def test_optional_fields_and_defaults() -> None:
    """payment_method and vat_id are optional; mode defaults to buy."""
    order = parse_order(
        {
            "order_id": "o",
            "account_id": "a",
            "items": [{"product": "meetings", "plan": "business", "seats": 1}],
        }
    )
    assert (order.payment_method, order.vat_id) == (None, None)
    assert order.items[0].mode is ItemMode.BUY


def test_order_id_limits() -> None:
    """order_id may be 1 to 64 of A-Z a-z 0-9 _ -."""
    assert parse_order(example(order_id="A" * 64)).order_id == "A" * 64
    assert parse_order(example(order_id="a_Z-9")).order_id == "a_Z-9"
    assert parse_order(example(order_id="x")).order_id == "x"


def test_twenty_items_are_allowed() -> None:
    """Up to 20 items are accepted by the parser."""
    items = [{"product": f"p{i}", "plan": "basic", "seats": 1, "mode": "trial"} for i in range(20)]
    assert len(parse_order(example(items=items)).items) == 20


# --- malformed input of every shape --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "got null"),
        ([], "got list"),
        ([EXAMPLE], "got list"),
        ("ord-1001", "got str"),
        (json.dumps(EXAMPLE), "got str"),
        (42, "got int"),
        (4.2, "got float"),
        (True, "got bool"),
        (b"null", "got null"),
        (b"[1, 2]", "got list"),
        (b'"text"', "got str"),
    ],
)
def test_anything_but_a_json_object_is_invalid_order(raw: Any, expected: str) -> None:
    """null, lists, strings, numbers and bools are rejected as "order: expected a JSON object"."""
    message = reject(raw)
    assert message.startswith("order: expected a JSON object")
    assert expected in message


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"order_id": "ord-1"', b"{'order_id': 'x'}", b"\xff\xfe\x00", b"nul", b"{}}"],
)
def test_broken_json_bytes_are_invalid_order(raw: bytes) -> None:
    """Bytes that are not JSON are rejected as "order: not valid JSON"."""
    assert reject(raw).startswith("order: not valid JSON")


def test_bytearray_is_decoded_like_bytes() -> None:
    """A bytearray of JSON is read like bytes."""
    assert "order_id: Field required" in reject(bytearray(b"{}"))


@pytest.mark.parametrize("field", ["order_id", "account_id", "items"])
def test_missing_required_field_is_named(field: str) -> None:
    """A missing required field is rejected naming it."""
    order = example()
    del order[field]
    assert f"{field}: Field required" in reject(order)


def test_empty_object_names_every_missing_field() -> None:
    """{} names order_id, account_id and items."""
    message = reject({})
    for field in ("order_id", "account_id", "items"):
        assert f"{field}: Field required" in message


@pytest.mark.parametrize("field", ["product", "plan", "seats"])
def test_missing_item_field_is_named_with_its_index(field: str) -> None:
    """A missing field of an item is named with the item's index: items[1].seats."""
    order = example()
    del order["items"][1][field]
    assert f"items[1].{field}" in reject(order)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"order_id": 1001}, "order_id"),
        ({"order_id": None}, "order_id"),
        ({"order_id": ["ord-1"]}, "order_id"),
        ({"account_id": 42}, "account_id"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": "a" * 65}, "account_id"),
        ({"items": "remote-support"}, "items"),
        ({"items": {"product": "meetings"}}, "items"),
        ({"items": None}, "items"),
        ({"items": []}, "items"),
        ({"items": [None]}, "items[0]"),
        ({"items": [["meetings", "business", 1]]}, "items[0]"),
        ({"payment_method": 12345}, "payment_method"),
        ({"payment_method": ""}, "payment_method"),
        ({"payment_method": "p" * 129}, "payment_method"),
        ({"vat_id": 136695976}, "vat_id"),
        ({"vat_id": ""}, "vat_id"),
        ({"vat_id": "DE" * 17}, "vat_id"),
    ],
)
def test_wrong_types_and_sizes_of_order_fields_are_named(
    changes: dict[str, Any], field: str
) -> None:
    """A field of the wrong type or size is rejected with a message starting with its name."""
    message = reject(example(**changes))
    assert message.startswith(f"{field}:")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"seats": True}, "items[0].seats"),
        ({"seats": False}, "items[0].seats"),
        ({"seats": 0}, "items[0].seats"),
        ({"seats": -3}, "items[0].seats"),
        ({"seats": 2.0}, "items[0].seats"),
        ({"seats": 2.5}, "items[0].seats"),
        ({"seats": "5"}, "items[0].seats"),
        ({"seats": None}, "items[0].seats"),
        ({"mode": "rent"}, "items[0].mode"),
        ({"mode": "BUY"}, "items[0].mode"),
        ({"mode": None}, "items[0].mode"),
        ({"billing_cycle": "weekly"}, "items[0].billing_cycle"),
        ({"billing_cycle": 12}, "items[0].billing_cycle"),
        ({"product": "Remote Support"}, "items[0].product"),
        ({"product": ""}, "items[0].product"),
        ({"product": 7}, "items[0].product"),
        ({"plan": "PREMIUM"}, "items[0].plan"),
        ({"plan": None}, "items[0].plan"),
    ],
)
def test_wrong_item_values_are_named_with_index(changes: dict[str, Any], field: str) -> None:
    """Bools or floats as seats, seats < 1, unknown mode or cycle, bad codes: named per item."""
    message = reject(with_item(0, **changes))
    assert message.startswith(f"{field}:")


def test_seats_error_names_the_right_item() -> None:
    """An error in the second item is reported as items[1], not items[0]."""
    assert reject(with_item(1, seats=0)).startswith("items[1].seats:")


def test_twenty_one_items_are_too_many() -> None:
    """21 items are rejected naming items."""
    items = [{"product": f"p{i}", "plan": "basic", "seats": 1, "mode": "trial"} for i in range(21)]
    message = reject(example(items=items))
    assert message.startswith("items:")
    assert "20" in message


@pytest.mark.parametrize(
    "order_id",
    ["ord 1001", " ord-1001", "ord-1001\n", "ord/1001", "ord.1001", "örder", "", "a" * 65],
)
def test_bad_order_ids_are_rejected(order_id: str) -> None:
    """order_id with spaces, other characters, empty or 65 characters is invalid_order."""
    assert reject(example(order_id=order_id)).startswith("order_id:")


def test_extra_top_level_field_is_rejected() -> None:
    """An unknown field at the top level is rejected naming it."""
    assert reject(example(coupon="FREE")).startswith("coupon: Extra inputs are not permitted")


def test_extra_item_field_is_rejected() -> None:
    """An unknown field in an item is rejected naming it with the item's index."""
    assert reject(with_item(1, price="0.00")).startswith("items[1].price: Extra inputs")


def test_many_errors_are_summarised() -> None:
    """More than five problems: the first five are named and the rest counted."""
    message = reject({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6})
    assert message.count(";") == 4
    assert "(and" in message
    assert "more)" in message


def test_deeply_nested_input_is_rejected_not_crashing() -> None:
    """A pathologically deep extra field ends as invalid_order, not a RecursionError."""
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    assert reject(example(extra=deep))
    assert reject(b"[" * 100_000)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_is_an_order_or_invalid_order(raw: Any) -> None:
    """Whatever JSON value arrives, parse_order returns an Order or raises invalid_order."""
    outcome = parse_or_rejection(raw)
    if isinstance(outcome, CheckoutRejected):
        assert outcome.reason is Reason.INVALID_ORDER
        assert outcome.message
    else:
        assert isinstance(outcome, Order)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "order_id": json_values,
            "account_id": json_values,
            "items": st.lists(
                st.dictionaries(st.sampled_from(["product", "seats", "x"]), json_values)
            ),
            "payment_method": json_values,
        },
    )
)
def test_any_order_shaped_object_is_an_order_or_invalid_order(raw: dict[str, Any]) -> None:
    """Objects with the order's field names and random values never raise anything else."""
    outcome = parse_or_rejection(raw)
    if isinstance(outcome, CheckoutRejected):
        assert outcome.reason is Reason.INVALID_ORDER
    else:
        assert isinstance(outcome, Order)


@given(st.binary(max_size=64))
def test_any_bytes_are_an_order_or_invalid_order(raw: bytes) -> None:
    """Arbitrary bytes never raise anything but invalid_order."""
    with pytest.raises(CheckoutRejected) as info:
        parse_order(raw)
    assert info.value.reason is Reason.INVALID_ORDER


# --- card numbers --------------------------------------------------------------------------------

# The Luhn check is python-stdnum's (stdnum.luhn); these pin what find_card_number relies on.


@pytest.mark.parametrize(
    "number",
    [*CARDS, "79927398713", "0", "00", "18", "1234567812345670"],
)
def test_luhn_valid_numbers(number: str) -> None:
    """Numbers whose Luhn checksum is 0 mod 10 are Luhn-valid."""
    assert luhn.is_valid(number)


@pytest.mark.parametrize(
    "number",
    ["4111111111111112", "4111111111111121", "79927398710", "1234567812345678", "1", "19"],
)
def test_luhn_invalid_numbers(number: str) -> None:
    """A wrong check digit or swapped digits fail the Luhn check."""
    assert not luhn.is_valid(number)


@given(st.text(alphabet="0123456789", min_size=1, max_size=25), st.integers(1, 9))
def test_luhn_catches_every_single_digit_error(number: str, delta: int) -> None:
    """Changing one digit of a Luhn-valid number always makes it invalid."""
    check = next(d for d in "0123456789" if luhn.is_valid(number + d))
    valid = number + check
    assert luhn.is_valid(valid)
    for position in range(len(valid)):
        changed = str((int(valid[position]) + delta) % 10)
        assert not luhn.is_valid(valid[:position] + changed + valid[position + 1 :])


def _assert_card_rejected(raw: Any, field: str, number: str) -> None:
    message = reject(raw)
    assert message.startswith(f"{field}:")
    assert "card number" in message
    assert number not in message
    assert digits_of(number) not in digits_of(message)


@pytest.mark.parametrize("number", CARDS)
def test_card_number_as_payment_method_is_rejected_without_echo(number: str) -> None:
    """A card number instead of a payment token is rejected and never echoed."""
    _assert_card_rejected(example(payment_method=number), "payment_method", number)


@pytest.mark.parametrize(
    "written",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111 1111-1111 1111", "3782 822463 10005"],
)
def test_grouped_card_numbers_are_rejected(written: str) -> None:
    """Card numbers grouped with spaces or dashes are found too."""
    _assert_card_rejected(example(payment_method=written), "payment_method", written)


@pytest.mark.parametrize(
    "text", ["card 4111111111111111 exp 12/29", "pm_4111111111111111", "x4111-1111-1111-1111y"]
)
def test_card_numbers_inside_text_are_rejected(text: str) -> None:
    """A card number inside other text is found."""
    _assert_card_rejected(example(vat_id=text[:32]), "vat_id", "4111111111111111")


@pytest.mark.parametrize(
    ("place", "field"),
    [
        (lambda o, n: o.update(order_id=n), "order_id"),
        (lambda o, n: o.update(account_id=n), "account_id"),
        (lambda o, n: o.update(vat_id=n), "vat_id"),
        (lambda o, n: o["items"][0].update(product=n), "items[0].product"),
        (lambda o, n: o["items"][1].update(plan=n), "items[1].plan"),
        (lambda o, n: o["items"][1].update(note=n), "items[1].note"),
        (lambda o, n: o.update(card=n), "card"),
        (lambda o, n: o.update(billing={"card": {"number": n}}), "billing.card.number"),
        (lambda o, n: o.update(cards=["x", {"pan": n}]), "cards[1].pan"),
    ],
    ids=[
        "order_id",
        "account_id",
        "vat_id",
        "product",
        "plan",
        "extra-item-field",
        "extra-field",
        "nested-extra",
        "list-extra",
    ],
)
def test_card_number_in_any_field_is_rejected(place: Any, field: str) -> None:
    """A card number anywhere, including nested or extra fields, is rejected naming the field."""
    order = example()
    place(order, "4111111111111111")
    _assert_card_rejected(order, field, "4111111111111111")


def test_card_number_as_a_json_number_is_rejected() -> None:
    """A card number sent as a JSON number (e.g. in seats) is found too."""
    _assert_card_rejected(
        with_item(0, seats=4111111111111111), "items[0].seats", "4111111111111111"
    )


def test_card_number_as_a_key_is_rejected_without_echo() -> None:
    """A card number used as an object key is rejected and not echoed in the path."""
    order = example()
    order["4111111111111111"] = "visa"
    _assert_card_rejected(order, "order", "4111111111111111")
    order = with_item(0)
    order["items"][0]["5555555555554444"] = 1
    _assert_card_rejected(order, "items[0]", "5555555555554444")


def test_card_number_in_json_bytes_is_rejected_without_echo() -> None:
    """The same check applies to raw JSON bytes."""
    raw = json.dumps(example(payment_method="4111 1111 1111 1111")).encode()
    _assert_card_rejected(raw, "payment_method", "4111 1111 1111 1111")


def test_card_number_in_broken_json_is_not_echoed() -> None:
    """Broken JSON containing a card number is rejected without repeating the number."""
    message = reject(b'{"payment_method": 4111111111111111, ')
    assert "4111111111111111" not in digits_of(message)


def test_card_check_comes_before_schema_errors() -> None:
    """An order that is malformed and carries a card number is reported for the card number."""
    order = example(payment_method="4111111111111111")
    del order["items"]
    assert reject(order).startswith("payment_method:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_method", "pm_1234567812345678"),  # 16 digits, not Luhn-valid
        ("payment_method", "pm_4111111111111112"),
        ("order_id", "1234567812345678"),
        ("order_id", "4111-1111-1111-1112"),
        ("account_id", "acc-123456789015"),  # Luhn-valid, but 12 digits: too short for a card
        ("account_id", "acc-12345678901234567894"),  # Luhn-valid, but 20 digits: too long
        ("vat_id", "DE136695976"),
        ("vat_id", "SE123456789701"),
        ("payment_method", "tok 4111 1111 1111 111"),  # 15 digits, not Luhn-valid
    ],
)
def test_digit_strings_that_are_not_card_numbers_are_accepted(field: str, value: str) -> None:
    """Digit runs that fail Luhn or are not 13-19 digits long are allowed where the schema is."""
    assert getattr(parse_order(example(**{field: value})), field) == value


def test_find_card_number_returns_the_path_of_the_first_card() -> None:
    """find_card_number names the first field holding a card number, or None."""
    assert find_card_number(example()) is None
    assert find_card_number({"a": ["x", {"b": "5555 5555 5555 4444"}]}) == "a[1].b"
    assert find_card_number({"a": 4111111111111111}) == "a"
    assert find_card_number({"a": "4111111111111112"}) is None


@given(
    st.sampled_from(CARDS),
    st.text(alphabet="abc_-/ :", max_size=5),
    st.text(alphabet="abc_/ :", max_size=5),
)
def test_card_numbers_are_found_whatever_surrounds_them(
    number: str, before: str, after: str
) -> None:
    """A card number between non-digit characters is always found."""
    assert find_card_number({"payment_method": before + number + after}) == "payment_method"


@pytest.mark.parametrize(
    "text",
    [
        b'{"order_id": "o1", "order_id": "o2", "account_id": "a", "items": []}',
        (
            b'{"order_id": "o1", "account_id": "a", "items": [{"product": "meetings",'
            b' "plan": "business", "seats": 1, "seats": 2, "billing_cycle": "annual"}]}'
        ),
    ],
)
def test_a_key_named_twice_is_invalid_order(text: bytes) -> None:
    """Readers disagree on which of two equal keys counts, so an order naming one twice is
    refused instead of read last-wins."""
    with pytest.raises(CheckoutRejected) as raised:
        parse_order(text)
    assert raised.value.reason is Reason.INVALID_ORDER
    assert "appears twice" in raised.value.message


def test_the_same_key_in_different_objects_is_fine() -> None:
    """Only a key repeated within one object is refused."""
    raw = (
        b'{"order_id": "o1", "account_id": "a", "items": [{"product": "meetings", "plan":'
        b' "business", "seats": 1, "billing_cycle": "annual"}, {"product": "remote-support",'
        b' "plan": "standard", "seats": 1, "billing_cycle": "annual"}]}'
    )
    assert [i.product for i in parse_order(raw).items] == ["meetings", "remote-support"]
