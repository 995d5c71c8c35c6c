"""Configuration from the environment (docs/contract.md, section 5): one place the worker, the
commands and the tests read."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter
from pydantic import ValidationError

from checkout.codec import PayloadKey
from checkout.codec import PayloadKeyError
from checkout.codec import parse_payload_keys
from checkout.contract import DEFAULT_TASK_QUEUE

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.data/checkout.db"

#: ISO 8601 durations are pydantic's to read (days, hours, minutes, seconds, with fractions).
_DURATION: TypeAdapter[timedelta] = TypeAdapter(timedelta)
#: Pydantic also reads years, months and weeks in the date part (as 365, 30 and 7 days); the
#: contract takes none of them (a month is no fixed number of seconds), nor a dangling "T".
_NOT_IN_CONTRACT = re.compile(r"^P[^T]*[YMW]|T$")


class ConfigError(ValueError):
    """An environment variable holds a value we cannot use."""


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds from ``"20"``, ``"1.5"`` or ISO 8601 ``"PT72H"``/``"P3DT4H"``."""
    value = text.strip().upper()
    try:
        seconds = float(value)
    except ValueError:
        seconds = _iso_seconds(value, text, name)
    # float() also reads "nan" and "inf": neither is a usable timeout.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{name}: must be a positive, finite number of seconds, got {text!r}")
    return seconds


def _iso_seconds(value: str, text: str, name: str) -> float:
    problem = ConfigError(
        f"{name}: {text!r} is neither seconds nor an ISO 8601 duration like PT72H"
    )
    # Pydantic reads "3 days" and "01:00:00" too: the contract says ISO 8601, so P first.
    if not value.startswith("P") or _NOT_IN_CONTRACT.search(value):
        raise problem
    try:
        return _DURATION.validate_strings(value).total_seconds()
    except ValidationError:
        raise problem from None


