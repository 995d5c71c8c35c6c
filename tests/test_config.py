"""Configuration from the environment (docs/contract.md, section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkout.config import DEFAULT_DATABASE_URL
from checkout.config import ConfigError
from checkout.config import Settings
from checkout.config import parse_duration

# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20", 20.0),
        ("1.5", 1.5),
        (" 20 ", 20.0),
        ("PT72H", 72 * 3600.0),
        ("P3DT4H", 3 * 86400.0 + 4 * 3600.0),
        ("PT30M", 1800.0),
        ("PT45S", 45.0),
        ("P1D", 86400.0),
        ("P7D", 7 * 86400.0),
        ("PT1H30M", 5400.0),
        ("PT1.5H", 5400.0),
        ("P1DT2H3M4S", 86400.0 + 7200.0 + 180.0 + 4.0),
        ("pt72h", 72 * 3600.0),
        ("P1.5D", 1.5 * 86400.0),
        ("PT0.5S", 0.5),
    ],
)
def test_parse_duration_reads_seconds_and_iso_8601(text: str, seconds: float) -> None:
    """Durations are plain seconds or ISO 8601 (days, hours, minutes, seconds)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "P",
        "PT",
        "P3DT",
        "PTH",
        "72H",
        "P1Y",
        "P2M",
        "P1W",
        "P1D1H",
        "PT-5M",
        "0",
        "-5",
        "0.0",
        "PT0S",
        "P0D",
        "nan",
        "NaN",
        "inf",
        "Infinity",
        "-inf",
        # Pydantic reads these; the contract does not (ISO 8601 only, no negative durations).
        "3 days",
        "01:00:00",
        "-PT1H",
        "P1DT",
        "P1Y2D",
    ],
)
def test_parse_duration_rejects_bad_values(text: str) -> None:
    """Anything not a positive, finite number of seconds or ISO duration is a ConfigError."""
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_parse_duration_error_names_the_variable() -> None:
    """The error names the variable and repeats the bad value."""
    with pytest.raises(ConfigError, match=r"CHECKOUT_PARK_TIMEOUT: '3 days'"):
        parse_duration("3 days", "CHECKOUT_PARK_TIMEOUT")


