"""The column types and builders the migrations share, so each column reads as one short call.

The migrations are history: each must build the same schema forever. Change nothing here that a
migration uses; add a new name instead.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

ID = sa.String(64)
"""Account, order, run and product ids."""
MONEY = sa.String(40)
"""A decimal amount as text, exact on every engine."""
WORD = sa.String(16)
"""A short fixed word: a status, a kind, a billing cycle."""
EMAIL = sa.String(254)
"""An e-mail address at its longest (RFC 5321)."""
CURRENCY = sa.String(3)
TEXT = sa.Text()
"""Text of any length: JSON, a whole e-mail, an error."""
TS = sa.DateTime(timezone=False)
"""A naive UTC timestamp."""


def required(name: str, type_: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=False)


def optional(name: str, type_: sa.types.TypeEngine[Any]) -> sa.Column[Any]:
    return sa.Column(name, type_, nullable=True)


def serial(name: str) -> sa.Column[int]:
    """An integer key the database numbers itself."""
    return sa.Column(name, sa.Integer(), autoincrement=True, nullable=False)
