"""Every customer e-mail, rendered to files for a look: ``make emails`` or
``python -m demo.previews [--out DIR]``.

For each purpose that has templates in ``templates/email/`` (found by their
``<purpose>.<locale>.subject.j2`` files, so a new purpose shows up by itself) and each locale,
writes ``<name>.<locale>.eml`` (the whole message, as the SMTP server would get it) and
``<name>.<locale>.html`` (its HTML part, to open in a browser) to ``.data/previews/``. ``<name>``
is the purpose, or ``<purpose>-<variant>`` for the confirmation's other cases (reverse charge, a
free trial alone, a corporate order paid by invoice).

The orders are priced with the real pricing code (``checkout.pricing.price_order``) on the real
catalog at a fixed moment, late in the evening UTC, so that the accounts' time zones move the
dates to the next day; the e-mails are built as the send-email activity builds them
(``email_context`` then ``compose_email``). Nothing is sent and nothing else is needed: no Temporal,
database or SMTP server.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.config import Settings
from checkout.gateway import SANDBOX_CARDS
from checkout.gateway import payment_id
from checkout.mail import DEFAULT_TEMPLATES_DIR
from checkout.mail import SUPPORTED_LOCALES
from checkout.mail import compose_email
from checkout.mail import email_context
from checkout.mail import render_email
from checkout.models import Account
from checkout.models import BillingCycle
from checkout.models import ChargeInfo
from checkout.models import CreditNote
from checkout.models import EmailPurpose
from checkout.models import Invoice
from checkout.models import ItemMode
from checkout.models import Order
from checkout.models import OrderItem
from checkout.models import SendEmailInput
from checkout.models import Subscription
from checkout.models import VatCheck
from checkout.pricing import price_order
from devtools.builders import paid_subscription

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_OUT = Path(".data") / "previews"

#: When the preview orders are placed: 23:30 UTC, already the next day in Berlin and Helsinki.
ANCHOR = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
INVOICE_NUMBER = "KC-2026-000042"
CREDIT_NOTE_NUMBER = "KC-2026-000043"
#: What an operator or approver typed: internal, it must never reach a customer.
OPERATOR_REASON = "PREVIEW-INTERNAL: customer phoned, ticket 4711, refund approved by Jens"
APPROVER_REASON = "PREVIEW-INTERNAL: budget frozen until Q3, see mail from the CFO"


@dataclass(frozen=True)
class Preview:
    """One file pair: ``<name>.<locale>.eml`` and ``.html``."""

    name: str
    purpose: str
    locale: str
    email: SendEmailInput
    account: Account
    due_date: datetime | None = None
    product_name: str | None = None


#: The preview customers by locale and reverse charge: German or Finnish (English) at home,
#: Austrian or Dutch with a VAT ID. Names carry an ampersand, so the HTML shows the escaping.
_CUSTOMERS: dict[tuple[str, bool], dict[str, str]] = {
    ("de", False): {
        "account_id": "acc-de",
        "name": "Müller & Söhne Logistik GmbH",
        "billing_email": "einkauf@mueller-soehne.example",
        "country": "DE",
        "locale": "de",
        "timezone": "Europe/Berlin",
    },
    ("en", False): {
        "account_id": "acc-fi",
        "name": "Lehtinen & Koski Oy",
        "billing_email": "billing@lehtinen-koski.example",
        "country": "FI",
        "locale": "en",
        "timezone": "Europe/Helsinki",
    },
    ("de", True): {
        "account_id": "acc-at",
        "name": "Berger & Huber Steuerberatung GmbH",
        "billing_email": "buchhaltung@berger-huber.example",
        "country": "AT",
        "locale": "de_AT",
        "timezone": "Europe/Vienna",
    },
    ("en", True): {
        "account_id": "acc-nl",
        "name": "De Vries & Bakker B.V.",
        "billing_email": "finance@devries-bakker.example",
        "country": "NL",
        "locale": "en",
        "timezone": "Europe/Amsterdam",
    },
}


def _customer(locale: str, *, reverse_charge: bool = False, corporate: bool = False) -> Account:
    """The customer of the locale (``_CUSTOMERS``); one at home already subscribes to remote
    support, unless it is ``corporate`` (and then buys on invoice)."""
    subscriptions = [
        Subscription.model_validate(paid_subscription(datetime(2026, 6, 1, tzinfo=UTC)))
    ]
    fields = _CUSTOMERS["de" if locale == "de" else "en", reverse_charge]
    if reverse_charge:
        return Account(**fields)
    return Account(**fields, corporate=corporate, subscriptions=[] if corporate else subscriptions)


def _invoice(
    catalog: Catalog, account: Account, items: list[OrderItem], vat_id: str | None = None
) -> Invoice:
    """The order priced as the checkout prices it, with the invoice number it would get."""
    order = Order(
        order_id="ord-preview",
        account_id=account.account_id,
        items=items,
        payment_method=None if account.corporate else "pm_card_visa",
        vat_id=vat_id,
    )
    vat = VatCheck(vat_id=vat_id, status="valid") if vat_id else None
    invoice = price_order(order, account, catalog, ANCHOR, vat).invoice
    return invoice.model_copy(update={"number": INVOICE_NUMBER}) if invoice.total > 0 else invoice


def _charge(order_id: str, invoice: Invoice) -> ChargeInfo:
    return ChargeInfo(
        id=payment_id("ch", f"{order_id}:charge"),
        amount=invoice.total,
        currency=invoice.currency,
        card=SANDBOX_CARDS["pm_card_visa"],
        invoice_number=invoice.number,
    )


CART = [
    # 5 -> 8 seats and Standard -> Premium: a change line with credit for the unused months.
    OrderItem(product="remote-support", plan="premium", seats=8, billing_cycle=BillingCycle.ANNUAL),
    OrderItem(product="meetings", plan="business", seats=12, billing_cycle=BillingCycle.MONTHLY),
    OrderItem(product="password-vault", plan="teams", seats=4, mode=ItemMode.TRIAL),
]
NEW_ONLY = [
    OrderItem(product="remote-support", plan="premium", seats=5, billing_cycle=BillingCycle.ANNUAL)
]
TRIAL_ONLY = [OrderItem(product="password-vault", plan="teams", seats=4, mode=ItemMode.TRIAL)]


def _confirmations(catalog: Catalog, locale: str) -> list[Preview]:
    customer = _customer(locale)
    cart = _invoice(catalog, customer, CART)
    business = _customer(locale, reverse_charge=True)
    vat_id = "ATU13585627" if locale == "de" else "NL004495445B01"
    reverse = _invoice(catalog, business, NEW_ONLY, vat_id)
    trial = _invoice(catalog, customer, TRIAL_ONLY)
    corporate = _customer(locale, corporate=True)
    invoiced = _invoice(catalog, corporate, NEW_ONLY)
    due = ANCHOR + timedelta(days=30)
    purpose = EmailPurpose.CONFIRMATION

    def confirmation(order_id: str, account: Account, invoice: Invoice) -> SendEmailInput:
        return SendEmailInput(
            order_id=order_id,
            account_id=account.account_id,
            purpose=purpose,
            invoice=invoice,
            payment_method="pm_card_visa" if invoice.total > 0 else None,
            card=_charge(order_id, invoice).card if invoice.total > 0 else None,
        )

    return [
        Preview(
            "confirmation", purpose, locale, confirmation("ord-2041", customer, cart), customer
        ),
        Preview(
            "confirmation-reverse-charge",
            purpose,
            locale,
            confirmation("ord-2042", business, reverse),
            business,
        ),
        Preview(
            "confirmation-trial",
            purpose,
            locale,
            confirmation("ord-2043", customer, trial),
            customer,
        ),
        Preview(
            "confirmation-invoiced",
            purpose,
            locale,
            SendEmailInput(
                order_id="ord-2044",
                account_id=corporate.account_id,
                purpose=purpose,
                invoice=invoiced,
                paid_by_invoice=True,
                due_date=due,
            ),
            corporate,
            due_date=due,
        ),
    ]


def _trial_email(catalog: Catalog, locale: str, purpose: str) -> Preview:
    """A trial e-mail as TrialWorkflow sends it: product and end, no invoice."""
    customer = _customer(locale)
    product = catalog.products["password-vault"]
    trial_end = ANCHOR + product.trial_period
    email = SendEmailInput(
        # The trial workflow's outbox key: its workflow id and the trial's start.
        order_id=f"trial-{customer.account_id}-password-vault-{ANCHOR:%Y%m%d%H%M%S}",
        account_id=customer.account_id,
        purpose=EmailPurpose(purpose),
        product="password-vault",
        trial_end=trial_end,
    )
    return Preview(purpose, purpose, locale, email, customer, product_name=product.name)


def _failure_email(catalog: Catalog, locale: str, purpose: str) -> Preview:
    """Rejection (an approver said no, with words of their own), compensation (an operator undid
    a paid cart, with a reason of their own) and any other order e-mail: the cart's order."""
    customer = _customer(locale)
    invoice = _invoice(catalog, customer, CART)
    order_id = "ord-2045"
    if purpose == EmailPurpose.REJECTION:
        account = _customer(locale, corporate=True)
        email = SendEmailInput(
            order_id=order_id,
            account_id=account.account_id,
            purpose=EmailPurpose.REJECTION,
            invoice=_invoice(catalog, account, NEW_ONLY).model_copy(update={"number": None}),
            reason="approval_rejected",
            message=f"rejected by anna.berg@kestrel.example: {APPROVER_REASON}",
        )
        return Preview(purpose, purpose, locale, email, account)
    if purpose != EmailPurpose.COMPENSATION:
        # An order e-mail of another purpose (parked ...): the paid cart, held up in provisioning.
        email = SendEmailInput(
            order_id=order_id,
            account_id=customer.account_id,
            purpose=EmailPurpose(purpose),
            invoice=invoice,
            payment_method="pm_card_visa",
            card=_charge(order_id, invoice).card,
            reason="provisioning_failed",
            message=OPERATOR_REASON,
        )
        return Preview(purpose, purpose, locale, email, customer)
    charge = _charge(order_id, invoice)
    refund = ChargeInfo(
        id=payment_id("re", f"{order_id}:refund"),
        amount=charge.amount,
        currency=charge.currency,
    )
    email = SendEmailInput(
        order_id=order_id,
        account_id=customer.account_id,
        purpose=EmailPurpose.COMPENSATION,
        invoice=invoice,
        # As the workflow hands it over: the refund, not the card it went back to.
        reason="operator_compensated",
        message=OPERATOR_REASON,
        refund=refund,
        credit_note=CreditNote(
            number=CREDIT_NOTE_NUMBER,
            invoice_number=INVOICE_NUMBER,
            amount=invoice.total,
            currency=invoice.currency,
        ),
    )
    return Preview(purpose, purpose, locale, email, customer)


