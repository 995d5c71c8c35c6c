"""The one validate-and-price path (checkout/quoting.py) that `checkout quote` and the
validate_vat_id and price_order activities share: same account lookup, same VAT check, same
pricing, same reason codes."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from typing import Any

import pytest

from checkout.catalog import load_catalog
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import Account
from checkout.models import Order
from checkout.models import TaxTreatment
from checkout.models import VatCheck
from checkout.pricing import price_order
from checkout.quoting import check_account_vat_id
from checkout.quoting import price
from checkout.quoting import quote
from checkout.vies import VatVerifier

ANCHOR = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
CATALOG = load_catalog()
#: A valid French VAT ID (check digits right) and the same with a wrong check digit.
VALID_FR = "FR40303265045"
INVALID_FR = "FR41303265045"


class Accounts:
    def __init__(self, *accounts: Account) -> None:
        self.by_id = {a.account_id: a for a in accounts}
        self.asked: list[str] = []

    async def get_account(self, account_id: str) -> Account | None:
        self.asked.append(account_id)
        return self.by_id.get(account_id)


class NoVerifier:
    """A verifier that must not be asked."""

    async def verify(self, vat_id: str, country: str) -> VatCheck:
        raise AssertionError(f"asked to verify {vat_id} for {country}")


def french_business(**fields: Any) -> Account:
    return Account.model_validate(
        {
            "account_id": "acc-fr",
            "name": "Dupont SARL",
            "billing_email": "compta@dupont.example",
            "country": "FR",
            **fields,
        }
    )


def an_order(**fields: Any) -> Order:
    return Order.model_validate(
        {
            "order_id": "ord-1",
            "account_id": "acc-fr",
            "items": [
                {"product": "remote-support", "plan": "standard", "seats": 5,
                 "billing_cycle": "annual"},
            ],
            "payment_method": "pm_card_visa",
            **fields,
        }
    )  # fmt: skip


async def test_quote_is_the_rules_applied_to_the_checked_vat_id() -> None:
    """A valid VAT ID of an EU business: reverse charge, exactly what price_order gives."""
    account = french_business()
    order = an_order(vat_id=VALID_FR)
    quoted = await quote(order, Accounts(account), CATALOG, VatVerifier("offline"), ANCHOR)
    assert quoted.account == account
    assert quoted.vat == VatCheck(vat_id=VALID_FR, status="valid")
    assert quoted.plan == price_order(order, account, CATALOG, ANCHOR, quoted.vat)
    assert quoted.plan.invoice.tax_treatment is TaxTreatment.REVERSE_CHARGE


async def test_quote_without_a_vat_id_asks_no_verifier() -> None:
    """No VAT ID, no check: the consumer pays French VAT."""
    quoted = await quote(an_order(), Accounts(french_business()), CATALOG, NoVerifier(), ANCHOR)
    assert quoted.vat is None
    assert quoted.plan.invoice.tax_treatment is TaxTreatment.STANDARD
    assert quoted.plan.invoice.vat_country == "FR"


@pytest.mark.parametrize(
    ("order", "reason", "message"),
    [
        (an_order(account_id="acc-nobody"), Reason.UNKNOWN_ACCOUNT, "account_id: no account"),
        (an_order(vat_id=INVALID_FR), Reason.INVALID_VAT_ID, "vat_id: "),
        (an_order(payment_method=None), Reason.PAYMENT_METHOD_REQUIRED, "payment_method: "),
    ],
)
async def test_quote_refusals_carry_the_reason_code(
    order: Order, reason: Reason, message: str
) -> None:
    """Each refusal is a CheckoutRejected with the code the workflow would end with."""
    with pytest.raises(CheckoutRejected) as info:
        await quote(order, Accounts(french_business()), CATALOG, VatVerifier("offline"), ANCHOR)
    assert info.value.reason is reason
    assert info.value.message.startswith(message)


async def test_the_two_activity_steps_give_the_quote() -> None:
    """check_account_vat_id then price (the activities' two steps) give the same plan as quote,
    and price uses the recorded check without asking a verifier again."""
    accounts = Accounts(french_business())
    order = an_order(vat_id=VALID_FR)
    vat = await check_account_vat_id(accounts, "acc-fr", VALID_FR, VatVerifier("offline"))
    plan = await price(order, accounts, CATALOG, ANCHOR, vat)
    assert plan == (await quote(order, accounts, CATALOG, VatVerifier("offline"), ANCHOR)).plan


async def test_the_activity_steps_refuse_an_unknown_account() -> None:
    """Both steps look the account up and refuse one that is not there."""
    with pytest.raises(CheckoutRejected) as info:
        await check_account_vat_id(Accounts(), "acc-x", VALID_FR, NoVerifier())
    assert (info.value.reason, info.value.message) == (
        Reason.UNKNOWN_ACCOUNT,
        'account_id: no account "acc-x"',
    )
    with pytest.raises(CheckoutRejected) as info:
        await price(an_order(), Accounts(), CATALOG, ANCHOR, None)
    assert info.value.reason is Reason.UNKNOWN_ACCOUNT
