"""E-mail for the checkout: locale-aware formatting, rendering from ``templates/email/`` and
delivery over SMTP.

No Temporal imports: the send-email activity uses this module, and so can tests and tools.

- Formatting (:func:`format_money`, :func:`format_date`, :func:`format_datetime`,
  :func:`format_percent`) goes through Babel, but money is rounded by us first
  (``checkout.money``, ROUND_HALF_UP), so Babel never rounds anything.
- Templates are ``<purpose>.<locale>.{subject,txt,html}.j2``; only ``*.html.j2`` is autoescaped.
  Every variable must exist (``StrictUndefined``).
- Customer-provided text (the account name, a payment token, a message) only ever goes into
  bodies, never into a header; header values with CR/LF are refused.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import tzinfo
from decimal import Decimal
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import Protocol
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

import aiosmtplib
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from jinja2 import Environment
from jinja2 import FileSystemLoader
from jinja2 import StrictUndefined
from jinja2 import select_autoescape
from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import field_validator

from checkout.catalog import Catalog
from checkout.echo import quote
from checkout.models import Account
from checkout.models import CardDetails
from checkout.models import ChargeInfo
from checkout.models import CreditNote
from checkout.models import EmailPurpose
from checkout.models import Invoice
from checkout.models import LineKind
from checkout.models import SendEmailInput
from checkout.money import round_money

if TYPE_CHECKING:
    import ssl

    from checkout.config import Settings

__all__ = [
    "BRAND",
    "DEFAULT_TEMPLATES_DIR",
    "SUPPORTED_LOCALES",
    "EmailContext",
    "Mailer",
    "RenderedEmail",
    "SellerDetails",
    "SmtpMailer",
    "build_message",
    "card_label",
    "compose_email",
    "email_context",
    "format_date",
    "format_datetime",
    "format_money",
    "format_percent",
    "format_signed_credit",
    "message_id_for",
    "normalize_locale",
    "render_email",
    "sender_domain",
]

#: The product, as the e-mails name it.
BRAND = "Kestrel Cloud"

#: ``<repo>/templates/email``.
DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "email"

Locale = Literal["de", "en"]
SUPPORTED_LOCALES: tuple[Locale, ...] = ("de", "en")

#: Babel puts (narrow) no-break spaces between amount and symbol, or before a time's AM/PM.
#: The e-mails use plain spaces (``1.725,50 €``); the HTML keeps such cells from wrapping.
_BABEL_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " "})


# --- formatting ---------------------------------------------------------------------------------


def normalize_locale(locale: str | None) -> Locale:
    """``de``, ``de_DE``, ``de-AT`` (any case) give ``de``; everything else, ``en``."""
    if not locale:
        return "en"
    language = re.split(r"[_\-.@]", locale.strip(), maxsplit=1)[0].lower()
    return "de" if language == "de" else "en"


def format_money(amount: Decimal, currency: str, locale: str) -> str:
    """``1.725,50 €`` (de) or ``€1,725.50`` (en).

    The amount is rounded to the currency's minor unit by :func:`checkout.money.round_money`
    first (a no-op for the already rounded amounts of an invoice), so Babel's own rounding never
    applies. A currency we do not sell in is a ValueError, as everywhere else.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be a Decimal, got {type(amount).__name__}")
    currency = currency.upper()
    exact = round_money(amount, currency)
    text = babel_numbers.format_currency(exact, currency, locale=normalize_locale(locale))
    return text.translate(_BABEL_SPACES)


#: The minus sign of a credit: U+2212 MINUS SIGN, not the hyphen (``\u2212739,89 €``).
MINUS = "\u2212"


def format_signed_credit(amount: Decimal, currency: str, locale: str) -> str:
    """A credit as it reduces the invoice, after :data:`MINUS`: ``739,89 €`` (de) and
    ``€739.89`` (en) with the minus sign before them; a zero credit is ``0,00 €`` with no sign."""
    text = format_money(abs(amount), currency, locale)
    return text if amount == 0 else f"{MINUS}{text}"


