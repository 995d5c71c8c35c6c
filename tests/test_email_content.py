"""The content rules of the customer e-mails (docs/emails.md), checked on the parsed messages:
every file ``make emails`` writes (``python -m demo.previews``) is read back with
``email.message_from_bytes`` and its text and HTML parts are checked against the order it was
built from, so every e-mail in the previews passes the rules."""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from decimal import Decimal
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import pytest
from markupsafe import escape

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.mail import EmailContext
from checkout.mail import card_label
from checkout.mail import compose_email
from checkout.mail import format_date
from checkout.mail import format_datetime
from checkout.mail import format_money
from checkout.mail import format_percent
from checkout.mail import format_signed_credit
from checkout.mail import render_email
from checkout.models import Account
from checkout.models import EmailPurpose
from checkout.models import Invoice
from checkout.models import InvoiceLine
from checkout.models import LineKind
from checkout.models import SendEmailInput
from checkout.models import TaxTreatment
from demo.previews import ANCHOR
from demo.previews import APPROVER_REASON
from demo.previews import OPERATOR_REASON
from demo.previews import Preview
from demo.previews import previews
from demo.previews import template_purposes
from tests.helpers import account
from tests.helpers import paid_subscription
from tests.helpers.invoices import new_line
from tests.helpers.invoices import standard_invoice

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent
SENDER = "Kestrel Cloud Billing <no-reply@billing.kestrel.example>"


# --- reading a message --------------------------------------------------------------------------


class _Visible(HTMLParser):
    """The text a reader sees in the HTML part (entities decoded, tags dropped)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"style", "title"}:
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in {"style", "title"}:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def flat(text: str) -> str:
    """Whitespace runs (line wraps included) as one space."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Parsed:
    message: EmailMessage
    subject: str
    text: str
    #: The HTML part as sent (escaped) and as a reader sees it (flattened).
    html_source: str
    html: str

    @property
    def bodies(self) -> tuple[str, str]:
        """Flattened text part and visible HTML, for checks that hold for both."""
        return flat(self.text), self.html


def parse(raw: bytes) -> Parsed:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    text_part, html_part = parts
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    html_source = str(html_part.get_content())
    visible = _Visible()
    visible.feed(html_source)
    return Parsed(
        message=message,
        subject=str(message["Subject"]),
        text=str(text_part.get_content()),
        html_source=html_source,
        html=flat(" ".join(visible.parts)),
    )


# --- the rules ----------------------------------------------------------------------------------

LABELS: dict[str, dict[str, Any]] = {
    "de": {
        "seats": "Sitze",
        "seat": "Sitz",
        "monthly": "monatlich",
        "annual": "jährlich",
        "period": "Abrechnungszeitraum:",
        "next": "Nächstes Abrechnungsdatum:",
        "net": "Nettobetrag",
        "vat": "Umsatzsteuer",
        "total": "Fällige Gesamtsumme",
        "reverse": "Steuerschuldnerschaft des Leistungsempfängers",
        "invoice": "Rechnungsnummer",
        "to_assign": "+{n} neu zuzuweisen",
        "waiting": "{n} neue Sitze warten darauf, Ihren Benutzern zugewiesen zu werden",
        "credited": "bis {date}",
        "from": "vom {date}",
        "seller_vat": "USt-IdNr.: {vat_id}",
        "after_lines": ("Nettobetrag", "Sitze zuweisen:", "Mit freundlichen Grüßen"),
    },
    "en": {
        "seats": "seats",
        "seat": "seat",
        "monthly": "monthly",
        "annual": "annual",
        "period": "Billing period:",
        "next": "Next billing date:",
        "net": "Net",
        "vat": "VAT",
        "total": "Total due",
        "reverse": "Reverse charge",
        "invoice": "Invoice number",
        "to_assign": "+{n} to assign",
        "waiting": "{n} new seats are waiting to be assigned to users",
        "credited": "until {date}",
        "from": "from {date}",
        "seller_vat": "VAT ID: {vat_id}",
        "after_lines": ("Net: ", "Net €", "Assign your seats:", "Kind regards"),
    },
}
#: Words of billing a trial e-mail must not use: it speaks of the trial.
BILLING_WORDS = {
    "de": ("Abrechnungszeitraum", "Abrechnungsdatum", "abgerechnet", "Rechnungsnummer", "Summe"),
    "en": ("Billing period", "billing date", "billed", "Invoice number", "Total due"),
}
MONTHS = {
    "de": "Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember",
    "en": "January|February|March|April|May|June|July|August|September|October|November|December",
}
#: Every amount as the locale writes it, a credit with a minus sign (U+2212) before it.
AMOUNT = {
    "de": re.compile(r"^\u2212?\d{1,3}(?:\.\d{3})*,\d{2} [€$£]$"),
    "en": re.compile(r"^\u2212?[€$£]\d{1,3}(?:,\d{3})*\.\d{2}$"),
}
AMOUNT_TOKEN = {
    "de": re.compile(r"[\u2212-]?[\d.,]*\d [€$£]"),
    "en": re.compile(r"[\u2212-]?[€$£][\d.,]*\d"),
}
#: Numeric or abbreviated dates: the e-mails write dates in full ("27. November 2026").
SHORT_DATE = {
    "de": re.compile(r"\b\d{1,2}\.\d{1,2}\.\d{2,4}\b"),
    "en": re.compile(
        r"\b(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{1,2}, \d{4}"
        r"|\b\d{1,2}/\d{1,2}/\d{2,4}\b"
    ),
}