def _int(env: dict[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _port(env: dict[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = _int(env, name, 0)
    if value > 65535:
        raise ConfigError(f"{name}: must be a TCP port, 1 to 65535, got {value}")
    return value


def _duration(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    return default if raw is None or raw == "" else parse_duration(raw, name)


def _payload_keys(env: dict[str, str]) -> tuple[PayloadKey, ...]:
    raw = env.get("CHECKOUT_PAYLOAD_KEYS")
    if raw is None or raw.strip() == "":
        return ()
    try:
        return parse_payload_keys(raw)
    except PayloadKeyError as exc:
        # The message names ids and positions only, never key material.
        raise ConfigError(f"CHECKOUT_PAYLOAD_KEYS: {exc}") from None


_ORIGIN = re.compile(r"^https?://[^/\s]+$")


def _origins(env: dict[str, str], name: str) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in (env.get(name) or "").split(",") if o.strip())
    for origin in origins:
        # Credentials are allowed, so "*" would hand decrypted payloads to any web page.
        if not _ORIGIN.match(origin):
            raise ConfigError(
                f"{name}: {origin!r} is not an origin like https://temporal-ui.example.com"
                " (scheme and host, optional port, no path, no *)"
            )
    return origins


SmtpTls = Literal["none", "starttls", "tls"]
PaymentGatewayKind = Literal["sandbox", "stripe"]


def _payment_gateway(env: dict[str, str]) -> tuple[PaymentGatewayKind, str | None, str | None]:
    """CHECKOUT_PAYMENT_GATEWAY and, for Stripe, its key and base URL. Errors name the variable,
    never the key's value."""
    kind = env.get("CHECKOUT_PAYMENT_GATEWAY", "sandbox") or "sandbox"
    if kind not in ("sandbox", "stripe"):
        raise ConfigError(f"CHECKOUT_PAYMENT_GATEWAY: {kind!r} is not one of sandbox, stripe")
    key = (env.get("STRIPE_API_KEY") or "").strip() or None
    base = (env.get("CHECKOUT_STRIPE_API_BASE") or "").strip().rstrip("/") or None
    if kind == "stripe":
        if key is None:
            raise ConfigError("STRIPE_API_KEY: must be set when CHECKOUT_PAYMENT_GATEWAY=stripe")
        if key.startswith("pk_"):
            raise ConfigError(
                "STRIPE_API_KEY: is a publishable key (pk_...); the gateway needs a secret"
                " (sk_...) or restricted (rk_...) key"
            )
        if base is not None and not base.startswith(("https://", "http://")):
            raise ConfigError(f"CHECKOUT_STRIPE_API_BASE: {base!r} is not an http(s) URL")
    return kind, key, base  # type: ignore[return-value]  # kind checked against the literal


@dataclass(frozen=True)
class Settings:
    task_queue: str = DEFAULT_TASK_QUEUE
    database_url: str = DEFAULT_DATABASE_URL
    catalog_path: Path | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: SmtpTls = "none"
    mail_from: str = "Kestrel Cloud Billing <no-reply@billing.kestrel.example>"
    vat_verification: Literal["offline", "vies"] = "offline"
    vies_url: str = "https://ec.europa.eu/taxation_customs/vies/rest-api/check-vat-number"
    provisioning_max_attempts: int = 5
    park_timeout_seconds: float = 72 * 3600
    approval_timeout_seconds: float = 7 * 24 * 3600
    queue_timeout_seconds: float = 600
    email_retry_for_seconds: float = 2 * 24 * 3600
    #: Payload encryption keys, the one that encrypts first (docs/payload-encryption.md).
    payload_keys: tuple[PayloadKey, ...] = field(default=(), repr=False)
    codec_token: str | None = field(default=None, repr=False)
    codec_cors_origins: tuple[str, ...] = ()
    payment_gateway: PaymentGatewayKind = "sandbox"
    #: Stripe's secret or restricted key: never printed (not in the repr, not in any error).
    stripe_api_key: str | None = field(default=None, repr=False)
    #: Stripe's API base URL; None means Stripe's own. Tests point it at a local server.
    stripe_api_base: str | None = None
    #: The worker serves Prometheus metrics on 127.0.0.1 at this port; None: no metrics.
    metrics_port: int | None = None
    #: Run workflows in Temporal's sandbox (the default): it refuses a call that would break
    #: replay (the clock, randomness, I/O) when it happens. Off saves the worker CPU the sandbox
    #: costs (docs/architecture.md, "The worker"); the tests always run workflows in it.
    workflow_sandbox: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        tls = env.get("CHECKOUT_SMTP_TLS", "none") or "none"
        if tls not in ("none", "starttls", "tls"):
            raise ConfigError(f"CHECKOUT_SMTP_TLS: {tls!r} is not one of none, starttls, tls")
        verification = env.get("CHECKOUT_VAT_VERIFICATION", "offline") or "offline"
        if verification not in ("offline", "vies"):
            raise ConfigError(
                f"CHECKOUT_VAT_VERIFICATION: {verification!r} is not one of offline, vies"
            )
        sandbox = env.get("CHECKOUT_WORKFLOW_SANDBOX", "on") or "on"
        if sandbox not in ("on", "off"):
            raise ConfigError(f"CHECKOUT_WORKFLOW_SANDBOX: {sandbox!r} is not one of on, off")
        catalog = env.get("CHECKOUT_CATALOG_PATH")
        gateway, stripe_api_key, stripe_api_base = _payment_gateway(env)
        return cls(
            task_queue=env.get("CHECKOUT_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            database_url=env.get("CHECKOUT_DATABASE_URL") or DEFAULT_DATABASE_URL,
            catalog_path=Path(catalog) if catalog else None,
            smtp_host=env.get("CHECKOUT_SMTP_HOST") or "127.0.0.1",
            smtp_port=_int(env, "CHECKOUT_SMTP_PORT", 8025),
            smtp_username=env.get("CHECKOUT_SMTP_USERNAME") or None,
            smtp_password=env.get("CHECKOUT_SMTP_PASSWORD") or None,
            smtp_tls=tls,  # type: ignore[arg-type]  # checked against the literal above
            mail_from=env.get("CHECKOUT_MAIL_FROM") or cls.mail_from,
            vat_verification=verification,  # type: ignore[arg-type]  # checked above
            vies_url=env.get("CHECKOUT_VIES_URL") or cls.vies_url,
            provisioning_max_attempts=_int(env, "CHECKOUT_PROVISIONING_MAX_ATTEMPTS", 5),
            park_timeout_seconds=_duration(env, "CHECKOUT_PARK_TIMEOUT", 72 * 3600),
            approval_timeout_seconds=_duration(env, "CHECKOUT_APPROVAL_TIMEOUT", 7 * 24 * 3600),
            queue_timeout_seconds=_duration(env, "CHECKOUT_QUEUE_TIMEOUT", 600),
            email_retry_for_seconds=_duration(env, "CHECKOUT_EMAIL_RETRY_FOR", 2 * 24 * 3600),
            payload_keys=_payload_keys(env),
            codec_token=env.get("CHECKOUT_CODEC_TOKEN") or None,
            codec_cors_origins=_origins(env, "CHECKOUT_CODEC_CORS_ORIGINS"),
            payment_gateway=gateway,
            stripe_api_key=stripe_api_key,
            stripe_api_base=stripe_api_base,
            metrics_port=_port(env, "CHECKOUT_METRICS_PORT"),
            workflow_sandbox=sandbox == "on",
        )
