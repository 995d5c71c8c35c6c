"""The product catalog: products, plans and per-seat prices, read from a TOML file."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import StringConstraints
from pydantic import ValidationError
from pydantic import field_validator

from checkout.config import parse_duration
from checkout.models import BillingCycle
from checkout.money import MINOR_UNITS

#: The catalog shipped with the project (``CHECKOUT_CATALOG_PATH`` overrides it).
DEFAULT_CATALOG_PATH = Path(__file__).resolve().parent / "catalog.toml"


class CatalogError(Exception):
    """The catalog file is missing or malformed."""


class Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    monthly: Decimal
    annual: Decimal

    def for_cycle(self, cycle: BillingCycle) -> Decimal:
        return self.monthly if cycle is BillingCycle.MONTHLY else self.annual


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    prices: dict[str, Price]

    @field_validator("prices")
    @classmethod
    def _known_currencies(cls, prices: dict[str, Price]) -> dict[str, Price]:
        for currency, price in prices.items():
            if currency not in MINOR_UNITS:
                raise ValueError(f"currency {currency} has no minor-unit entry")
            for amount in (price.monthly, price.annual):
                if amount < 0 or amount.as_tuple().exponent < -MINOR_UNITS[currency]:  # type: ignore[operator]
                    raise ValueError(f"{currency} price {amount} is not a valid amount")
        return prices


class Product(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    trial_days: Annotated[int, Field(ge=0)] = 0
    #: Overrides trial_days with a duration ("PT2M", "90"): short trials for demos and tests.
    trial_length: str | None = None
    max_seats: Annotated[int, Field(ge=1)] = 1000
    plans: dict[str, Plan]

    @field_validator("trial_length")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, "trial_length")
        return value

    @property
    def has_trial(self) -> bool:
        return self.trial_period > timedelta(0)

    @property
    def trial_period(self) -> timedelta:
        if self.trial_length is not None:
            return timedelta(seconds=parse_duration(self.trial_length, "trial_length"))
        return timedelta(days=self.trial_days)


class Seller(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    country: str
    vat_id: str
    name: str
    #: Optional: e-mails leave out what is not given.
    address: str | None = None
    #: Invoice numbers read <invoice_prefix>-<YYYY>-<NNNNNN>.
    invoice_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,16}$")] = "INV"
    portal_url: str | None = None
    support_email: str | None = None


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seller: Seller
    products: dict[str, Product]


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Read and validate a catalog file; errors name the file and the field."""
    file = Path(path) if path else DEFAULT_CATALOG_PATH
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read catalog {file}: {exc}") from exc
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"catalog {file} is invalid: {exc}") from exc
