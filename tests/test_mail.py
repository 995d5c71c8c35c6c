"""checkout.mail: formatting, templates, message building and real SMTP delivery."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import aiosmtplib
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from checkout.config import Settings
from checkout.mail import DEFAULT_TEMPLATES_DIR
from checkout.mail import EmailContext
from checkout.mail import RenderedEmail
from checkout.mail import SmtpMailer
from checkout.mail import build_message
from checkout.mail import compose_email
from checkout.mail import email_context
from checkout.mail import format_date
from checkout.mail import format_datetime
from checkout.mail import format_money
from checkout.mail import format_percent
from checkout.mail import message_id_for
from checkout.mail import normalize_locale
from checkout.mail import render_email
from checkout.mail import sender_domain
from checkout.models import BillingCycle
from checkout.models import CardDetails
from checkout.models import ChargeInfo
from checkout.models import EmailPurpose
from checkout.models import InvoiceLine
from checkout.models import LineKind
from checkout.models import SendEmailInput
from tests.helpers import account
from tests.helpers import paid_subscription
from tests.helpers.invoices import new_line
from tests.helpers.invoices import reverse_charge_invoice
from tests.helpers.invoices import standard_invoice

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The en dash the templates put between product and plan, and between period dates.
DASH = "\N{EN DASH}"
#: Between seats and unit price in an amount's explanation.
TIMES = "\N{MULTIPLICATION SIGN}"
MONTH_LATER = datetime(2026, 12, 26, 10, 15, tzinfo=UTC)
TRIAL_END = datetime(2026, 12, 10, 10, 15, tzinfo=UTC)
SENDER = "Kestrel Cloud Billing <no-reply@billing.kestrel.example>"
RECIPIENT = "billing@muster.example"


# --- builders -----------------------------------------------------------------------------------


def change_line() -> InvoiceLine:
    """Meetings Business, 5 -> 8 seats, monthly, with credit for the unused month."""
    previous = paid_subscription(
        datetime(2026, 11, 10, 10, 15, tzinfo=UTC),
        datetime(2026, 12, 10, 10, 15, tzinfo=UTC),
        product="meetings",
        plan="business",
        billing_cycle="monthly",
        period_amount="70.00",
    )
    return new_line(
        product="meetings", product_name="Meetings", plan="business", plan_name="Business",
        seats=8, new_seats=3, billing_cycle=BillingCycle.MONTHLY, kind=LineKind.CHANGE,
        unit_price=Decimal("14.00"), amount=Decimal("112.00"), credit=Decimal("33.87"),
        period_end=MONTH_LATER, previous=previous,
    )  # fmt: skip


def trial_line() -> InvoiceLine:
    free = Decimal("0.00")
    return new_line(
        product="password-vault", product_name="Password Vault", plan="teams", plan_name="Teams",
        seats=4, new_seats=4, billing_cycle=None, kind=LineKind.TRIAL,
        unit_price=free, amount=free, period_end=TRIAL_END,
    )  # fmt: skip


def context(**overrides: Any) -> EmailContext:
    values: dict[str, Any] = {
        "purpose": EmailPurpose.CONFIRMATION,
        "locale": "de",
        "timezone": "Europe/Berlin",
        "account_name": "Muster GmbH",
        "order_id": "ord-1001",
        "invoice": standard_invoice(),
        "payment_method": "pm_card_visa",
        "card": CardDetails(brand="visa", last4="4242", exp_month=12, exp_year=2034),
    }
    values.update(overrides)
    return EmailContext(**values)


# --- formatting ---------------------------------------------------------------------------------


def test_format_money_german() -> None:
    """German amounts use a thousands dot, decimal comma and a trailing euro sign."""
    assert format_money(Decimal("1725.50"), "EUR", "de") == "1.725,50 €"
    assert format_money(Decimal("1725.5"), "EUR", "de_DE") == "1.725,50 €"
    assert format_money(Decimal("0.00"), "EUR", "de") == "0,00 €"
    assert format_money(Decimal("320.00"), "USD", "de") == "320,00 $"


def test_format_money_english() -> None:
    """English amounts lead with the symbol and use a thousands comma."""
    assert format_money(Decimal("1725.50"), "EUR", "en") == "€1,725.50"
    assert format_money(Decimal("1725.5"), "EUR", "en_US") == "€1,725.50"
    assert format_money(Decimal("1234567.00"), "USD", "en") == "$1,234,567.00"
    assert format_money(Decimal("9.99"), "GBP", "en") == "£9.99"


def test_format_money_always_shows_minor_units_and_rounds_half_up() -> None:
    """Minor units always show ("1725.5" never) and rounding is ours (HALF_UP), not Babel's."""
    assert "1725.5" not in format_money(Decimal("1725.5"), "EUR", "en")
    assert format_money(Decimal("0.125"), "EUR", "en") == "€0.13"
    assert format_money(Decimal("2.345"), "EUR", "de") == "2,35 €"


