"""`checkout emails list` and `checkout emails resend`, run as the command (in this process, with
the environment a person would set) against a real store (SQLite and PostgreSQL) and a real SMTP
server; the outbox is filled by the real send-email activity."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from activities.checkout import CheckoutActivities
from checkout.config import Settings
from checkout.models import EmailPurpose
from checkout.models import SendEmailInput
from checkout.store import Store
from devtools import SmtpSink
from tests.helpers import account
from tests.helpers import run_checkout
from tests.helpers import settings_for
from tests.helpers import store_url
from tests.helpers import text_of
from worker import build_activities

ROW_KEYS = {
    "order_id",
    "purpose",
    "status",
    "message_id",
    "to",
    "attempts",
    "last_error",
    "sent_at",
}


@dataclass
class Outbox:
    """The command, and the activity that fills the outbox as a checkout's worker would."""

    capsys: pytest.CaptureFixture[str]
    store: Store
    sink: SmtpSink
    activities: CheckoutActivities

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        """Run `checkout …`: (exit status, stdout, stderr)."""
        return await run_checkout(self.capsys, *argv)

    async def send(self, order_id: str, account_id: str, purpose: EmailPurpose) -> None:
        """The send-email activity, once; an SMTP failure leaves the e-mail pending."""
        request = SendEmailInput(order_id=order_id, account_id=account_id, purpose=purpose)
        with contextlib.suppress(OSError):  # the SMTP client's errors: SMTPConnectError, ...
            await ActivityEnvironment().run(self.activities.send_email, request)

    async def json(self, *argv: str) -> list[dict[str, Any]]:
        code, out, err = await self("emails", "list", "--json", *argv)
        assert (code, err) == (0, ""), err
        rows: list[dict[str, Any]] = json.loads(out)["emails"]
        return rows