def long_dates(body: str, lang: str) -> list[str]:
    if lang == "de":
        pattern = rf"\b\d{{1,2}}\. (?:{MONTHS['de']}) \d{{4}}"
    else:
        pattern = rf"\b(?:{MONTHS['en']}) \d{{1,2}}, \d{{4}}"
    return re.findall(pattern, body)


#: The purposes this file was written with; another one (``parked``) gets the general rules.
KNOWN_PURPOSES = frozenset(
    {
        "confirmation",
        "rejection",
        "compensation",
        "trial_welcome",
        "trial_reminder",
        "trial_expired",
    }
)


def check_common(
    parsed: Parsed, account: Account, lang: str, catalog: Catalog, purpose: str
) -> None:
    """What holds for every e-mail: locale, amounts, dates, seller, escaping, no tokens, no
    operator's words, nothing customer-provided in a header."""
    message = parsed.message
    assert message["Content-Language"] == lang
    assert f'<html lang="{lang}">' in parsed.html_source
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        assert len(message.get_all(header) or []) == 1, header
    assert message["To"] == account.billing_email
    for name, value in message.items():
        assert account.name not in str(value), name
        assert "\n" not in str(value).strip(), name
    for body in (parsed.text, parsed.html_source, parsed.subject):
        assert "pm_" not in body  # the payment token never shows, the card does
        assert "PREVIEW-INTERNAL" not in body  # an operator's or approver's words never do
        assert "ticket 4711" not in body and "CFO" not in body
    text, html = parsed.bodies
    # The account name: verbatim in the text, escaped in the HTML source, readable in the HTML.
    # (Every purpose built here names the account; a new purpose is held to the escaping.)
    named = purpose in KNOWN_PURPOSES or account.name in text
    if named:
        assert account.name in text
        assert str(escape(account.name)) in parsed.html_source
        assert account.name in html
    if set(account.name) & set("&<>\"'"):
        assert account.name not in parsed.html_source
    # The seller: name, address, VAT ID, billing portal and support address.
    seller = catalog.seller
    for body in (text, html):
        for part in (seller.name, seller.address, seller.portal_url, seller.support_email):
            assert part and part in body, part
        assert LABELS[lang]["seller_vat"].format(vat_id=seller.vat_id) in body
    assert f'href="{seller.portal_url}"' in parsed.html_source
    assert f'href="mailto:{seller.support_email}"' in parsed.html_source
    # Amounts in the locale's format (the seller's address has no amounts in it).
    for body in (text, html, parsed.subject):
        tokens = AMOUNT_TOKEN[lang].findall(body)
        for token in tokens:
            assert AMOUNT[lang].match(token), (token, body)
        assert not SHORT_DATE[lang].search(body), SHORT_DATE[lang].search(body)
    # Dates are the account's: the preview moment is 23:30 UTC, the next day for every account.
    local = format_date(ANCHOR, account.timezone, lang)
    utc = format_date(ANCHOR, "UTC", lang)
    assert local != utc
    for body in (text, html, parsed.subject):
        assert utc not in body


