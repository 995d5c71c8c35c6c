"""Careful echoes: hostile text (CR/LF, NUL, terminal escapes, bidi overrides, SQL and HTML
fragments, very long strings) sent in any field of an order or an account file never comes back
raw in a message, a detail, a log line, a command's output or an e-mail header: it is quoted,
shortened and escaped (checkout/echo.py)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import unicodedata
import uuid
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.testing import WorkflowEnvironment

from checkout.catalog import load_catalog
from checkout.echo import escape
from checkout.echo import quote
from checkout.echo import token
from checkout.errors import CheckoutRejected
from checkout.mail import EmailContext
from checkout.mail import compose_email
from checkout.models import EmailPurpose
from checkout.models import ResultStatus
from checkout.order_input import parse_order
from checkout.quoting import quote as quote_order
from checkout.store import Store
from checkout.summary import order_summary
from checkout.vies import VatVerifier
from tests.helpers import Cli
from tests.helpers import account
from tests.helpers import buy
from tests.helpers import checkout_worker
from tests.helpers import order
from tests.helpers import result_of
from tests.helpers import seeded_account
from tests.helpers import start_order
from tests.helpers import state_of
from tests.helpers.workers import MakeSettings

ANCHOR = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
CATALOG = load_catalog()
HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "MIME-Version",
    "Content-Type", "Content-Language",
)  # fmt: skip
SENDER = "Kestrel Billing <no-reply@billing.kestrel.example>"

#: Pieces hostile input is made of: line breaks that forge a log line, NUL, a terminal escape,
#: every bidi embedding, override and isolate, line separators, SQL and HTML.
FRAGMENTS = [
    "\r\n", "\n", "\r", "\x00", "\x1b[31m", "\x7f", "\u0085", "\u2028", "\u2029", "\ufeff",
    "\u200b", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)),
    "\nINFO forged log line", "'; DROP TABLE accounts; --", '" OR "1"="1', "\\",
    "<script>alert(1)</script>", "<b>bold</b>", "acc-42", "DE136695976", "A" * 300,
]  # fmt: skip
hostile = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), min_size=1, max_size=6).map(
    "".join
)

ORDER_FIELDS = [
    "order_id", "account_id", "payment_method", "vat_id", "items.product", "items.plan",
    "items.billing_cycle", "items.mode", "items.seats", "extra.value", "extra.key",
]  # fmt: skip
ACCOUNT_FIELDS = [
    "account_id", "name", "billing_email", "country", "locale", "currency", "timezone",
    "corporate", "payment_customer_id", "subscriptions.product", "subscriptions.plan",
    "subscriptions.status", "subscriptions.current_period_start", "extra.key",
]  # fmt: skip


def fuzz_fields(fields: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the test on 40 hostile values, each put in one of ``fields`` (the test's ``field`` and
    ``value``); its function-scoped fixtures serve every example, so it starts each with
    :func:`debug_log`."""
    fuzz = settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    return lambda test: fuzz(given(field=st.sampled_from(fields), value=hostile)(test))


def debug_log(caplog: pytest.LogCaptureFixture) -> None:
    """Start an example of a fuzzed test with an empty log that keeps DEBUG records."""
    caplog.clear()
    caplog.set_level(logging.DEBUG)


def hidden(text: str, *, allow_newline: bool = False) -> str | None:
    """The first control, bidi or other invisible character of ``text``, if any."""
    for char in text:
        if char == "\n" and allow_newline:
            continue
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}:
            return char
    return None


def assert_careful(value: str, text: str, *, allow_newline: bool = False) -> None:
    """``text`` repeats ``value`` only carefully: no invisible character at all (a newline only
    where the text is several lines of its own), and a value that holds one, or is long, never
    verbatim."""
    found = hidden(text, allow_newline=allow_newline)
    assert found is None, f"{found!r} in {text!r}"
    if hidden(value, allow_newline=allow_newline) is not None or len(value) > 64:
        assert value not in text, f"{value!r} echoed raw in {text!r}"


#: The loggers of this project and of the Temporal SDK (a database driver's debug log of its
#: query parameters is not an echo of ours).
OUR_LOGGERS = ("checkout", "activities", "workflows", "cli", "worker", "temporalio")


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What our loggers and Temporal's wrote, message and exception text."""
    return [
        caplog_text
        for record in caplog.records
        if record.name.split(".")[0] in OUR_LOGGERS
        for caplog_text in (record.getMessage(), record.exc_text or "")
    ]


def one_line(err: str) -> str:
    """A command's stderr: nothing, or one line."""
    assert err.count("\n") == (1 if err else 0), repr(err)
    return err.removesuffix("\n")