@pytest.fixture
async def outbox(
    store: Store,
    smtp_sink: SmtpSink,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Outbox:
    settings: Settings = settings_for(store, smtp_sink)
    monkeypatch.setenv("CHECKOUT_DATABASE_URL", store_url(store))
    monkeypatch.setenv("CHECKOUT_SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("CHECKOUT_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("CHECKOUT_SMTP_TLS", "none")
    monkeypatch.delenv("CHECKOUT_MAIL_FROM", raising=False)
    return Outbox(capsys, store, smtp_sink, build_activities(settings, store))


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    return err.strip()


async def test_list_shows_the_outbox_and_resend_delivers_a_failed_email(outbox: Outbox) -> None:
    """`emails list` shows what was sent and what failed (JSON rows of exactly the documented
    keys, filtered by --status); `emails resend` sends the failed e-mail with its Message-ID and
    it is sent from then on."""
    sent_to = account(locale="en", billing_email="billing@sent.example")
    failed_to = account(billing_email="rechnung@failed.example")
    await outbox.store.import_accounts([sent_to, failed_to])
    await outbox.send("ord-sent", sent_to.account_id, EmailPurpose.CONFIRMATION)
    outbox.sink.stop()  # an SMTP outage for the second e-mail, which the outbox gives up on
    await outbox.send("ord-failed", failed_to.account_id, EmailPurpose.CONFIRMATION)
    await outbox.store.outbox_give_up("ord-failed", "confirmation")
    outbox.sink.start()

    rows = {row["order_id"]: row for row in await outbox.json()}
    assert all(set(row) == ROW_KEYS for row in rows.values())
    sent, failed = rows["ord-sent"], rows["ord-failed"]
    assert (sent["status"], sent["to"], sent["attempts"], sent["last_error"]) == (
        "sent",
        "billing@sent.example",
        1,
        None,
    )
    assert sent["sent_at"] is not None and sent["sent_at"].endswith("Z")
    assert sent["message_id"] == "<confirmation.ord-sent@billing.kestrel.example>"
    assert (failed["status"], failed["to"], failed["sent_at"]) == (
        "failed",
        "rechnung@failed.example",
        None,
    )
    assert "SMTPConnectError" in failed["last_error"]
    assert [r["order_id"] for r in await outbox.json("--status", "failed")] == ["ord-failed"]
    code, out, _ = await outbox("emails", "list")
    assert code == 0
    assert "ord-sent" in out and "ord-failed" in out and "LAST ERROR" in out

    (first,) = outbox.sink.messages
    code, out, err = await outbox("emails", "resend", "ord-failed")
    assert (code, err) == (0, ""), err
    assert failed["message_id"] in out
    _, resent = await outbox.sink.wait_for(2)
    assert resent["Message-ID"] == failed["message_id"]
    assert resent["To"] == "rechnung@failed.example"
    assert resent["Subject"] == "Ihre Bestellung ord-failed bei Kestrel Cloud ist bestätigt"
    assert first["Message-ID"] == sent["message_id"]
    (after,) = [r for r in await outbox.json() if r["order_id"] == "ord-failed"]
    assert (after["status"], after["attempts"], after["last_error"]) == ("sent", 2, None)
    assert after["sent_at"] is not None
    assert await outbox.json("--status", "failed") == []
    code, out, _ = await outbox("emails", "list", "--status", "failed")
    assert (code, out) == (0, "no e-mails failed\n")


async def test_resend_picks_the_purpose_and_refuses_what_it_cannot_do(outbox: Outbox) -> None:
    """An order with several e-mails needs --purpose; the resend is the same message with the
    same Message-ID; an unknown order or purpose, or an SMTP server that is down, is a one-line
    error with a non-zero exit, and a failed resend leaves the e-mail as it was."""
    acc = account(locale="en")
    await outbox.store.import_accounts([acc])
    await outbox.send("ord-7", acc.account_id, EmailPurpose.PARKED)
    await outbox.send("ord-7", acc.account_id, EmailPurpose.CONFIRMATION)
    parked, confirmation = await outbox.sink.wait_for(2)

    code, out, err = await outbox("emails", "resend", "ord-7")
    assert (code, out) == (1, "")
    assert "parked, confirmation" in one_line(err) and "--purpose" in err

    code, out, err = await outbox("emails", "resend", "ord-7", "--purpose", "parked")
    assert (code, err) == (0, ""), err
    *_, again = await outbox.sink.wait_for(3)
    assert again["Message-ID"] == parked["Message-ID"] == "<parked.ord-7@billing.kestrel.example>"
    assert again["Subject"] == parked["Subject"]
    assert text_of(again) == text_of(parked)
    assert "taking longer" in again["Subject"]
    entry = await outbox.store.outbox_entry("ord-7", "parked")
    assert entry is not None and (entry.status, entry.attempts) == ("sent", 2)
    # --json: the row `emails list --json` shows for it, after this resend.
    code, out, err = await outbox(
        "emails", "resend", "ord-7", "--purpose", "confirmation", "--json"
    )
    assert (code, err) == (0, ""), err
    row = json.loads(out)
    assert (row["order_id"], row["purpose"], row["status"], row["attempts"]) == (
        "ord-7",
        "confirmation",
        "sent",
        2,
    )
    assert row["message_id"] == confirmation["Message-ID"]
    assert row["to"] == acc.billing_email
    *_, resent = await outbox.sink.wait_for(4)
    assert resent["Message-ID"] == confirmation["Message-ID"]

    for argv, expected in (
        (["ord-missing"], "no e-mail of order ord-missing in the outbox"),
        (["ord-7", "--purpose", "bogus"], "unknown purpose 'bogus'"),
        (["ord-7", "--purpose", "rejection"], "order ord-7 has no rejection e-mail"),
    ):
        code, out, err = await outbox("emails", "resend", *argv)
        assert (code, out) == (1, ""), argv
        assert expected in one_line(err), err

    outbox.sink.stop()
    try:
        code, out, err = await outbox("emails", "resend", "ord-7", "--purpose", "confirmation")
    finally:
        outbox.sink.start()
    assert (code, out) == (1, "")
    assert "could not be sent" in one_line(err) and "it stays sent" in err
    entry = await outbox.store.outbox_entry("ord-7", "confirmation")
    assert entry is not None and (entry.status, entry.attempts) == ("sent", 3)
    assert entry.last_error is not None and "SMTPConnectError" in entry.last_error
    assert [m["Message-ID"] for m in outbox.sink.messages] == [
        parked["Message-ID"],
        confirmation["Message-ID"],
        parked["Message-ID"],
        confirmation["Message-ID"],
    ]