def line_block(body: str, index: int, lines: list[InvoiceLine], lang: str) -> str:
    """The part of ``body`` about the ``index``-th (1-based) line: up to the next line, or to
    the totals (or what follows the lines) after the last one."""
    line = lines[index - 1]
    start = body.index(f"{index}. {line.product_name} \N{EN DASH} {line.plan_name}")
    if index < len(lines):
        following = lines[index]
        end = body.index(f"{index + 1}. {following.product_name} \N{EN DASH}", start)
    else:
        ends = [body.find(marker, start) for marker in LABELS[lang]["after_lines"]]
        end = min(found for found in ends if found > 0)
    return body[start:end]


def check_line(block: str, line: InvoiceLine, ctx: EmailContext, catalog: Catalog) -> None:
    """One invoice line: product, plan, seats, cycle, unit price, amount, credit, periods."""
    lang, tz = ctx.locale, ctx.timezone
    words = LABELS[lang]
    currency = ctx.invoice.currency if ctx.invoice else "EUR"

    def money(amount: Decimal) -> str:
        return format_money(amount, currency, lang)

    def date(dt: datetime) -> str:
        return format_date(dt, tz, lang)

    seats_word = words["seat"] if line.seats == 1 else words["seats"]
    if line.kind == LineKind.TRIAL:
        assert f"{line.seats} {seats_word}" in block
        assert format_datetime(line.period_end, tz, lang, width="long") in block
        assert not AMOUNT_TOKEN[lang].search(block), block  # a trial line has no price
        assert words["period"] not in block
        return
    assert line.billing_cycle is not None
    assert words[line.billing_cycle.value] in block
    assert money(line.unit_price) in block
    assert money(line.amount) in block
    assert f"{words['period']} {date(line.period_start)} \N{EN DASH} {date(line.period_end)}" in (
        block
    )
    assert f"{words['next']} {date(line.period_end)}" in block
    if line.kind == LineKind.CHANGE:
        previous = line.previous
        assert previous is not None
        # Previous -> new seats and plan, and the seats to assign; never the new count alone.
        assert f"{previous.seats} \N{RIGHTWARDS ARROW} {line.seats} {seats_word}" in block
        if line.new_seats:
            assert words["to_assign"].format(n=line.new_seats) in block
        old_plan = catalog.products[line.product].plans[previous.plan].name
        if previous.plan != line.plan:
            assert f"{old_plan} \N{RIGHTWARDS ARROW} {line.plan_name}" in block
        # The credit: signed, and tied to the subscription and the period it credits.
        signed = format_signed_credit(line.credit, currency, lang)
        assert line.credit > 0 and signed.startswith("\N{MINUS SIGN}")
        assert signed in block
        assert f"{line.product_name} {old_plan}" in block
        assert words["from"].format(date=date(line.period_start)) in block
        assert words["credited"].format(date=date(previous.current_period_end)) in block
    else:
        assert f"{line.seats} {seats_word}" in block
        assert "\N{RIGHTWARDS ARROW}" not in block
        assert line.credit == 0
        assert "\N{MINUS SIGN}" not in block