def _set(raw: dict[str, Any], field: str, value: str) -> dict[str, Any]:
    where, _, name = field.partition(".")
    if where == "extra":
        raw["note" if name == "value" else value] = value
    elif name:
        raw[where][0][name] = value
    else:
        raw[where] = value
    return raw


# --- the pure function -------------------------------------------------------------------------


def test_quote_escapes_shortens_and_quotes() -> None:
    """quote() puts the value in double quotes, escapes CR/LF, NUL, bidi controls, quotes and
    backslashes, and keeps 64 characters with an ellipsis; token() leaves a plain id bare."""
    assert quote("acc-42\r\nINFO x") == '"acc-42\\r\\nINFO x"'
    assert quote("a\x00b\u202ec\u2066d") == '"a\\x00b\\u202ec\\u2066d"'
    assert quote('say "hi" \\') == '"say \\"hi\\" \\\\"'
    assert quote("A" * 100) == '"' + "A" * 64 + '…"'
    assert quote("\n" * 100, 10) == '"' + "\\n" * 5 + '…"'
    assert escape('no "quotes" added\n') == 'no "quotes" added\\n'
    assert (token("acc-42"), token("acc 42"), token("acc\n")) == ("acc-42", '"acc 42"', '"acc\\n"')


@given(value=hostile)
def test_quote_of_anything_is_one_safe_bounded_line(value: str) -> None:
    """Whatever the value, its quote is one line without invisible characters, at most the
    limit plus quotes and ellipsis, and never the value itself when that held one."""
    quoted = quote(value)
    assert_careful(value, quoted)
    assert len(quoted) <= 64 + 3


# --- orders ------------------------------------------------------------------------------------


@pytest.fixture
async def offline(offline_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The command on a SQLite store holding ``acc-de``, Temporal out of reach, VAT IDs checked
    offline."""
    monkeypatch.setenv("CHECKOUT_VAT_VERIFICATION", "offline")
    await offline_cli.store.import_accounts([account("acc-de")])
    return offline_cli


@fuzz_fields(ORDER_FIELDS)
async def test_hostile_order_fields_are_echoed_carefully(
    offline: Cli, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    """A hostile value in any field of an order comes back carefully wherever it is repeated:
    the rejection message of the order parser (dict and raw JSON) and of the validate-and-price
    path the workflow and `checkout quote` share, the summary and details line, the log, and
    `checkout quote`'s one-line error."""
    debug_log(caplog)
    raw = _set(order("acc-de", buy()), field, value)
    texts = [order_summary(raw)]
    for sent in (raw, json.dumps(raw).encode()):
        try:
            parsed = parse_order(sent)
        except CheckoutRejected as rejected:
            texts.append(rejected.message)
            continue
        try:
            await quote_order(parsed, offline.store, CATALOG, VatVerifier("offline"), ANCHOR)
        except CheckoutRejected as rejected:
            texts.append(rejected.message)
    code, out, err = await offline("quote", offline.file(json.dumps(raw)))
    assert code == (0 if not err else 1)
    texts += [one_line(err), *logged(caplog)]
    for text in texts:
        assert_careful(value, text)
        assert "input_value" not in text  # pydantic's own str() of an error repeats the input
    assert_careful(value, out, allow_newline=True)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("account_id", "acc-42\x00", "account_id: String should match pattern"),
        ("account_id", "acc 42", "account_id: String should match pattern"),
        ("payment_method", "pm_card_visa\u202e", "payment_method: Value error, must not hold"),
        ("vat_id", "DE136695976\r\n", "vat_id: Value error, must not hold control or bidi"),
    ],
)
def test_orders_refuse_ids_and_tokens_with_hidden_characters(
    field: str, value: str, expected: str
) -> None:
    """An account_id that is not an account id, and a payment token or VAT ID with a control or
    bidi character, end invalid_order naming the field, before any store lookup (PostgreSQL
    cannot even compare a NUL)."""
    with pytest.raises(CheckoutRejected) as info:
        parse_order({**order("acc-de"), field: value})
    assert (info.value.reason.value, info.value.message[: len(expected)]) == (
        "invalid_order",
        expected,
    )
    assert_careful(value, info.value.message)


# --- e-mail headers ----------------------------------------------------------------------------


@given(field=st.sampled_from(["account_name", "reason", "message", "product_name"]), value=hostile)
def test_hostile_text_never_reaches_an_email_header(field: str, value: str) -> None:
    """Customer text in an e-mail (name, reason, message, product) adds no header and puts no
    control or bidi character into one: the message parses back to the same headers."""
    context = EmailContext.model_validate(
        {"purpose": EmailPurpose.REJECTION, "order_id": "ord-1", "account_name": "X"}
        | {"reason": "card_declined", "message": "declined", field: value}
    )
    message = compose_email(context, to="billing@muster.example", sender=SENDER)
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(bytes(message))
    assert sorted(parsed.keys()) == sorted(message.keys())
    assert sorted(parsed.keys()) == sorted(HEADERS)
    for name, header in parsed.items():
        assert_careful(value, f"{name}: {header}")


