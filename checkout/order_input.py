"""Turning whatever a JSON client sent into an :class:`Order`, or a rejection naming the field.

Runs inside the workflow (pure, deterministic): a malformed order must end ``rejected`` with
``invalid_order``, never leave a workflow task failing and retrying forever.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError
from stdnum import luhn

from checkout.echo import escape
from checkout.echo import quote
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import Order

# 13 to 19 digits, optionally grouped by spaces or dashes: the shape of a card number (PAN).
_PAN_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


_FIELD_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def field_name(key: object) -> str:
    """A key of the input as a path names it: as it is when it looks like a field name, quoted
    (escaped, shortened) when it does not: a key is input too."""
    text = str(key)
    return text if _FIELD_NAME.fullmatch(text) else quote(text, 32)


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [(path, str(value))]
    if isinstance(value, dict):
        found: list[tuple[str, str]] = []
        for key, item in value.items():
            found.extend(_strings(str(key), path or "order"))
            name = field_name(key)
            found.extend(_strings(item, f"{path}.{name}" if path else name))
        return found
    if isinstance(value, list):
        return [pair for i, item in enumerate(value) for pair in _strings(item, f"{path}[{i}]")]
    return []


def find_card_number(value: Any) -> str | None:
    """The path of the first field holding something that looks like a card number."""
    for path, text in _strings(value, ""):
        for match in _PAN_CANDIDATE.finditer(text):
            if luhn.is_valid(re.sub(r"[ -]", "", match.group())):
                return path
    return None


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{field_name(part)}" if path else field_name(part)
    return path or "order"


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, what is wrong)`` for each error, never the input itself (pydantic's own
    ``str(exc)`` carries ``input_value=...``): field names that are not plain are quoted,
    messages escaped."""
    return [
        (_location(error["loc"]), escape(error["msg"], 200))
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def describe_validation_error(exc: ValidationError) -> str:
    """The errors as "field: what is wrong; ...", the first five (see validation_errors)."""
    parts = [f"{field}: {problem}" for field, problem in validation_errors(exc)[:5]]
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice: readers disagree on which one counts (first or last),
    so a backend could quote one order and the checkout charge another."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"the key {quote(key)} appears twice in one object")
        seen[key] = value
    return seen


def loads_strict(text: str | bytes | bytearray) -> Any:
    """``json.loads`` that refuses an object naming a key twice (DuplicateKeyError)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def parse_order(raw: Any) -> Order:
    """Validate a decoded JSON value (or the raw JSON bytes) as an order; raise
    CheckoutRejected(invalid_order)."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = loads_strict(raw)
        except DuplicateKeyError as exc:
            raise CheckoutRejected(Reason.INVALID_ORDER, f"order: {exc}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckoutRejected(
                Reason.INVALID_ORDER, f"order: not valid JSON ({escape(exc, 200)})"
            ) from None
        except RecursionError:
            raise CheckoutRejected(Reason.INVALID_ORDER, "order: nested too deeply") from None
    if not isinstance(raw, dict):
        raise CheckoutRejected(
            Reason.INVALID_ORDER,
            f"order: expected a JSON object, got {'null' if raw is None else type(raw).__name__}",
        )
    try:
        card_field = find_card_number(raw)
    except RecursionError:
        # A deeply nested extra field must end the order, not fail the workflow task forever.
        raise CheckoutRejected(Reason.INVALID_ORDER, "order: nested too deeply") from None
    if card_field is not None:
        # Never echo the number itself.
        raise CheckoutRejected(
            Reason.INVALID_ORDER,
            f"{card_field}: looks like a card number; send a payment token, never card data",
        )
    try:
        return Order.model_validate(raw)
    except ValidationError as exc:
        raise CheckoutRejected(Reason.INVALID_ORDER, describe_validation_error(exc)) from None