def test_format_money_refuses_currencies_we_do_not_sell_in() -> None:
    """The rounding is checkout.money's, with its minor-unit table: no guessing for others."""
    with pytest.raises(ValueError, match="'JPY' is not supported"):
        format_money(Decimal(1725), "JPY", "en")


def test_format_money_refuses_floats() -> None:
    """Money must arrive as a Decimal, never a float."""
    with pytest.raises(TypeError):
        format_money(1725.5, "EUR", "de")  # type: ignore[arg-type]


def test_format_percent_keeps_decimal_rates() -> None:
    """VAT rates print as percentages in the locale's style without losing decimals."""
    assert format_percent(Decimal("0.19"), "de") == "19 %"
    assert format_percent(Decimal("0.19"), "en") == "19%"
    assert format_percent(Decimal("0.255"), "de") == "25,5 %"
    assert format_percent(Decimal("0.255"), "en") == "25.5%"


def test_format_date_in_account_time_zone() -> None:
    """Dates are the calendar date in the account's zone, German and English long format."""
    late = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert format_date(late, "Europe/Berlin", "de") == "27. November 2026"
    assert format_date(late, "America/New_York", "en") == "November 26, 2026"
    assert format_date(late, "UTC", "en") == "November 26, 2026"
    assert format_date(late, "Europe/Berlin", "de", width="medium") == "27.11.2026"


def test_format_date_unknown_zone_falls_back_to_utc() -> None:
    """An unknown time zone does not stop the e-mail: the date is shown in UTC."""
    late = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert format_date(late, "Mars/Olympus_Mons", "en") == "November 26, 2026"


def test_format_datetime_with_zone() -> None:
    """Date-times show the local time and the zone's abbreviation for the locale."""
    late = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert format_datetime(late, "Europe/Berlin", "de") == "27.11.2026, 00:30 MEZ"
    assert format_datetime(late, "America/New_York", "en") == "Nov 26, 2026, 6:30 PM EST"