# --- account files -----------------------------------------------------------------------------


def _account_raw(account_id: str, field: str, value: str) -> dict[str, Any]:
    raw: dict[str, Any] = account(account_id).model_dump(mode="json")
    raw["subscriptions"] = [
        {
            "product": "remote-support", "plan": "standard", "seats": 5,
            "billing_cycle": "annual", "status": "active",
            "current_period_start": "2026-06-01T00:00:00Z",
            "current_period_end": "2027-06-01T00:00:00Z", "period_amount": "1450.00",
        }
    ]  # fmt: skip
    where, _, name = field.partition(".")
    if where == "extra":
        raw[value] = "x"
    elif where == "subscriptions":
        raw["subscriptions"][0][name] = value
    else:
        raw[where] = value
    return raw


@fuzz_fields(ACCOUNT_FIELDS)
async def test_hostile_account_fields_are_refused_carefully(
    offline: Cli, caplog: pytest.LogCaptureFixture, field: str, value: str
) -> None:
    """`accounts import` of a file with a hostile value in any field: when the value holds a
    control or bidi character the import is refused with one careful line and nothing is stored;
    whatever the outcome, the output and the log repeat the value only carefully."""
    debug_log(caplog)
    account_id = f"acc-{uuid.uuid4().hex[:8]}"
    raw = _account_raw(account_id, field, value)
    code, out, err = await offline("accounts", "import", offline.file(json.dumps([raw])))
    for text in (one_line(out), one_line(err), *logged(caplog)):
        assert_careful(value, text)
    if hidden(value) is not None:
        assert (code, out) == (1, "")
        assert err.startswith("checkout: ") and "account 1 (line 1), field " in err
        assert await offline.store.get_account(account_id) is None


# --- a real order on the dev server ------------------------------------------------------------

HOSTILE_ACCOUNT_ID = "acc-x\r\nINFO forged line\x00\u202eevil\u2066'; DROP TABLE x;--"
#: At most 32 characters, so it reaches the VAT check: SQL and HTML, nothing invisible.
SQL_VAT_ID = "DE1' OR 1=1;--<b>x</b>"
HOSTILE_VAT_ID = "DE1\r\nINFO forged\x00\u202e' OR 1=1"


@pytest.mark.e2e
async def test_a_hostile_order_on_the_dev_server_is_echoed_escaped(
    dev_env: WorkflowEnvironment,
    store: Store,
    make_settings: MakeSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Orders with a hostile account_id or vat_id, run by the real worker on either database,
    end rejected at once (an account id with CR/LF, NUL or bidi characters cannot name an account;
    PostgreSQL could not even look one up), with messages, status and current details that
    carry only the escaped form, as does the worker's log."""
    caplog.set_level(logging.DEBUG)
    acc = await seeded_account(store)
    settings = make_settings()
    cases = [
        (order(HOSTILE_ACCOUNT_ID), HOSTILE_ACCOUNT_ID, "invalid_order", "account_id: "),
        (
            order(acc.account_id, vat_id=HOSTILE_VAT_ID),
            HOSTILE_VAT_ID,
            "invalid_order",
            "vat_id: Value error, must not hold control or bidi characters (found \\r)",
        ),
        (
            order(acc.account_id, vat_id=SQL_VAT_ID),
            SQL_VAT_ID,
            "invalid_vat_id",
            f"vat_id: {quote(SQL_VAT_ID)} is not a valid VAT ID",
        ),
    ]
    async with checkout_worker(dev_env.client, settings, store):
        for raw, value, reason, message in cases:
            handle = await start_order(dev_env.client, settings, raw)
            result = await result_of(handle, within=30)
            state = await state_of(handle)
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            assert (result.status, result.reason) == (ResultStatus.REJECTED, reason)
            assert result.message is not None and result.message.startswith(message)
            assert state.last_error == f"{reason}: {result.message}"
            assert f"outcome: rejected ({reason}): {result.message}" in metadata.current_details
            for text in (result.message, state.last_error):
                assert_careful(value, text)
            assert_careful(value, metadata.current_details, allow_newline=True)
    texts = logged(caplog)
    # The worker's log was captured (the workflow logs each rejection by its code).
    assert any("order rejected: invalid_vat_id" in text for text in texts), texts
    for text in texts:
        for value in (HOSTILE_ACCOUNT_ID, HOSTILE_VAT_ID, SQL_VAT_ID):
            assert_careful(value, text, allow_newline=True)