def format_percent(rate: Decimal, locale: str) -> str:
    """A VAT rate given as a fraction: ``Decimal("0.19")`` is ``19 %`` (de), ``19%`` (en);
    ``0.255`` keeps its decimal (``25,5 %``)."""
    text = babel_numbers.format_percent(
        rate, locale=normalize_locale(locale), decimal_quantization=False
    )
    return text.translate(_BABEL_SPACES)


def _zone(timezone: str | None) -> tzinfo:
    if not timezone:
        return UTC
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # An account with a zone we do not know still gets its e-mail, with dates in UTC.
        return UTC


def _local(dt: datetime, timezone: str | None) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("datetime needs a time zone (the models keep them in UTC)")
    return dt.astimezone(_zone(timezone))


def format_date(
    dt: datetime,
    timezone: str,
    locale: str,
    width: Literal["short", "medium", "long", "full"] = "long",
) -> str:
    """The calendar date of ``dt`` in the account's time zone: ``26. November 2026`` (de),
    ``November 26, 2026`` (en). ``width`` is Babel's date format. Unknown time zones fall back
    to UTC."""
    local = _local(dt, timezone)
    return babel_dates.format_date(local.date(), width, locale=normalize_locale(locale))


def format_datetime(
    dt: datetime,
    timezone: str,
    locale: str,
    width: Literal["short", "medium", "long", "full"] = "medium",
) -> str:
    """Date, time and zone in the account's time zone: ``26.11.2026, 11:15 MEZ`` (de),
    ``Nov 26, 2026, 11:15 AM CET`` (en); ``width`` is the date's Babel format (the e-mails use
    ``long``: ``26. November 2026, 11:15 MEZ``, like their dates)."""
    lang = normalize_locale(locale)
    local = _local(dt, timezone)
    day = babel_dates.format_date(local.date(), width, locale=lang)
    time = babel_dates.format_time(local, "short", tzinfo=local.tzinfo, locale=lang)
    zone = _zone_name(babel_dates.format_datetime(local, "z", tzinfo=local.tzinfo, locale=lang))
    return f"{day}, {time} {zone}".translate(_BABEL_SPACES)


def _zone_name(babel_zone: str) -> str:
    """A zone without a name in the locale comes from Babel as a bare offset (``+0200``); the
    e-mails write it ``UTC+2`` (``UTC+5:30``, ``UTC``), which reads as a zone."""
    match = re.fullmatch(r"([+-])(\d\d)(\d\d)", babel_zone)
    if match is None:
        return babel_zone
    sign, hours, minutes = match.groups()
    if hours == "00" and minutes == "00":
        return "UTC"
    offset = str(int(hours)) + (f":{minutes}" if minutes != "00" else "")
    return f"UTC{sign}{offset}"


_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express"}


def card_label(card: CardDetails | None) -> str | None:
    """``Visa •••• 4242``: the card as the gateway reported the charge. Never the payment token:
    a token says nothing to a customer, and a card number must never reach an e-mail."""
    if card is None:
        return None
    brand = _BRANDS.get(card.brand.lower(), card.brand.replace("_", " ").title())
    return f"{brand} •••• {card.last4}"


# --- message ids --------------------------------------------------------------------------------

_ID_PART = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$")
_DOMAIN = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)


def sender_domain(mail_from: str) -> str:
    """The domain of a From address: ``"Billing <no-reply@billing.kestrel.example>"`` gives
    ``billing.kestrel.example``."""
    _reject_line_breaks("From", mail_from)
    _, address = email.utils.parseaddr(mail_from)
    _, at, domain = address.rpartition("@")
    domain = domain.lower()
    if not at or not _DOMAIN.match(domain):
        raise ValueError(f"no usable domain in sender address {mail_from!r}")
    return domain