def test_format_datetime_names_a_zone_without_a_local_name_by_its_offset() -> None:
    """Where the locale has no name for the zone, it reads UTC+2 (not a bare "+0200")."""
    late = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)
    assert format_datetime(late, "Europe/Helsinki", "en") == "Nov 27, 2026, 1:30 AM UTC+2"
    assert format_datetime(late, "Asia/Kolkata", "de") == "27.11.2026, 05:00 UTC+5:30"
    assert format_datetime(late, "America/New_York", "de") == "26.11.2026, 18:30 UTC-5"
    assert format_datetime(late, "Europe/Dublin", "en", width="long") == (
        "November 26, 2026, 11:30 PM UTC"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("de", "de"),
        ("de_DE", "de"),
        ("de-AT", "de"),
        ("DE_ch", "de"),
        ("en", "en"),
        ("en_GB", "en"),
        ("fr", "en"),
        ("fr_FR", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_normalize_locale(given: str | None, expected: str) -> None:
    """German variants map to "de"; every other locale falls back to "en"."""
    assert normalize_locale(given) == expected


def test_unsupported_locale_renders_english() -> None:
    """An account with locale "fr" gets the English e-mail."""
    rendered = render_email(context(locale="fr"))
    assert rendered.locale == "en"
    assert rendered.subject == "Your Kestrel Cloud order ord-1001 is confirmed"
    assert "Total due: €1,725.50" in rendered.text
    assert '<html lang="en">' in rendered.html


# --- confirmation content -----------------------------------------------------------------------


def test_confirmation_standard_vat_german() -> None:
    """German confirmation: lines, periods, next billing date, net, VAT rate, total, payment."""
    invoice = standard_invoice([new_line(), change_line()])
    rendered = render_email(context(invoice=invoice))
    assert rendered.subject == "Ihre Bestellung ord-1001 bei Kestrel Cloud ist bestätigt"
    text = rendered.text
    for expected in (
        f"1. Remote Support {DASH} Premium",
        "Neues Abonnement: 5 Sitze",
        "Abotarif: Premium",
        "Abrechnung: jährlich",
        "Preis pro Sitz: 290,00 €",
        f"Betrag: 1.450,00 € (5 {TIMES} 290,00 €)",
        f"Abrechnungszeitraum: 26. November 2026 {DASH} 26. November 2027",
        "Nächstes Abrechnungsdatum: 26. November 2027",
        f"2. Meetings {DASH} Business",
        "Änderung: 5 → 8 Sitze (+3 neu zuzuweisen)",
        "Abotarif: Business (unverändert)",
        "Abrechnung: monatlich",
        "Preis pro Sitz: 14,00 €",
        f"Betrag: 112,00 € (8 {TIMES} 14,00 €)",
        "Gutschrift: \u221233,87 €",
        "Nächstes Abrechnungsdatum: 26. Dezember 2026",
        "Nettobetrag: 1.450,00 €",
        "Umsatzsteuer 19 % (DE): 275,50 €",
        "Fällige Gesamtsumme: 1.725,50 €",
        "Zahlungsmethode: Visa •••• 4242",
    ):
        assert expected in text, expected
    assert "Reverse" not in text
    # A new line has no credit; only the change line shows one, with its sign.
    assert text.count("Gutschrift:") == 1
    html = rendered.html
    for expected in (
        "Remote Support",
        "Premium",
        "jährlich",
        "290,00 €",
        "1.450,00 €",
        "\u221233,87 €",
        f"Abrechnungszeitraum: 26. November 2026 {DASH} 26. November 2027",
        "Nächstes Abrechnungsdatum: 26. November 2027",
        "Umsatzsteuer 19 % (DE)",
        "275,50 €",
        "Fällige Gesamtsumme",
        "1.725,50 €",
        "Visa •••• 4242",
    ):
        assert expected in html, expected
    assert "1725.5" not in text + html


def test_confirmation_standard_vat_english() -> None:
    """The English confirmation carries the same facts in English formats."""
    rendered = render_email(context(locale="en", timezone="UTC"))
    for expected in (
        f"Remote Support {DASH} Premium",
        "New subscription: 5 seats",
        "Plan: Premium",
        "Billing: annual",
        "Unit price per seat: €290.00",
        f"Amount: €1,450.00 (5 {TIMES} €290.00)",
        f"Billing period: November 26, 2026 {DASH} November 26, 2027",
        "Next billing date: November 26, 2027",
        "Net: €1,450.00",
        "VAT 19% (DE): €275.50",
        "Total due: €1,725.50",
        "Payment method: Visa •••• 4242",
    ):
        assert expected in rendered.text, expected


def test_confirmation_reverse_charge_german() -> None:
    """German reverse charge: the legal note and both VAT IDs, no VAT rate."""
    rendered = render_email(context(invoice=reverse_charge_invoice()))
    for body in (rendered.text, rendered.html):
        assert "Steuerschuldnerschaft des Leistungsempfängers" in body
        assert "IE9731845N" in body
        assert "ATU13585627" in body
        assert "19 %" not in body
        assert "1.450,00 €" in body
    assert "USt-IdNr. des Leistenden: IE9731845N" in rendered.text
    assert "USt-IdNr. des Leistungsempfängers: ATU13585627" in rendered.text
    assert "Fällige Gesamtsumme: 1.450,00 €" in rendered.text


def test_confirmation_reverse_charge_english() -> None:
    """An English reverse-charge confirmation says "Reverse charge" and shows both VAT IDs."""
    rendered = render_email(context(locale="en", invoice=reverse_charge_invoice()))
    for body in (rendered.text, rendered.html):
        assert "Reverse charge" in body
        assert "IE9731845N" in body
        assert "ATU13585627" in body
    assert "Supplier VAT ID: IE9731845N" in rendered.text
    assert "Customer VAT ID: ATU13585627" in rendered.text
    assert "Total due: €1,450.00" in rendered.text


def test_confirmation_counts_seats_to_assign() -> None:
    """The confirmation says how many new seats (sum of line.new_seats) wait to be assigned."""
    invoice = standard_invoice([new_line(), change_line(), trial_line()])
    ctx = context(invoice=invoice)
    assert ctx.seats_to_assign == 5 + 3 + 4
    german = render_email(ctx)
    assert "12 neue Sitze warten darauf, Ihren Benutzern zugewiesen zu werden." in german.text
    assert "vergessen Sie nicht, die Sitze Ihren Benutzern zuzuweisen" in german.text
    assert "12 neue Sitze warten" in german.html
    english = render_email(context(locale="en", invoice=invoice))
    assert "12 new seats are waiting to be assigned to users." in english.text


def test_confirmation_single_seat_and_no_seats() -> None:
    """One new seat reads in the singular; with no new seats there is no reminder."""
    one = render_email(context(invoice=standard_invoice([new_line(seats=6, new_seats=1)])))
    assert "1 neuer Sitz wartet darauf" in one.text
    none = render_email(context(invoice=standard_invoice([new_line(new_seats=0)])))
    assert "Sitze zuweisen" not in none.text
    assert "Sitze zuweisen" not in none.html


def test_confirmation_trial_line_shows_trial_end_instead_of_price() -> None:
    """A trial line shows when the trial ends, not a price or billing period."""
    rendered = render_email(context(invoice=standard_invoice([new_line(), trial_line()])))
    assert f"Password Vault {DASH} Teams" in rendered.text
    assert "Testzeitraum bis: 10. Dezember 2026, 11:15 MEZ" in rendered.text
    assert "10. Dezember 2026, 11:15 MEZ" in rendered.html
    trial_part = rendered.text.split("Password Vault", 1)[1].split("Nettobetrag", 1)[0]
    assert "€" not in trial_part
    assert "Abrechnungszeitraum" not in trial_part


def test_confirmation_paid_by_invoice_shows_due_date_not_card() -> None:
    """Corporate orders say an invoice is issued, with its due date, instead of a card."""
    due = datetime(2026, 12, 26, 10, 15, tzinfo=UTC)
    rendered = render_email(
        context(payment_method=None, paid_by_invoice=True, due_date=due, locale="en")
    )
    assert "you will receive an invoice for €1,725.50, due on December 26, 2026" in rendered.text
    assert "Payment method" not in rendered.text
    assert "December 26, 2026" in rendered.html


def test_confirmation_nothing_due_says_so() -> None:
    """An order with nothing due (trials only) speaks of the trial and says nothing is charged."""
    nothing = Decimal("0.00")
    invoice = standard_invoice(
        [trial_line()],
        net=nothing,
        vat=nothing,
        total=nothing,
        seller_vat_id=None,
        seller_name=None,
    )
    rendered = render_email(context(invoice=invoice, payment_method=None, card=None))
    assert rendered.subject == (
        "Ihre kostenlose Testversion bei Kestrel Cloud ist eingerichtet (Bestellung ord-1001)"
    )
    assert "Ihre kostenlose Testversion für das Konto „Muster GmbH“ ist eingerichtet" in (
        " ".join(rendered.text.split())
    )
    assert "Während der Testversion wird nichts berechnet." in rendered.text
    # A trial alone speaks of the trial: no totals, no billing period, no payment.
    for billing in ("Nettobetrag", "Gesamtsumme", "Abrechnungszeitraum", "Zahlung"):
        assert billing not in rendered.text, billing


def test_compensation_mentions_full_refund_and_restore() -> None:
    """The compensation e-mail names the refunded amount and the restored subscriptions."""
    refund = ChargeInfo(id="re_123", amount=Decimal("1725.50"), currency="EUR")
    german = render_email(
        context(purpose=EmailPurpose.COMPENSATION, refund=refund, reason="provisioning_failed")
    )
    assert german.subject == "Ihre Bestellung ord-1001 bei Kestrel Cloud wurde storniert"
    german_text = " ".join(german.text.split())
    assert "Den vollen Betrag von 1.725,50 € haben wir Ihrer Karte Visa •••• 4242" in german_text
    assert "Ihre Abonnements sind wieder so wie vor der Bestellung" in german_text
    assert "Grund: Die Produkte konnten nicht bereitgestellt werden." in german_text
    english = render_email(
        context(
            purpose=EmailPurpose.COMPENSATION,
            locale="en",
            refund=refund,
            reason="provisioning_failed",
        )
    )
    english_text = " ".join(english.text.split())
    assert "we have refunded the full amount of €1,725.50 to your card Visa •••• 4242" in (
        english_text
    )
    assert "Your subscriptions are back to what they were before the order" in english.html


def test_rejection_explains_reason() -> None:
    """The rejection e-mail explains the reason code and says nothing was charged."""
    rendered = render_email(
        context(purpose=EmailPurpose.REJECTION, locale="en", reason="card_declined", invoice=None)
    )
    assert rendered.subject == "Your Kestrel Cloud order ord-1001 could not be placed"
    assert "Reason: Your card was declined." in rendered.text
    assert "Nothing was charged" in rendered.html


@pytest.mark.parametrize("purpose", list(EmailPurpose))
@pytest.mark.parametrize("locale", ["de", "en"])
@pytest.mark.parametrize("with_invoice", [True, False])
def test_every_purpose_renders(purpose: EmailPurpose, locale: str, with_invoice: bool) -> None:
    """Every purpose renders in de and en, with or without invoice, under StrictUndefined."""
    rendered = render_email(
        context(
            purpose=purpose,
            locale=locale,
            invoice=standard_invoice([new_line(), trial_line()]) if with_invoice else None,
            reason="approval_rejected",
            product_name="Password Vault",
            trial_end=TRIAL_END,
        )
    )
    assert rendered.subject
    assert "\n" not in rendered.subject
    assert "Kestrel Cloud" in rendered.text
    assert rendered.html.lstrip().startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale}">' in rendered.html


def test_trial_emails_show_product_and_end() -> None:
    """Trial e-mails name the product and the trial's end in the account's time zone."""
    ctx = context(
        purpose=EmailPurpose.TRIAL_REMINDER,
        invoice=None,
        product_name="Password Vault",
        trial_end=TRIAL_END,
    )
    rendered = render_email(ctx)
    assert rendered.subject == (
        "Ihre kostenlose Testversion von Password Vault endet am 10. Dezember 2026, 11:15 MEZ"
    )
    assert "10. Dezember 2026, 11:15 MEZ" in rendered.text
    welcome = render_email(
        context(
            purpose=EmailPurpose.TRIAL_WELCOME,
            locale="en",
            invoice=standard_invoice([trial_line()]),
        )
    )
    assert welcome.subject == "Welcome to Password Vault: your free trial has started"
    assert "4 new seats are waiting to be assigned to users." in welcome.text


# --- escaping and headers -----------------------------------------------------------------------


def test_html_escapes_account_name() -> None:
    """An account name is escaped in HTML, verbatim in text, and absent from every header."""
    name = "<script>alert(1)</script> Müller & Söhne"
    ctx = context(account_name=name, message='<img src="x">')
    rendered = render_email(ctx)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Müller &amp; Söhne" in rendered.html
    assert name in rendered.text
    message = build_message(rendered, to=RECIPIENT, sender=SENDER, message_id="<a.b@c.example>")
    for header, value in message.items():
        assert "script" not in str(value), header
        assert "Müller" not in str(value), header


def test_html_escapes_message_and_payment_token() -> None:
    """A reason message and a payment token with markup never reach the e-mail; card details
    with markup are escaped in HTML."""
    ctx = context(
        purpose=EmailPurpose.REJECTION,
        reason="<b>weird</b>",
        message='<img src="x" onerror="steal()">',
        payment_method="<i>tok</i>",
    )
    rendered = render_email(ctx)
    assert "<img" not in rendered.html
    # The message is for operators (an approver's or operator's words): never in the e-mail.
    assert "img" not in rendered.html and "img" not in rendered.text
    assert "<b>weird" not in rendered.html
    confirmation = render_email(context(payment_method="<i>tok</i>"))
    # The payment token is never shown (the card as the gateway reported it is).
    assert "tok" not in confirmation.html and "tok" not in confirmation.text
    hostile = CardDetails(brand="<script>", last4="4242", exp_month=1, exp_year=2030)
    escaped = render_email(context(card=hostile))
    assert "<script>" not in escaped.html and "&lt;Script&gt; •••• 4242" in escaped.html


@pytest.mark.parametrize(
    "recipient",
    [
        "victim@example.com\r\nBcc: everyone@example.com",
        "victim@example.com\nBcc: everyone@example.com",
        "victim@example.com\r",
        "a@example.com, b@example.com",
        "not-an-address",
    ],
)
def test_recipient_with_line_break_or_several_addresses_is_refused(recipient: str) -> None:
    """A recipient with CR/LF, or anything but exactly one address, raises ValueError."""
    rendered = render_email(context())
    with pytest.raises(ValueError):
        build_message(rendered, to=recipient, sender=SENDER, message_id="<a.b@c.example>")


def test_sender_and_message_id_with_line_break_are_refused() -> None:
    """CR/LF in the sender or the Message-ID raises ValueError too."""
    rendered = render_email(context())
    with pytest.raises(ValueError):
        build_message(
            rendered, to=RECIPIENT, sender=SENDER + "\r\nBcc: x@example.com", message_id="<a@b.c>"
        )
    with pytest.raises(ValueError):
        build_message(rendered, to=RECIPIENT, sender=SENDER, message_id="<a@b.c>\r\nBcc: x@y.z")


def test_subject_line_breaks_cannot_add_headers() -> None:
    """A subject with CR/LF is folded into one line: no extra header appears."""
    rendered = RenderedEmail(
        subject="Hello\r\nBcc: everyone@example.com", text="t", html="<p>h</p>"
    )
    message = build_message(rendered, to=RECIPIENT, sender=SENDER, message_id="<a.b@c.example>")
    assert message["Subject"] == "Hello Bcc: everyone@example.com"
    assert message["Bcc"] is None
    raw = message.as_bytes()
    assert b"\nBcc:" not in raw


@pytest.mark.parametrize("id_length", range(1, 65))
def test_a_german_subject_arrives_as_written_whatever_the_order_id(id_length: int) -> None:
    """A non-ASCII subject survives the trip through bytes unchanged for order ids of every
    allowed length (folding once doubled a space), and the body keeps short lines."""
    subject = (
        f"Ihre Bestellung {'o' * id_length} bei Example Software Ltd"
        " \u2013 Gutschrift über 1.725,50 €"
    )
    rendered = RenderedEmail(subject=subject, text="ä" * 300, html="<p>ü</p>" * 40, locale="de")
    message = build_message(rendered, to=RECIPIENT, sender=SENDER, message_id="<a.b@c.example>")
    raw = message.as_bytes()
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject
    # The body keeps quoted-printable's short lines (the unfolded headers' 998 is not for it).
    body = raw.split(b"\n\n", 1)[1].split(b"\n\n", 1)[1]
    assert max(len(line.rstrip(b"\r")) for line in body.splitlines()) <= 80


def test_message_is_multipart_alternative() -> None:
    """The message has the text part first, then HTML, both UTF-8, with the given headers."""
    rendered = render_email(context(account_name="Müller & Söhne"))
    message = build_message(
        rendered, to=RECIPIENT, sender=SENDER, message_id="<confirmation.ord-1001@x.example>"
    )
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert message["Message-ID"] == "<confirmation.ord-1001@x.example>"
    assert message["To"] == RECIPIENT
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Content-Language"] == "de"
    assert message["Subject"] == "Ihre Bestellung ord-1001 bei Kestrel Cloud ist bestätigt"


# --- message ids --------------------------------------------------------------------------------


def test_message_id_is_deterministic() -> None:
    """The same order and purpose always give the same Message-ID; other purposes differ."""
    first = message_id_for("ord-1001", "confirmation", "billing.kestrel.example")
    assert first == "<confirmation.ord-1001@billing.kestrel.example>"
    assert message_id_for("ord-1001", EmailPurpose.CONFIRMATION, "billing.kestrel.example") == first
    assert message_id_for("ord-1001", "compensation", "billing.kestrel.example") != first
    assert message_id_for("ord-1002", "confirmation", "billing.kestrel.example") != first


def test_message_id_refuses_unsafe_parts() -> None:
    """Order ids, purposes or domains that could break the header are refused."""
    with pytest.raises(ValueError):
        message_id_for("ord 1001", "confirmation", "billing.kestrel.example")
    with pytest.raises(ValueError):
        message_id_for("ord>1001", "confirmation", "billing.kestrel.example")
    with pytest.raises(ValueError):
        message_id_for("ord-1001", "confirmation\r\nBcc: x", "billing.kestrel.example")
    with pytest.raises(ValueError):
        message_id_for("ord-1001", "confirmation", "kestrel.example>\r\nX: y")


def test_sender_domain_from_mail_from() -> None:
    """The Message-ID domain is the domain of the From address."""
    assert sender_domain(SENDER) == "billing.kestrel.example"
    assert sender_domain("no-reply@Billing.Kestrel.Example") == "billing.kestrel.example"
    assert sender_domain('"Kestrel Cloud, Billing" <a@kestrel.example>') == "kestrel.example"
    with pytest.raises(ValueError):
        sender_domain("no domain here")


def test_compose_email_uses_deterministic_id_and_account_fields() -> None:
    """compose_email builds from input and account, with the Message-ID from the From domain."""
    acc = account("acc-42", billing_email=RECIPIENT, locale="de_AT", timezone="Europe/Vienna")
    request = SendEmailInput(
        order_id="ord-1001",
        account_id="acc-42",
        purpose=EmailPurpose.CONFIRMATION,
        invoice=standard_invoice(),
        payment_method="pm_card_mastercard",
        card=CardDetails(brand="mastercard", last4="4444", exp_month=12, exp_year=2034),
    )
    ctx = email_context(request, acc)
    assert ctx.locale == "de"
    message = compose_email(ctx, to=acc.billing_email, sender=SENDER)
    again = compose_email(ctx, to=acc.billing_email, sender=SENDER)
    assert message["Message-ID"] == "<confirmation.ord-1001@billing.kestrel.example>"
    assert again["Message-ID"] == message["Message-ID"]
    text = message.get_body(("plain",))
    assert text is not None
    assert "Mastercard •••• 4444" in text.get_content()
    # The payment token is never shown to the customer.
    assert "pm_card_mastercard" not in message.as_string()


def test_templates_exist_for_every_purpose_and_locale() -> None:
    """Each purpose has subject, text and HTML templates in German and English."""
    for purpose in EmailPurpose:
        for locale in ("de", "en"):
            for kind in ("subject", "txt", "html"):
                path = DEFAULT_TEMPLATES_DIR / f"{purpose.value}.{locale}.{kind}.j2"
                assert path.is_file(), path


def test_templates_name_no_other_company() -> None:
    """The e-mails name Kestrel Cloud only, never another vendor's products."""
    for path in Path(DEFAULT_TEMPLATES_DIR).glob("*.j2"):
        content = path.read_text(encoding="utf-8").lower()
        for foreign in ("logmein", "rescueassist", "goto"):
            assert foreign not in content, (path, foreign)


# --- real SMTP ----------------------------------------------------------------------------------


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what arrived."""

    envelopes: list[Any] = field(default_factory=list)
    #: Per message: whether it came over an encrypted connection (STARTTLS or implicit TLS).
    encrypted: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    port: int
    sink: Sink
    #: The tls setting a mailer needs for this server.
    tls: str = "none"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
    # handled=False: aiosmtpd answers a failure with 535 itself.
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


def _serve(tls: str = "none", **kwargs: Any) -> Iterator[SmtpServer]:
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port=port, sink=sink, tls=tls)
    finally:
        controller.stop()


def _server_options(tls: str, server_tls: ssl.SSLContext) -> dict[str, Any]:
    """aiosmtpd's options for a server that speaks ``tls`` as the mailer's setting names it
    ("none", "starttls" or "tls"); a server with TLS wants a login."""
    login = {"authenticator": _authenticator, "auth_required": True}
    if tls == "starttls":
        return {"tls_context": server_tls, "require_starttls": True, **login}
    if tls == "tls":
        # aiosmtpd only counts STARTTLS as encryption for AUTH; this connection is TLS throughout.
        return {"ssl_context": server_tls, "auth_require_tls": False, **login}
    return {}


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest, server_tls: ssl.SSLContext) -> Iterator[SmtpServer]:
    """A server speaking the TLS mode the test's parameter names (see :func:`_server_options`)."""
    yield from _serve(request.param, **_server_options(request.param, server_tls))


#: aiosmtpd warns about AUTH without STARTTLS even on an implicit-TLS listener.
implicit_tls_auth = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning"
)