def check_confirmation(parsed: Parsed, ctx: EmailContext, catalog: Catalog) -> None:
    invoice = ctx.invoice
    assert invoice is not None
    lang = ctx.locale
    words = LABELS[lang]

    def money(amount: Decimal) -> str:
        return format_money(amount, invoice.currency, lang)

    paid = [line for line in invoice.lines if line.kind != LineKind.TRIAL]
    for body in parsed.bodies:
        for index, line in enumerate(invoice.lines, start=1):
            check_line(line_block(body, index, invoice.lines, lang), line, ctx, catalog)
        assert ctx.order_id in body
        if ctx.seats_to_assign > 1:
            assert words["waiting"].format(n=ctx.seats_to_assign) in body
            assert f"{catalog.seller.portal_url}/seats" in body
        if not paid:  # a free trial alone: the trial, not billing
            for word in BILLING_WORDS[lang]:
                assert word not in body, word
            assert words["net"] + " " not in body
            continue
        assert invoice.number is not None and invoice.number in body
        assert words["invoice"] in body
        assert f"{words['net']}: {money(invoice.net)}" in body or (
            f"{words['net']} {money(invoice.net)}" in body
        )
        assert money(invoice.total) in body
        assert words["total"] in body
        if invoice.tax_treatment == TaxTreatment.REVERSE_CHARGE:
            assert words["reverse"] in body
            assert invoice.customer_vat_id and invoice.customer_vat_id in body
            assert invoice.seller_vat_id and invoice.seller_vat_id in body
            assert format_percent(Decimal("0.19"), lang) not in body
        else:
            assert words["reverse"] not in body
            rate = format_percent(invoice.vat_rate, lang)
            assert f"{words['vat']} {rate} ({invoice.vat_country})" in body
            assert money(invoice.vat) in body
        if ctx.paid_by_invoice:
            assert ctx.due_date is not None
            assert format_date(ctx.due_date, ctx.timezone, lang) in body
            assert "••••" not in body
        else:
            label = card_label(ctx.card)
            assert label == "Visa •••• 4242"
            assert label in body
    assert f'href="{catalog.seller.portal_url}/seats"' in parsed.html_source


def check_trial(parsed: Parsed, ctx: EmailContext) -> None:
    """A trial e-mail speaks of the trial, and writes every date as the trial's end moment."""
    lang = ctx.locale
    assert ctx.trial_end is not None and ctx.product_name
    moment = format_datetime(ctx.trial_end, ctx.timezone, lang, width="long")
    text, html = parsed.bodies
    for body in (text, html, parsed.subject):
        for word in BILLING_WORDS[lang]:
            assert word not in body, word
        for found in long_dates(body, lang):
            # Each date is the trial's end, with its time and zone: one format in all three.
            assert moment.startswith(found), (found, moment)
            assert moment in body
    for body in (text, html):
        assert moment in body
        assert ctx.product_name in body
    if ctx.purpose == EmailPurpose.TRIAL_REMINDER:
        assert moment in parsed.subject


def check_failure(parsed: Parsed, ctx: EmailContext) -> None:
    """Rejection and compensation: the fixed, localized explanation for the reason code."""
    explanations = {
        ("de", "approval_rejected"): "Ihr Ansprechpartner bei Kestrel Cloud hat die Bestellung"
        " nicht freigegeben.",
        ("en", "approval_rejected"): "Your Kestrel Cloud account manager did not approve the"
        " order.",
        ("de", "operator_compensated"): "Unser Team hat die Bestellung geprüft und storniert.",
        ("en", "operator_compensated"): "Our team reviewed the order and cancelled it.",
    }
    expected = explanations.get((ctx.locale, ctx.reason or ""))
    for body in parsed.bodies:
        if expected:
            assert expected in body
        assert ctx.message is not None and ctx.message not in body
        if ctx.credit_note is not None:
            assert ctx.credit_note.number in body
            assert ctx.credit_note.invoice_number in body
            assert format_money(ctx.credit_note.amount, ctx.credit_note.currency, ctx.locale) in (
                body
            )
        if ctx.refund is not None:
            assert format_money(ctx.refund.amount, ctx.refund.currency, ctx.locale) in body