def message_id_for(order_id: str, purpose: str, domain: str) -> str:
    """A deterministic Message-ID, one per purpose and order:
    ``<confirmation.ord-1001@billing.kestrel.example>``. Retries of the same e-mail carry the
    same id, so the record of what was sent (and receivers) can tell them apart from news."""
    purpose = str(purpose)  # an EmailPurpose is its value
    if len(order_id) > 128 or not _ID_PART.match(order_id):
        raise ValueError(f"order id {order_id!r} cannot be part of a Message-ID")
    if not _ID_PART.match(purpose):
        raise ValueError(f"purpose {purpose!r} cannot be part of a Message-ID")
    domain = domain.lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"domain {domain!r} cannot be part of a Message-ID")
    return f"<{purpose}.{order_id}@{domain}>"


# --- context and rendering ----------------------------------------------------------------------


class EmailContext(BaseModel):
    """Everything a template may show. ``locale`` is normalised to ``de`` or ``en``."""

    model_config = ConfigDict(frozen=True)

    purpose: EmailPurpose
    locale: Locale = "en"
    timezone: str = "UTC"
    account_name: str
    order_id: str
    invoice: Invoice | None = None
    #: The payment token the order was paid with (shown with its card brand when known).
    payment_method: str | None = None
    #: Corporate orders: an invoice is issued instead of a card charge.
    paid_by_invoice: bool = False
    due_date: datetime | None = None
    refund: ChargeInfo | None = None
    #: A machine reason code (``card_declined`` ...) and a message for people.
    reason: str | None = None
    message: str | None = None
    #: Trial e-mails: the product's display name and the trial's end.
    product_name: str | None = None
    trial_end: datetime | None = None
    #: Compensation e-mails: the credit note that cancels the order's invoice.
    credit_note: CreditNote | None = None
    #: Confirmations: the card as the gateway reported the charge.
    card: CardDetails | None = None
    #: The catalog the order was priced with: the seller's details (``[seller]``: name, address,
    #: VAT ID, billing portal, support address) and the display names of plans a change left.
    #: Without it the e-mails show what the invoice carries (seller name and VAT ID).
    catalog: Catalog | None = None

    @field_validator("locale", mode="before")
    @classmethod
    def _normalize_locale(cls, value: Any) -> Locale:
        return normalize_locale(value if isinstance(value, str) else None)

    @property
    def seats_to_assign(self) -> int:
        """New seats of this order that still have to be assigned to users."""
        if self.invoice is None:
            return 0
        return sum(line.new_seats for line in self.invoice.lines)


#: What the context takes from the send-email activity's input as it is there; ``due_date`` is
#: the caller's to give.
_AS_REQUESTED = (set(EmailContext.model_fields) & set(SendEmailInput.model_fields)) - {"due_date"}


def email_context(
    request: SendEmailInput,
    account: Account,
    *,
    product_name: str | None = None,
    due_date: datetime | None = None,
    catalog: Catalog | None = None,
) -> EmailContext:
    """The context for a send-email activity's input and the account it goes to (and the
    catalog, for the seller's details)."""
    return EmailContext(
        **{name: value for name, value in request if name in _AS_REQUESTED},
        locale=account.locale,
        timezone=account.timezone,
        account_name=account.name,
        due_date=due_date,
        product_name=product_name or request.product,
        catalog=catalog,
    )


#: The seat-assignment page of the billing portal, relative to ``[seller] portal_url``.
SEATS_PATH = "/seats"


@dataclass(frozen=True)
class SellerDetails:
    """Who sends the e-mail and issues the invoice, as the templates show it: every field may
    be missing (the catalog's ``[seller]`` leaves out what it does not give)."""

    name: str | None = None
    address: str | None = None
    vat_id: str | None = None
    portal_url: str | None = None
    support_email: str | None = None

    @property
    def seats_url(self) -> str | None:
        """Where seats are assigned to users: ``<portal_url>/seats``."""
        return self.portal_url.rstrip("/") + SEATS_PATH if self.portal_url else None