def _settings(port: int, tls: str, *, auth: bool = False) -> Settings:
    return Settings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_tls=tls,  # type: ignore[arg-type]
        smtp_username="mailer" if auth else None,
        smtp_password="s3cret" if auth else None,
        mail_from=SENDER,
    )


def _umlaut_message() -> EmailMessage:
    ctx = context(
        account_name="Müller & Söhne", invoice=standard_invoice([new_line(), trial_line()])
    )
    return compose_email(ctx, to=RECIPIENT, sender=SENDER)


def _assert_delivered(server: SmtpServer, *, encrypted: bool) -> None:
    assert len(server.sink.envelopes) == 1
    assert server.sink.encrypted == [encrypted]
    envelope = server.sink.envelopes[0]
    assert envelope.mail_from == "no-reply@billing.kestrel.example"
    assert envelope.rcpt_tos == [RECIPIENT]
    received = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    assert received.get_content_type() == "multipart/alternative"
    assert received["Message-ID"] == "<confirmation.ord-1001@billing.kestrel.example>"
    assert received["Subject"] == "Ihre Bestellung ord-1001 bei Kestrel Cloud ist bestätigt"
    assert received["To"] == RECIPIENT
    text = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "Müller & Söhne" in text.get_content()
    assert "Fällige Gesamtsumme: 1.725,50 €" in text.get_content()
    assert "Müller &amp; Söhne" in html.get_content()
    assert "Testzeitraum bis" in html.get_content()
    assert "10. Dezember 2026, 11:15 MEZ" in html.get_content()