def test_config_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so callers that catch ValueError see it."""
    assert issubclass(ConfigError, ValueError)


# --- Settings.from_env -------------------------------------------------------------------------


def test_defaults_from_an_empty_environment() -> None:
    """With no variables set every setting has its documented default."""
    settings = Settings.from_env({})
    assert settings.task_queue == "checkout"
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///.data/checkout.db"
    assert settings.catalog_path is None
    assert (settings.smtp_host, settings.smtp_port) == ("127.0.0.1", 8025)
    assert (settings.smtp_username, settings.smtp_password) == (None, None)
    assert settings.smtp_tls == "none"
    assert "no-reply@" in settings.mail_from
    assert settings.vat_verification == "offline"
    assert settings.provisioning_max_attempts == 5
    assert settings.park_timeout_seconds == 72 * 3600
    assert settings.approval_timeout_seconds == 7 * 24 * 3600
    assert settings.payment_gateway == "sandbox"
    assert settings.metrics_port is None
    assert settings == Settings()


def test_empty_values_mean_the_default() -> None:
    """A variable set to the empty string counts as unset."""
    names = [
        "CHECKOUT_TASK_QUEUE",
        "CHECKOUT_DATABASE_URL",
        "CHECKOUT_CATALOG_PATH",
        "CHECKOUT_SMTP_HOST",
        "CHECKOUT_SMTP_PORT",
        "CHECKOUT_SMTP_USERNAME",
        "CHECKOUT_SMTP_PASSWORD",
        "CHECKOUT_SMTP_TLS",
        "CHECKOUT_MAIL_FROM",
        "CHECKOUT_VAT_VERIFICATION",
        "CHECKOUT_PROVISIONING_MAX_ATTEMPTS",
        "CHECKOUT_PARK_TIMEOUT",
        "CHECKOUT_APPROVAL_TIMEOUT",
        "CHECKOUT_PAYMENT_GATEWAY",
        "STRIPE_API_KEY",
        "CHECKOUT_STRIPE_API_BASE",
        "CHECKOUT_METRICS_PORT",
        "CHECKOUT_WORKFLOW_SANDBOX",
    ]
    assert Settings.from_env(dict.fromkeys(names, "")) == Settings()


def test_every_variable_overrides_its_setting() -> None:
    """Each CHECKOUT_* variable of the contract sets its field."""
    settings = Settings.from_env(
        {
            "CHECKOUT_TASK_QUEUE": "checkout-eu",
            "CHECKOUT_DATABASE_URL": "postgresql+asyncpg://billing@db:5432/checkout",
            "CHECKOUT_CATALOG_PATH": "/etc/kestrel/catalog.toml",
            "CHECKOUT_SMTP_HOST": "smtp.example",
            "CHECKOUT_SMTP_PORT": "587",
            "CHECKOUT_SMTP_USERNAME": "mailer",
            "CHECKOUT_SMTP_PASSWORD": "s3cret",
            "CHECKOUT_SMTP_TLS": "starttls",
            "CHECKOUT_MAIL_FROM": "Billing <billing@kestrel.example>",
            "CHECKOUT_VAT_VERIFICATION": "vies",
            "CHECKOUT_PROVISIONING_MAX_ATTEMPTS": "9",
            "CHECKOUT_PARK_TIMEOUT": "PT30M",
            "CHECKOUT_APPROVAL_TIMEOUT": "20",
            "CHECKOUT_METRICS_PORT": "9464",
            "CHECKOUT_WORKFLOW_SANDBOX": "off",
        }
    )
    assert settings.task_queue == "checkout-eu"
    assert settings.database_url == "postgresql+asyncpg://billing@db:5432/checkout"
    assert settings.catalog_path == Path("/etc/kestrel/catalog.toml")
    assert (settings.smtp_host, settings.smtp_port) == ("smtp.example", 587)
    assert (settings.smtp_username, settings.smtp_password) == ("mailer", "s3cret")
    assert settings.smtp_tls == "starttls"
    assert settings.mail_from == "Billing <billing@kestrel.example>"
    assert settings.vat_verification == "vies"
    assert settings.provisioning_max_attempts == 9
    assert settings.park_timeout_seconds == 1800
    assert settings.approval_timeout_seconds == 20
    assert settings.metrics_port == 9464
    assert settings.workflow_sandbox is False


@pytest.mark.parametrize("tls", ["none", "starttls", "tls"])
def test_smtp_tls_accepts_the_three_modes(tls: str) -> None:
    """CHECKOUT_SMTP_TLS takes none, starttls or tls."""
    assert Settings.from_env({"CHECKOUT_SMTP_TLS": tls}).smtp_tls == tls


@pytest.mark.parametrize("tls", ["ssl", "STARTTLS", "true", "yes", "1", "start-tls"])
def test_bad_smtp_tls_is_a_config_error(tls: str) -> None:
    """Any other CHECKOUT_SMTP_TLS is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="CHECKOUT_SMTP_TLS"):
        Settings.from_env({"CHECKOUT_SMTP_TLS": tls})


@pytest.mark.parametrize("value", ["true", "OFF", "0", "sandboxed"])
def test_bad_workflow_sandbox_is_a_config_error(value: str) -> None:
    """CHECKOUT_WORKFLOW_SANDBOX is on or off, nothing else."""
    with pytest.raises(ConfigError, match="CHECKOUT_WORKFLOW_SANDBOX"):
        Settings.from_env({"CHECKOUT_WORKFLOW_SANDBOX": value})