def _seller_details(ctx: EmailContext) -> SellerDetails:
    """The seller as the invoice names it (who invoiced the order), with the rest from the
    catalog; without a catalog, what the invoice carries."""
    invoice = ctx.invoice
    name = invoice.seller_name if invoice is not None else None
    vat_id = invoice.seller_vat_id if invoice is not None else None
    if ctx.catalog is None:
        return SellerDetails(name=name, vat_id=vat_id)
    seller = ctx.catalog.seller
    return SellerDetails(
        name=name or seller.name,
        address=seller.address,
        vat_id=vat_id or seller.vat_id,
        portal_url=seller.portal_url,
        support_email=seller.support_email,
    )


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: Locale = "en"


@lru_cache(maxsize=8)
def _environment(templates_dir: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir)),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2", "html"), default_for_string=False, default=False
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )


def _one_line(text: str) -> str:
    """Subjects are a single line: every run of whitespace (CR/LF included) becomes a space and
    other control characters go."""
    text = "".join(ch for ch in text if ch.isprintable() or ch.isspace())
    return " ".join(text.split())


def render_email(ctx: EmailContext, templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> RenderedEmail:
    """Subject, plain text and HTML for ``ctx`` from ``<purpose>.<locale>.*.j2``."""
    env = _environment(Path(templates_dir).resolve())
    lang = ctx.locale
    currency = ctx.invoice.currency if ctx.invoice is not None else None

    def money(amount: Decimal, in_currency: str | None = None) -> str:
        code = in_currency or currency
        if code is None:
            raise ValueError("money() needs a currency when the e-mail has no invoice")
        return format_money(amount, code, lang)

    def date(dt: datetime) -> str:
        return format_date(dt, ctx.timezone, lang)

    def date_time(dt: datetime) -> str:
        return format_datetime(dt, ctx.timezone, lang)

    def moment(dt: datetime) -> str:
        """A point in time (a trial's end): ``10. Dezember 2026, 11:15 MEZ``."""
        return format_datetime(dt, ctx.timezone, lang, width="long")

    def percent(rate: Decimal) -> str:
        return format_percent(rate, lang)

    def credit(amount: Decimal) -> str:
        if currency is None:
            raise ValueError("credit() needs the invoice's currency")
        return format_signed_credit(amount, currency, lang)

    def plan_name(product_code: str, plan_code: str) -> str:
        """A plan's display name from the catalog (``premium`` is ``Premium``)."""
        product_entry = ctx.catalog.products.get(product_code) if ctx.catalog else None
        plan_entry = product_entry.plans.get(plan_code) if product_entry else None
        return plan_entry.name if plan_entry else plan_code.replace("-", " ").title()

    trial_lines = (
        [line for line in ctx.invoice.lines if line.kind == LineKind.TRIAL] if ctx.invoice else []
    )
    trial_end = ctx.trial_end or (trial_lines[0].period_end if trial_lines else None)
    product = ctx.product_name or (
        (trial_lines[0].product_name or trial_lines[0].product) if trial_lines else BRAND
    )
    variables: dict[str, Any] = {
        "ctx": ctx,
        "lang": lang,
        "brand": BRAND,
        "invoice": ctx.invoice,
        "seats_to_assign": ctx.seats_to_assign,
        "card_label": card_label(ctx.card),
        "product": product,
        "trial_lines": trial_lines,
        "trial_seats": sum(line.new_seats for line in trial_lines),
        "trial_end": trial_end,
        "money": money,
        "date": date,
        "datetime": date_time,
        "moment": moment,
        "percent": percent,
        "credit": credit,
        "plan_name": plan_name,
        "seller": _seller_details(ctx),
        "paid_lines": (
            [line for line in ctx.invoice.lines if line.kind != LineKind.TRIAL]
            if ctx.invoice
            else []
        ),
    }
    base = f"{ctx.purpose.value}.{lang}"
    subject = _one_line(env.get_template(f"{base}.subject.j2").render(variables))
    variables["subject"] = subject
    text = env.get_template(f"{base}.txt.j2").render(variables)
    html = env.get_template(f"{base}.html.j2").render(variables)
    return RenderedEmail(subject=subject, text=text, html=html, locale=lang)


# --- the message --------------------------------------------------------------------------------


def _reject_line_breaks(name: str, value: str) -> None:
    if any(ch in value for ch in "\r\n\x00\x0b\x0c\x85\u2028\u2029"):
        raise ValueError(f"{name} header may not contain line breaks")


def _single_address(name: str, value: str) -> str:
    _reject_line_breaks(name, value)
    addresses = email.utils.getaddresses([value])
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        raise ValueError(f"{name} must be exactly one e-mail address, got {quote(value)}")
    return value.strip()


_UNFOLDED_HEADERS = email.policy.default.clone(max_line_length=998)


def build_message(
    rendered: RenderedEmail,
    *,
    to: str,
    sender: str,
    message_id: str,
    date: datetime | None = None,
) -> EmailMessage:
    """A ``multipart/alternative`` message (text, then HTML; UTF-8, quoted-printable).

    ``to``, ``sender`` and ``message_id`` with CR/LF (or anything but one address) raise
    ValueError; the subject is reduced to one line. Nothing else reaches a header.
    """
    to = _single_address("To", to)
    sender = _single_address("From", sender)
    _reject_line_breaks("Message-ID", message_id)
    if not re.fullmatch(r"<[^<>\s@]+@[^<>\s@]+>", message_id):
        raise ValueError(f"Message-ID must look like <left@domain>, got {message_id!r}")

    message = EmailMessage(policy=email.policy.default)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = _one_line(rendered.subject)
    message["Date"] = email.utils.format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # After the body: set_content() clears every Content-* header set before it.
    message["Content-Language"] = rendered.locale
    # Headers go out unfolded (each well within 998 characters): the standard library's folding
    # of a non-ASCII subject can double a space when it splits the line (two spaces before a dash).
    # Switched only now: the body's quoted-printable lines were cut at 76 under the default.
    message.policy = _UNFOLDED_HEADERS
    return message


def compose_email(
    ctx: EmailContext,
    *,
    to: str,
    sender: str,
    templates_dir: Path = DEFAULT_TEMPLATES_DIR,
    date: datetime | None = None,
) -> EmailMessage:
    """Render ``ctx`` and build the message, with the Message-ID from :func:`message_id_for`
    (its domain taken from ``sender``)."""
    message_id = message_id_for(ctx.order_id, ctx.purpose.value, sender_domain(sender))
    return build_message(
        render_email(ctx, templates_dir), to=to, sender=sender, message_id=message_id, date=date
    )


# --- delivery -----------------------------------------------------------------------------------


class Mailer(Protocol):
    """Anything that delivers a message (SmtpMailer; a recorder in workflow tests)."""

    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Sends through the SMTP server of :class:`checkout.config.Settings`.

    ``smtp_tls``: ``none`` (plain, no STARTTLS even if offered), ``starttls`` (required) or
    ``tls`` (implicit TLS, usually port 465). Certificates are verified; ``tls_context`` replaces
    the default context (tests with a self-signed CA). Errors propagate: the caller retries.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.username = settings.smtp_username
        self._password = settings.smtp_password
        self.tls: Literal["none", "starttls", "tls"] = settings.smtp_tls
        self.tls_context = tls_context
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self.host!r}, port={self.port}, tls={self.tls!r})"

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            use_tls=self.tls == "tls",
            start_tls=self.tls == "starttls",
            tls_context=self.tls_context if self.tls != "none" else None,
            timeout=self.timeout,
        )