def template_purposes(templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[str]:
    """The purposes that have templates: ``confirmation``, ``rejection``, ..."""
    found = {
        path.name.split(".", 1)[0]
        for path in templates_dir.glob("*.subject.j2")
        if not path.name.startswith("_")
    }
    return sorted(found)


def previews(catalog: Catalog, templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[Preview]:
    """Every preview: each purpose with templates, in each locale."""
    known = {purpose.value for purpose in EmailPurpose}
    result: list[Preview] = []
    for purpose in template_purposes(templates_dir):
        if purpose not in known:
            print(f"skipped {purpose}: templates but no EmailPurpose", file=sys.stderr)
            continue
        for locale in SUPPORTED_LOCALES:
            if purpose == EmailPurpose.CONFIRMATION:
                result.extend(_confirmations(catalog, locale))
            elif purpose.startswith("trial_"):
                result.append(_trial_email(catalog, locale, purpose))
            else:
                result.append(_failure_email(catalog, locale, purpose))
    return result


def write_previews(
    out: Path,
    *,
    catalog: Catalog | None = None,
    templates_dir: Path = DEFAULT_TEMPLATES_DIR,
    sender: str | None = None,
) -> list[Path]:
    """Render every preview into ``out``; return the files written."""
    catalog = catalog or load_catalog()
    sender = sender or Settings().mail_from
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for preview in previews(catalog, templates_dir):
        ctx = email_context(
            preview.email,
            preview.account,
            product_name=preview.product_name,
            due_date=preview.due_date,
            catalog=catalog,
        )
        message = compose_email(
            ctx,
            to=preview.account.billing_email,
            sender=sender,
            templates_dir=templates_dir,
            date=ANCHOR,
        )
        base = out / f"{preview.name}.{preview.locale}"
        eml = base.with_name(base.name + ".eml")
        html = base.with_name(base.name + ".html")
        eml.write_bytes(message.as_bytes())
        html.write_text(render_email(ctx, templates_dir).html, encoding="utf-8")
        written += [eml, html]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.previews", description=__doc__.split("\n\n", 1)[0] if __doc__ else None
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the files (default {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)
    written = write_previews(args.out)
    for path in written:
        print(path)
    print(f"{len(written)} files in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