@pytest.mark.parametrize(
    ("smtp_server", "encrypted"),
    [("none", False), ("starttls", True), pytest.param("tls", True, marks=implicit_tls_auth)],
    indirect=["smtp_server"],
)
async def test_smtp_delivery(
    smtp_server: SmtpServer, client_tls: ssl.SSLContext, encrypted: bool
) -> None:
    """Each tls setting delivers a multipart/alternative UTF-8 message to a real SMTP server:
    "none" in clear, "starttls" upgrading the connection and "tls" speaking TLS from the first
    byte, both of these logging in."""
    settings = _settings(smtp_server.port, smtp_server.tls, auth=encrypted)
    mailer = SmtpMailer(settings, tls_context=client_tls if encrypted else None)
    await mailer.send(_umlaut_message())
    _assert_delivered(smtp_server, encrypted=encrypted)


async def test_smtp_none_does_not_upgrade_when_starttls_is_offered(
    server_tls: ssl.SSLContext,
) -> None:
    """tls "none" stays plain even when the server offers STARTTLS."""
    for server in _serve(tls_context=server_tls):
        await SmtpMailer(_settings(server.port, "none")).send(_umlaut_message())
        _assert_delivered(server, encrypted=False)


@pytest.mark.parametrize(
    ("smtp_server", "tls", "auth"),
    [pytest.param("tls", "tls", True, marks=implicit_tls_auth), ("none", "starttls", False)],
    indirect=["smtp_server"],
    ids=["tls_without_the_test_ca", "starttls_not_offered"],
)
async def test_smtp_tls_that_cannot_be_set_up_fails(
    smtp_server: SmtpServer, tls: str, auth: bool
) -> None:
    """Without the test CA the certificate is refused, and tls "starttls" against a server
    without STARTTLS fails instead of sending in clear: the error reaches the caller."""
    mailer = SmtpMailer(_settings(smtp_server.port, tls, auth=auth), timeout=5)
    with pytest.raises(aiosmtplib.SMTPException):
        await mailer.send(_umlaut_message())
    assert smtp_server.sink.envelopes == []


@pytest.mark.parametrize("smtp_server", ["starttls"], indirect=True)
async def test_smtp_wrong_password_fails(
    smtp_server: SmtpServer, client_tls: ssl.SSLContext
) -> None:
    """A refused login raises to the caller."""
    settings = Settings(
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_tls="starttls",
        smtp_username="mailer",
        smtp_password="wrong",
        mail_from=SENDER,
    )
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await SmtpMailer(settings, tls_context=client_tls, timeout=5).send(_umlaut_message())
    assert smtp_server.sink.envelopes == []