# --- the previews -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def preview_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m demo.previews --out <tmp>``, run as ``make emails`` runs it."""
    out = tmp_path_factory.mktemp("previews")
    subprocess.run(
        [sys.executable, "-m", "demo.previews", "--out", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def _context(preview: Preview, catalog: Catalog) -> EmailContext:
    from checkout.mail import email_context  # noqa: PLC0415 - kept beside its one use

    return email_context(
        preview.email,
        preview.account,
        product_name=preview.product_name,
        due_date=preview.due_date,
        catalog=catalog,
    )


def _all_previews() -> Iterator[Preview]:
    yield from previews(load_catalog())


PREVIEWS = {f"{p.name}.{p.locale}": p for p in _all_previews()}


def test_previews_cover_every_purpose_with_templates_in_every_locale(preview_dir: Path) -> None:
    """`make emails` writes an .eml and an .html file for each purpose that has templates
    (found in templates/email, so a new purpose appears by itself), in de and en, and the
    confirmation's variants: a cart with a change and a new line, reverse charge, a trial alone,
    a corporate order paid by invoice."""
    names = {path.name for path in preview_dir.iterdir()}
    purposes = template_purposes()
    assert {p.value for p in EmailPurpose} <= set(purposes)
    for purpose in purposes:
        for locale in ("de", "en"):
            assert f"{purpose}.{locale}.eml" in names
            assert f"{purpose}.{locale}.html" in names
    for variant in ("reverse-charge", "trial", "invoiced"):
        assert f"confirmation-{variant}.de.eml" in names
    assert names == {f"{key}.{ext}" for key in PREVIEWS for ext in ("eml", "html")}
    kinds = {
        line.kind
        for line in PREVIEWS["confirmation.de"].email.invoice.lines  # type: ignore[union-attr]
    }
    assert kinds == {LineKind.NEW, LineKind.CHANGE, LineKind.TRIAL}


@pytest.mark.parametrize("key", sorted(PREVIEWS))
def test_every_preview_passes_the_content_rules(
    key: str, preview_dir: Path, catalog: Catalog
) -> None:
    """Each previewed e-mail, parsed back from its .eml file, passes the content rules of its
    purpose (docs/emails.md), and its .html file is its HTML part."""
    preview = PREVIEWS[key]
    parsed = parse((preview_dir / f"{key}.eml").read_bytes())
    html_file = (preview_dir / f"{key}.html").read_text(encoding="utf-8")
    assert html_file == parsed.html_source
    ctx = _context(preview, catalog)
    check_common(parsed, preview.account, ctx.locale, catalog, ctx.purpose.value)
    if ctx.purpose == EmailPurpose.CONFIRMATION:
        check_confirmation(parsed, ctx, catalog)
    elif ctx.purpose.value.startswith("trial_"):
        check_trial(parsed, ctx)
    else:
        check_failure(parsed, ctx)


def test_trial_emails_write_the_end_the_same_way() -> None:
    """Welcome, reminder and expiry name the trial's end in one format (long date, time, zone,
    in the account's time zone), in both languages."""
    catalog = load_catalog()
    for locale, moment in (
        ("de", "27. Dezember 2026, 00:30 MEZ"),
        ("en", "December 27, 2026, 1:30 AM UTC+2"),
    ):
        for purpose in ("trial_welcome", "trial_reminder", "trial_expired"):
            parsed = parse(_compose(PREVIEWS[f"{purpose}.{locale}"], catalog).as_bytes())
            assert moment in flat(parsed.text), (purpose, locale)
            assert moment in parsed.html, (purpose, locale)


def test_operator_and_approver_words_never_reach_the_customer() -> None:
    """The previews carry an operator's and an approver's reason; the rejection and the
    compensation show the fixed explanation of the reason code instead."""
    catalog = load_catalog()
    assert PREVIEWS["compensation.de"].email.message == OPERATOR_REASON
    assert APPROVER_REASON in (PREVIEWS["rejection.en"].email.message or "")
    for key in ("compensation.de", "compensation.en", "rejection.de", "rejection.en"):
        raw = _compose(PREVIEWS[key], catalog).as_bytes()
        parsed = parse(raw)
        for body in (parsed.text, parsed.html_source, parsed.subject):
            assert "PREVIEW-INTERNAL" not in body
            assert "Jens" not in body and "budget frozen" not in body
        assert b"PREVIEW-INTERNAL" not in raw


def _compose(preview: Preview, catalog: Catalog) -> EmailMessage:
    return compose_email(
        _context(preview, catalog), to=preview.account.billing_email, sender=SENDER, date=ANCHOR
    )


# --- rules on hand-made orders ------------------------------------------------------------------


def _change_invoice(credit: str = "739.89") -> Invoice:
    # Five annual seats of Remote Support Standard paid from 1 June 2026.
    line = new_line(
        plan="standard",
        seats=8,
        kind=LineKind.CHANGE,
        amount=Decimal("2320.00"),
        credit=Decimal(credit),
        new_seats=3,
        plan_name="Standard",
        previous=paid_subscription(datetime(2026, 6, 1, tzinfo=UTC)),
    )
    net = line.amount - line.credit
    vat = (net * Decimal("0.19")).quantize(Decimal("0.01"))
    return standard_invoice([line], number="KC-2026-000042", net=net, vat=vat, total=net + vat)


def test_a_seat_increase_reads_previous_to_new_with_a_signed_dated_credit() -> None:
    """5 -> 8 seats on the same plan: "5 → 8 Sitze (+3 neu zuzuweisen)", the plan unchanged,
    the credit as minus 739,89 € for the unused part of Remote Support Standard until
    1 June 2027."""
    catalog = load_catalog()
    for lang, expected in (
        (
            "de",
            (
                "Änderung: 5 → 8 Sitze (+3 neu zuzuweisen)",
                "Abotarif: Standard (unverändert)",
                (
                    "Gutschrift: \u2212739,89 € für den nicht genutzten Teil Ihres bisherigen"
                    " Abonnements (Remote Support Standard, 5 Sitze) vom 26. November 2026 bis"
                    " 1. Juni 2027"
                ),
            ),
        ),
        (
            "en",
            (
                "Change: 5 → 8 seats (+3 to assign)",
                "Plan: Standard (unchanged)",
                (
                    "Credit: \u2212€739.89 for the unused part of your previous subscription"
                    " (Remote Support Standard, 5 seats) from November 26, 2026 until June 1,"
                    " 2027"
                ),
            ),
        ),
    ):
        ctx = EmailContext(
            purpose=EmailPurpose.CONFIRMATION,
            locale=lang,
            timezone="Europe/Berlin",
            account_name="Muster GmbH",
            order_id="ord-1001",
            invoice=_change_invoice(),
            catalog=catalog,
        )
        rendered = render_email(ctx)
        text = flat(rendered.text)
        for phrase in expected:
            assert phrase in text, phrase
        visible = _Visible()
        visible.feed(rendered.html)
        html = flat(" ".join(visible.parts))
        assert "5 → 8" in html and "\u2212" in html
        # Never the new count alone: the previous count is always beside it.
        assert text.count("5 → 8") == 1


def test_customer_text_cannot_add_headers_and_is_escaped() -> None:
    """An account name with CR/LF, a Bcc line and markup ends up escaped in the HTML part,
    verbatim in the text part, and in no header of the parsed message."""
    name = 'Evil "Co" <script>x</script>\r\nBcc: everyone@example.com & Sons'
    acc = account("acc-x", name=name, billing_email="billing@evil.example")
    request = SendEmailInput(
        order_id="ord-1001",
        account_id="acc-x",
        purpose=EmailPurpose.CONFIRMATION,
        invoice=_change_invoice(),
    )
    from checkout.mail import email_context  # noqa: PLC0415

    raw = compose_email(
        email_context(request, acc, catalog=load_catalog()),
        to=acc.billing_email,
        sender=SENDER,
    ).as_bytes()
    parsed = parse(raw)
    assert parsed.message["Bcc"] is None
    assert b"\nBcc:" not in raw.split(b"\n\n", 1)[0]
    assert "<script>" not in parsed.html_source
    assert "&lt;script&gt;x&lt;/script&gt;" in parsed.html_source
    assert "&amp; Sons" in parsed.html_source
    assert "<script>x</script>" in parsed.text