@pytest.mark.parametrize("mode", ["online", "VIES", "none"])
def test_bad_vat_verification_is_a_config_error(mode: str) -> None:
    """CHECKOUT_VAT_VERIFICATION is offline or vies, nothing else."""
    with pytest.raises(ConfigError, match="CHECKOUT_VAT_VERIFICATION"):
        Settings.from_env({"CHECKOUT_VAT_VERIFICATION": mode})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHECKOUT_SMTP_PORT", "smtp"),
        ("CHECKOUT_SMTP_PORT", "0"),
        ("CHECKOUT_SMTP_PORT", "25.5"),
        ("CHECKOUT_PROVISIONING_MAX_ATTEMPTS", "0"),
        ("CHECKOUT_PROVISIONING_MAX_ATTEMPTS", "many"),
        ("CHECKOUT_PARK_TIMEOUT", "3 days"),
        ("CHECKOUT_PARK_TIMEOUT", "0"),
        ("CHECKOUT_PARK_TIMEOUT", "nan"),
        ("CHECKOUT_APPROVAL_TIMEOUT", "P1M"),
        ("CHECKOUT_APPROVAL_TIMEOUT", "-PT1H"),
        ("CHECKOUT_METRICS_PORT", "0"),
        ("CHECKOUT_METRICS_PORT", "65536"),
        ("CHECKOUT_METRICS_PORT", "127.0.0.1:9464"),
    ],
)
def test_bad_numbers_and_durations_are_config_errors(name: str, value: str) -> None:
    """Unusable numbers and durations are ConfigErrors naming the variable."""
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads os.environ."""
    monkeypatch.setenv("CHECKOUT_TASK_QUEUE", "checkout-from-env")
    monkeypatch.setenv("CHECKOUT_PARK_TIMEOUT", "P3DT4H")
    settings = Settings.from_env()
    assert settings.task_queue == "checkout-from-env"
    assert settings.park_timeout_seconds == 3 * 86400 + 4 * 3600


def test_password_is_not_in_the_repr() -> None:
    """The SMTP password never shows up when settings are printed or logged."""
    settings = Settings.from_env({"CHECKOUT_SMTP_PASSWORD": "s3cret-pw"})
    assert "s3cret-pw" not in repr(settings)


# --- the payment gateway ------------------------------------------------------------------------

SECRET = "sk_test_51ConfigTestKeyDoNotPrintMe"


def test_the_sandbox_gateway_is_the_default() -> None:
    """Without CHECKOUT_PAYMENT_GATEWAY the built-in sandbox takes payments; no key needed."""
    settings = Settings.from_env({"CHECKOUT_PAYMENT_GATEWAY": ""})
    assert settings.payment_gateway == "sandbox"
    assert (settings.stripe_api_key, settings.stripe_api_base) == (None, None)


def test_stripe_reads_its_key_and_base_url() -> None:
    """CHECKOUT_PAYMENT_GATEWAY=stripe with STRIPE_API_KEY (trimmed) and the optional base URL."""
    settings = Settings.from_env(
        {
            "CHECKOUT_PAYMENT_GATEWAY": "stripe",
            "STRIPE_API_KEY": f" {SECRET}\n",
            "CHECKOUT_STRIPE_API_BASE": "http://127.0.0.1:12111/",
        }
    )
    assert settings.payment_gateway == "stripe"
    assert settings.stripe_api_key == SECRET
    assert settings.stripe_api_base == "http://127.0.0.1:12111"
    assert (
        Settings.from_env(
            {"CHECKOUT_PAYMENT_GATEWAY": "stripe", "STRIPE_API_KEY": "rk_live_restricted"}
        ).stripe_api_base
        is None
    )


@pytest.mark.parametrize("kind", ["Stripe", "paypal", "live", "sandbox,stripe"])
def test_an_unknown_payment_gateway_is_a_config_error(kind: str) -> None:
    """CHECKOUT_PAYMENT_GATEWAY is sandbox or stripe, spelled exactly."""
    with pytest.raises(ConfigError, match="CHECKOUT_PAYMENT_GATEWAY"):
        Settings.from_env({"CHECKOUT_PAYMENT_GATEWAY": kind})


@pytest.mark.parametrize("key", [None, "", "   "])
def test_stripe_without_a_key_is_a_config_error_naming_the_variable(key: str | None) -> None:
    """Stripe without STRIPE_API_KEY cannot start, and says which variable is missing."""
    env = {"CHECKOUT_PAYMENT_GATEWAY": "stripe"}
    if key is not None:
        env["STRIPE_API_KEY"] = key
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        Settings.from_env(env)


def test_a_publishable_key_is_refused_without_repeating_it() -> None:
    """A publishable key (pk_...) cannot charge; the error names the variable, not the value."""
    key = "pk_test_51PublishableKeyValue"
    with pytest.raises(ConfigError, match="STRIPE_API_KEY") as refused:
        Settings.from_env({"CHECKOUT_PAYMENT_GATEWAY": "stripe", "STRIPE_API_KEY": key})
    assert key not in str(refused.value)


def test_a_stripe_base_url_must_be_http() -> None:
    """CHECKOUT_STRIPE_API_BASE must be an http(s) URL."""
    with pytest.raises(ConfigError, match="CHECKOUT_STRIPE_API_BASE"):
        Settings.from_env(
            {
                "CHECKOUT_PAYMENT_GATEWAY": "stripe",
                "STRIPE_API_KEY": SECRET,
                "CHECKOUT_STRIPE_API_BASE": "api.stripe.com",
            }
        )


def test_the_stripe_key_is_not_in_the_repr() -> None:
    """The Stripe key never shows up when settings are printed or logged."""
    settings = Settings.from_env({"CHECKOUT_PAYMENT_GATEWAY": "stripe", "STRIPE_API_KEY": SECRET})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
