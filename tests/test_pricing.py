"""Pricing rules of docs/billing-rules.md ("Periods and the billing anchor", "Amounts", trials,
payment): pure functions, no Temporal, no database."""

from __future__ import annotations

import calendar
import math
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st

from checkout.catalog import Catalog
from checkout.catalog import load_catalog
from checkout.errors import CheckoutRejected
from checkout.errors import Reason
from checkout.models import Account
from checkout.models import BillingCycle
from checkout.models import CheckoutPlan
from checkout.models import Invoice
from checkout.models import LineKind
from checkout.models import Order
from checkout.models import SubscriptionStatus
from checkout.models import TaxTreatment
from checkout.models import VatCheck
from checkout.money import MINOR_UNITS
from checkout.money import round_money
from checkout.pricing import add_months
from checkout.pricing import period_end
from checkout.pricing import price_order
from checkout.pricing import proration_credit

#: The anchor ``t`` of most examples: the moment the order is placed.
T = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)

#: A small catalog of our own, so that the examples do not move when the shipped prices do.
#: The seller sits in Germany: German customers pay 19 %.
CATALOG = Catalog.model_validate(
    {
        "seller": {"country": "DE", "vat_id": "DE136695976", "name": "Test Seller GmbH"},
        "products": {
            "alpha": {
                "name": "Alpha",
                "trial_days": 14,
                "max_seats": 10,
                "plans": {
                    "basic": {
                        "name": "Basic",
                        "prices": {
                            "EUR": {"monthly": "10.00", "annual": "100.00"},
                            "USD": {"monthly": "11.00", "annual": "110.00"},
                        },
                    },
                    "pro": {
                        "name": "Pro",
                        "prices": {"EUR": {"monthly": "20.00", "annual": "200.00"}},
                    },
                },
            },
            "beta": {
                "name": "Beta",
                "trial_days": 0,
                "max_seats": 5,
                "plans": {
                    "basic": {
                        "name": "Basic",
                        "prices": {"EUR": {"monthly": "1.50", "annual": "15.00"}},
                    }
                },
            },
            "gamma": {
                "name": "Gamma",
                "trial_days": 30,
                "max_seats": 1000,
                "plans": {
                    "basic": {
                        "name": "Basic",
                        "prices": {
                            "EUR": {"monthly": "1.50", "annual": "3.33"},
                            "USD": {"monthly": "0.99", "annual": "9.99"},
                        },
                    }
                },
            },
        },
    }
)


def make_account(**fields: Any) -> Account:
    values: dict[str, Any] = {
        "account_id": "acc-1",
        "name": "Muster GmbH",
        "billing_email": "billing@muster.example",
        "country": "DE",
        "currency": "EUR",
        "corporate": False,
        "subscriptions": [],
    }
    values.update(fields)
    return Account.model_validate(values)


def item(
    product: str = "alpha", plan: str = "basic", seats: int = 1, **fields: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {"product": product, "plan": plan, "seats": seats}
    if fields.get("mode", "buy") == "buy":
        values["billing_cycle"] = "monthly"
    values.update(fields)
    return values


def make_order(*items: dict[str, Any], **fields: Any) -> Order:
    values: dict[str, Any] = {
        "order_id": "ord-1",
        "account_id": "acc-1",
        "items": list(items),
        "payment_method": "pm_card_visa",
    }
    values.update(fields)
    return Order.model_validate(values)


def subscription(period: tuple[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """2 monthly seats of alpha basic, paid 20.00 for November 2026, unless ``fields`` (and
    ``period``, its start and end) say otherwise."""
    if period is not None:
        fields["current_period_start"], fields["current_period_end"] = period
    values: dict[str, Any] = {
        "product": "alpha",
        "plan": "basic",
        "seats": 2,
        "status": "active",
        "billing_cycle": "monthly",
        "current_period_start": "2026-11-01T00:00:00Z",
        "current_period_end": "2026-12-01T00:00:00Z",
        "period_amount": "20.00",
    }
    values.update(fields)
    return values


def subscriber(period: tuple[str, str] | None = None, **fields: Any) -> Account:
    """``make_account`` holding one subscription, ``subscription(period, **fields)``."""
    return make_account(subscriptions=[subscription(period, **fields)])


def totals(invoice: Invoice) -> tuple[str, str, str]:
    """The invoice's net, VAT and total, to the cent as written."""
    return str(invoice.net), str(invoice.vat), str(invoice.total)


def price(
    order: Order,
    account: Account | None = None,
    *,
    catalog: Catalog = CATALOG,
    at: datetime = T,
    vat: VatCheck | None = None,
) -> CheckoutPlan:
    return price_order(order, account or make_account(), catalog, at, vat)


def rejected(order: Order, account: Account | None = None, **kwargs: Any) -> CheckoutRejected:
    with pytest.raises(CheckoutRejected) as info:
        price(order, account, **kwargs)
    return info.value


def half_up(value: Fraction | Decimal) -> Decimal:
    """Reference commercial rounding to cents of a non-negative exact value."""
    exact = Fraction(value)
    assert exact >= 0
    return Decimal(math.floor(exact * 100 + Fraction(1, 2))) / 100


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- money: our own minor-unit table, commercial rounding ------------------------------------


def test_minor_unit_table_has_two_digits_for_eur_usd_gbp() -> None:
    """EUR, USD and GBP round to cents."""
    assert {c: MINOR_UNITS[c] for c in ("EUR", "USD", "GBP")} == {"EUR": 2, "USD": 2, "GBP": 2}


@pytest.mark.parametrize(
    ("amount", "rounded"),
    [
        ("0.005", "0.01"),
        ("0.015", "0.02"),
        ("0.025", "0.03"),
        ("2.675", "2.68"),
        ("0.0049999", "0.00"),
        ("1725.5", "1725.50"),
        ("-0.005", "-0.01"),
    ],
)
def test_round_money_is_half_up_to_the_cent(amount: str, rounded: str) -> None:
    """Half a cent always rounds away from zero (ROUND_HALF_UP), never to even."""
    result = round_money(Decimal(amount), "EUR")
    assert result == Decimal(rounded)
    assert str(result) == rounded


def test_round_money_refuses_a_currency_without_minor_units() -> None:
    """A currency missing from the table is an error, not a guess."""
    with pytest.raises(ValueError, match="CHF"):
        round_money(Decimal("1.00"), "CHF")


# --- periods: month arithmetic from the anchor ------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "months", "expected"),
    [
        ("2026-01-31T09:30:00Z", 1, "2026-02-28T09:30:00Z"),
        ("2028-01-31T09:30:00Z", 1, "2028-02-29T09:30:00Z"),
        ("2026-01-31T09:30:00Z", 2, "2026-03-31T09:30:00Z"),
        ("2026-01-31T09:30:00Z", 3, "2026-04-30T09:30:00Z"),
        ("2026-03-31T00:00:00Z", 1, "2026-04-30T00:00:00Z"),
        ("2026-08-31T00:00:00Z", 6, "2027-02-28T00:00:00Z"),
        ("2026-12-15T23:59:59Z", 1, "2027-01-15T23:59:59Z"),
        ("2026-12-31T12:00:00Z", 2, "2027-02-28T12:00:00Z"),
        ("2026-01-31T09:30:00Z", 12, "2027-01-31T09:30:00Z"),
        ("2028-02-29T08:00:00Z", 12, "2029-02-28T08:00:00Z"),
        ("2026-05-17T10:15:00Z", 0, "2026-05-17T10:15:00Z"),
        ("2026-01-31T09:30:00Z", 25, "2028-02-29T09:30:00Z"),
    ],
)
def test_add_months_clamps_to_the_length_of_the_target_month(
    anchor: str, months: int, expected: str
) -> None:
    """add_months moves whole months and clamps the day to the target month's last day."""
    assert add_months(dt(anchor), months) == dt(expected)


def test_monthly_periods_are_counted_from_the_anchor_not_from_the_previous_end() -> None:
    """Anchor Jan 31 gives Feb 28, then Mar 31, then Apr 30 (not Mar 28, Apr 28)."""
    anchor = dt("2026-01-31T09:30:00Z")
    ends = [period_end(anchor, BillingCycle.MONTHLY, n) for n in (1, 2, 3)]
    assert ends == [
        dt("2026-02-28T09:30:00Z"),
        dt("2026-03-31T09:30:00Z"),
        dt("2026-04-30T09:30:00Z"),
    ]
    chained = add_months(add_months(anchor, 1), 1)
    assert chained == dt("2026-03-28T09:30:00Z") != ends[1]


def test_leap_year_monthly_period_from_jan_31_ends_feb_29() -> None:
    """In a leap year a monthly period anchored on Jan 31 ends on Feb 29."""
    assert period_end(dt("2028-01-31T00:00:00Z"), BillingCycle.MONTHLY) == dt(
        "2028-02-29T00:00:00Z"
    )


def test_annual_period_is_twelve_months() -> None:
    """An annual period ends twelve months after the anchor, same day and time."""
    assert period_end(T, BillingCycle.ANNUAL) == dt("2027-11-26T10:15:00Z")
    assert period_end(T, BillingCycle.MONTHLY) == dt("2026-12-26T10:15:00Z")
    assert period_end(T, BillingCycle.ANNUAL, 2) == dt("2028-11-26T10:15:00Z")


def test_annual_period_from_feb_29_ends_feb_28() -> None:
    """An annual period anchored on Feb 29 ends on Feb 28 of the next (common) year."""
    assert period_end(dt("2028-02-29T06:00:00Z"), BillingCycle.ANNUAL) == dt("2029-02-28T06:00:00Z")


def test_add_months_keeps_time_of_day_microseconds_and_offset() -> None:
    """The time of day (to the microsecond) and the UTC offset of the anchor are kept."""
    cet = timezone(timedelta(hours=1))
    anchor = datetime(2026, 1, 31, 23, 59, 58, 123456, tzinfo=cet)
    end = add_months(anchor, 1)
    assert end == datetime(2026, 2, 28, 23, 59, 58, 123456, tzinfo=cet)
    assert end.utcoffset() == timedelta(hours=1)


datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC)
)


@given(anchor=datetimes, months=st.integers(min_value=0, max_value=240))
def test_add_months_properties(anchor: datetime, months: int) -> None:
    """add_months lands exactly `months` calendar months later, day clamped, time unchanged."""
    end = add_months(anchor, months)
    assert (end.year * 12 + end.month) - (anchor.year * 12 + anchor.month) == months
    last_day = calendar.monthrange(end.year, end.month)[1]
    assert end.day == min(anchor.day, last_day)
    assert end.timetz() == anchor.timetz()


@given(anchor=datetimes, cycle=st.sampled_from(BillingCycle), periods=st.integers(1, 60))
def test_period_end_is_after_the_anchor_and_from_the_anchor(
    anchor: datetime, cycle: BillingCycle, periods: int
) -> None:
    """period_end is always later than the anchor and equals add_months of the whole span."""
    months = {BillingCycle.MONTHLY: 1, BillingCycle.ANNUAL: 12}[cycle]
    end = period_end(anchor, cycle, periods)
    assert end > anchor
    assert end == add_months(anchor, months * periods)


# --- proration credit --------------------------------------------------------------------------


def credit_of(amount: str, start: str, end: str, at: str | datetime) -> Decimal:
    """The proration credit, in EUR, of ``amount`` paid for [``start``, ``end``) at ``at``."""
    return proration_credit(
        period_amount=Decimal(amount),
        period_start=dt(start),
        period_end=dt(end),
        at=at if isinstance(at, datetime) else dt(at),
        currency="EUR",
    )


def test_credit_is_the_unused_share_of_what_was_paid_to_the_cent() -> None:
    """Credit = period_amount x unused seconds / period seconds (hand-computed: 741.18)."""
    # 2026-11-26T10:15Z → 2027-06-01: 186 days 13 h 45 min = 16 119 900 s of 31 536 000 s.
    # 1450.00 x 16 119 900 / 31 536 000 = 741.18008 → 741.18
    credit = credit_of("1450.00", "2026-06-01T00:00:00Z", "2027-06-01T00:00:00Z", T)
    assert credit == Decimal("741.18")
    assert credit.as_tuple().exponent == -2


def test_credit_is_computed_to_the_second() -> None:
    """One second more or less of unused time changes the credit (per-second proration)."""
    common: dict[str, Any] = {
        "period_amount": Decimal("1.00"),
        "period_start": dt("2026-01-01T00:00:00Z"),
        "period_end": dt("2026-01-01T00:06:40Z"),  # 400 s
        "currency": "EUR",
    }
    # 1 s unused: 0.0025 → 0.00; 2 s: 0.005 → 0.01 (half up); 3 s: 0.0075 → 0.01; 4 s: 0.01
    at = dt("2026-01-01T00:06:40Z")
    got = [proration_credit(at=at - timedelta(seconds=s), **common) for s in (1, 2, 3, 4, 40)]
    assert got == [
        Decimal("0.00"),
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("0.01"),
        Decimal("0.10"),
    ]


def test_credit_rounds_half_up_at_half_a_cent() -> None:
    """An exact half cent rounds up: 10.01 / 2 = 5.005 → 5.01 (half-even would give 5.00)."""
    credit = credit_of(
        "10.01", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", "2026-04-16T00:00:00Z"
    )
    assert credit == Decimal("5.01")


@pytest.mark.parametrize(
    "at", ["2026-12-01T00:00:00Z", "2026-12-01T00:00:01Z", "2027-03-01T00:00:00Z"]
)
def test_credit_is_zero_once_the_period_has_ended(at: str) -> None:
    """No credit when t ≥ period_end."""
    credit = credit_of("20.00", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", at)
    assert credit == Decimal("0.00")


def test_credit_at_period_start_is_the_whole_period_amount() -> None:
    """A change at the very start of the period credits everything that was paid."""
    credit = credit_of(
        "123.45", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11-01T00:00:00Z"
    )
    assert credit == Decimal("123.45")


def _reference_credit(amount: Decimal, start: datetime, end: datetime, at: datetime) -> Decimal:
    total = int((end - start).total_seconds())
    if at >= end:
        return Decimal("0.00")
    unused = min(int((end - at).total_seconds()), total)
    return half_up(Fraction(amount) * unused / total)


amounts = st.decimals(min_value=0, max_value=100_000, places=2)


@given(
    amount=amounts,
    start=datetimes,
    length=st.integers(min_value=1, max_value=400 * 86400),
    offset=st.integers(min_value=-10 * 86400, max_value=410 * 86400),
)
def test_credit_properties(amount: Decimal, start: datetime, length: int, offset: int) -> None:
    """0 ≤ credit ≤ period_amount, in cents, equal to the exact formula rounded half up."""
    start = start.replace(microsecond=0)
    end = start + timedelta(seconds=length)
    at = start + timedelta(seconds=offset)
    credit = proration_credit(
        period_amount=amount, period_start=start, period_end=end, at=at, currency="EUR"
    )
    assert Decimal(0) <= credit <= amount
    assert credit.as_tuple().exponent == -2
    assert credit == _reference_credit(amount, start, end, at)
    if at >= end:
        assert credit == 0


@given(
    amount=amounts,
    start=datetimes,
    length=st.integers(min_value=1, max_value=400 * 86400),
    a=st.integers(min_value=0, max_value=400 * 86400),
    b=st.integers(min_value=0, max_value=400 * 86400),
)
def test_credit_never_grows_as_time_passes(
    amount: Decimal, start: datetime, length: int, a: int, b: int
) -> None:
    """A later change never gets more credit than an earlier one."""
    end = start + timedelta(seconds=length)
    early, late = sorted((a, b))

    def credit_at(seconds: int) -> Decimal:
        return proration_credit(
            period_amount=amount,
            period_start=start,
            period_end=end,
            at=start + timedelta(seconds=seconds),
            currency="EUR",
        )

    assert credit_at(late) <= credit_at(early)


# --- new lines ----------------------------------------------------------------------------------


def test_new_line_is_unit_price_times_seats_for_a_full_period() -> None:
    """A new paid line: amount = unit price x seats, no credit, period [t, t + 1 month)."""
    plan = price(make_order(item(seats=3)))
    (line,) = plan.invoice.lines
    assert line.kind is LineKind.NEW
    assert line.unit_price == Decimal("10.00")
    assert line.amount == Decimal("30.00")
    assert line.credit == Decimal("0.00")
    assert line.billing_cycle is BillingCycle.MONTHLY
    assert (line.period_start, line.period_end) == (T, dt("2026-12-26T10:15:00Z"))
    assert line.new_seats == 3
    (target,) = plan.targets
    assert target.status is SubscriptionStatus.ACTIVE
    assert (target.seats, target.current_period_start, target.current_period_end) == (
        3,
        T,
        dt("2026-12-26T10:15:00Z"),
    )
    assert target.period_amount == Decimal("30.00")


def test_annual_line_uses_the_annual_price_and_a_twelve_month_period() -> None:
    """billing_cycle annual picks the annual per-seat price and a 12-month period."""
    (line,) = price(make_order(item(seats=4, billing_cycle="annual"))).invoice.lines
    assert (line.unit_price, line.amount) == (Decimal("100.00"), Decimal("400.00"))
    assert line.period_end == dt("2027-11-26T10:15:00Z")


def test_the_account_currency_picks_the_price() -> None:
    """A USD account pays the plan's USD price and gets a USD invoice."""
    account = make_account(country="US", currency="USD")
    invoice = price(make_order(item(seats=2)), account).invoice
    assert invoice.currency == "USD"
    assert invoice.lines[0].unit_price == Decimal("11.00")
    assert invoice.lines[0].amount == Decimal("22.00")


@pytest.mark.parametrize(("currency", "country"), [("USD", "US"), ("GBP", "GB"), ("CHF", "CH")])
def test_a_currency_the_plan_lacks_is_invalid_order(currency: str, country: str) -> None:
    """Buying a plan that has no price in the account's currency is invalid_order."""
    account = make_account(country=country, currency=currency)
    error = rejected(make_order(item(plan="pro")), account)
    assert error.reason is Reason.INVALID_ORDER
    assert "items[0].plan" in error.message


@pytest.mark.parametrize("currency", ["GBP", "CHF"])
def test_a_trial_in_a_currency_the_plan_lacks_is_invalid_order(currency: str) -> None:
    """A trial of a plan not sold in the account's currency is invalid_order, never a crash."""
    account = make_account(country="CH", currency=currency)
    error = rejected(make_order(item(mode="trial")), account)
    assert error.reason is Reason.INVALID_ORDER
    assert "items[0].plan" in error.message


def test_buy_without_billing_cycle_is_invalid_order() -> None:
    """A buy item must say monthly or annual."""
    error = rejected(make_order({"product": "alpha", "plan": "basic", "seats": 1, "mode": "buy"}))
    assert error.reason is Reason.INVALID_ORDER
    assert "items[0].billing_cycle" in error.message


def test_unknown_product_is_rejected() -> None:
    """A product that is not in the catalog is unknown_product."""
    error = rejected(make_order(item(), item(product="omega")))
    assert error.reason is Reason.UNKNOWN_PRODUCT
    assert "items[1].product" in error.message


def test_unknown_plan_is_rejected() -> None:
    """A plan the product does not have is unknown_plan, also for a trial."""
    assert rejected(make_order(item(plan="gold"))).reason is Reason.UNKNOWN_PLAN
    assert rejected(make_order(item(plan="gold", mode="trial"))).reason is Reason.UNKNOWN_PLAN


def test_plan_of_another_product_is_unknown_plan() -> None:
    """Plans belong to their product: alpha's "pro" is no plan of gamma."""
    assert rejected(make_order(item(product="gamma", plan="pro"))).reason is Reason.UNKNOWN_PLAN


def test_seats_above_the_product_limit_are_rejected() -> None:
    """More seats than max_seats is seat_limit_exceeded; exactly max_seats is fine."""
    assert rejected(make_order(item(seats=11))).reason is Reason.SEAT_LIMIT_EXCEEDED
    assert rejected(make_order(item(seats=11, mode="trial"))).reason is Reason.SEAT_LIMIT_EXCEEDED
    assert price(make_order(item(seats=10))).invoice.lines[0].amount == Decimal("100.00")


def test_a_product_twice_in_one_order_is_invalid_order() -> None:
    """Each product may appear at most once per order, whatever the plans or modes."""
    error = rejected(make_order(item(plan="basic"), item(plan="pro", mode="trial")))
    assert error.reason is Reason.INVALID_ORDER
    assert "items[1].product" in error.message


def test_several_items_are_priced_together() -> None:
    """A cart of several products gives one line each, in order, and one net for all."""
    plan = price(
        make_order(
            item("alpha", seats=2),
            item("beta", seats=3, billing_cycle="annual"),
            item("gamma", seats=7, mode="trial"),
        )
    )
    lines = plan.invoice.lines
    assert [line.product for line in lines] == ["alpha", "beta", "gamma"]
    assert [line.kind for line in lines] == [LineKind.NEW, LineKind.NEW, LineKind.TRIAL]
    assert [line.amount for line in lines] == [
        Decimal("20.00"),
        Decimal("45.00"),
        Decimal("0.00"),
    ]
    assert plan.invoice.net == Decimal("65.00")


# --- changes of an existing paid subscription -------------------------------------------------


def test_adding_seats_is_a_change_with_prorated_credit() -> None:
    """2 → 5 seats mid-period: full new period, credit = unused share of what was paid."""
    account = subscriber()
    # Unused: 2026-11-26T10:15Z → 2026-12-01: 4 d 13 h 45 min = 395 100 s of 2 592 000 s.
    # 20.00 x 395 100 / 2 592 000 = 3.0486 → 3.05
    plan = price(make_order(item(seats=5)), account)
    (line,) = plan.invoice.lines
    assert line.kind is LineKind.CHANGE
    assert (line.amount, line.credit) == (Decimal("50.00"), Decimal("3.05"))
    assert (line.period_start, line.period_end) == (T, dt("2026-12-26T10:15:00Z"))
    assert line.new_seats == 3
    assert plan.invoice.net == Decimal("46.95")
    assert plan.invoice.vat == Decimal("8.92")  # 46.95 x 0.19 = 8.9205
    assert plan.invoice.total == Decimal("55.87")
    (target,) = plan.targets
    assert (target.seats, target.current_period_start) == (5, T)
    # The new period is paid with 46.95 charged plus 3.05 credit carried over.
    assert target.period_amount == Decimal("50.00")


def test_a_second_change_credits_the_whole_value_of_the_first() -> None:
    """Two changes in one period: the second credits the full 50.00 the first period was
    worth, not only the 46.95 charged for it."""
    account = subscriber()
    first = price(make_order(item(seats=5)), account)
    (target,) = first.targets
    changed = make_account(
        subscriptions=[
            {
                "product": target.product, "plan": target.plan, "seats": target.seats,
                "billing_cycle": target.billing_cycle, "status": "active",
                "current_period_start": target.current_period_start,
                "current_period_end": target.current_period_end,
                "period_amount": str(target.period_amount),
            }
        ]
    )  # fmt: skip
    second = price(make_order(item(seats=6)), changed)
    (line,) = second.invoice.lines
    assert line.credit == Decimal("50.00")  # the same instant: the whole period is unused


def test_change_credit_is_based_on_what_was_paid_not_todays_price() -> None:
    """The credit comes from period_amount (a discounted 12.00), not 2 seats x today's 10.00."""
    account = subscriber(
        period_amount="12.00",
        period=("2026-11-11T10:15:00Z", "2026-12-11T10:15:00Z"),
    )
    # 15 of 30 days unused: 12.00 / 2 = 6.00 (today's price would give 10.00)
    (line,) = price(make_order(item(seats=3)), account).invoice.lines
    assert line.credit == Decimal("6.00")


def test_change_credit_rounds_half_up() -> None:
    """A credit of exactly 5.005 is 5.01 on the invoice line."""
    account = subscriber(
        period_amount="10.01",
        period=("2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"),
    )
    plan = price(make_order(item(seats=3)), account, at=dt("2026-04-16T00:00:00Z"))
    assert plan.invoice.lines[0].credit == Decimal("5.01")
    assert plan.invoice.net == Decimal("24.99")


@pytest.mark.parametrize(
    ("change", "amount"),
    [
        ({"plan": "pro", "seats": 2}, Decimal("40.00")),
        ({"seats": 2, "billing_cycle": "annual"}, Decimal("200.00")),
    ],
)
def test_another_plan_or_cycle_is_a_change(change: dict[str, Any], amount: Decimal) -> None:
    """Switching plan or billing cycle of a paid subscription is a change line with credit."""
    account = subscriber()
    (line,) = price(make_order(item(**change)), account).invoice.lines
    assert line.kind is LineKind.CHANGE
    assert line.amount == amount
    assert line.credit == Decimal("3.05")
    assert line.new_seats == 0


def test_change_after_the_period_ended_gets_no_credit() -> None:
    """When t is at or after the current period end the credit is 0."""
    account = subscriber(
        period=("2026-10-26T10:15:00Z", "2026-11-26T10:15:00Z"),
    )
    (line,) = price(make_order(item(seats=3)), account).invoice.lines
    assert line.kind is LineKind.CHANGE
    assert (line.amount, line.credit) == (Decimal("30.00"), Decimal("0.00"))


def test_seat_decrease_is_downgrade_not_supported() -> None:
    """Fewer seats than the current subscription is downgrade_not_supported."""
    account = subscriber(seats=5, period_amount="50.00")
    error = rejected(make_order(item(seats=4, plan="pro")), account)
    assert error.reason is Reason.DOWNGRADE_NOT_SUPPORTED
    assert "items[0].seats" in error.message


def test_change_that_costs_less_than_the_credit_is_downgrade_not_supported() -> None:
    """annual → monthly right after paying: amount - credit < 0 is downgrade_not_supported."""
    account = subscriber(
        seats=5,
        billing_cycle="annual",
        period_amount="500.00",
        period=("2026-11-25T10:15:00Z", "2027-11-25T10:15:00Z"),
    )
    error = rejected(make_order(item(seats=5)), account)
    assert error.reason is Reason.DOWNGRADE_NOT_SUPPORTED


def test_change_whose_credit_equals_the_amount_is_allowed_and_free() -> None:
    """amount - credit = 0 is not negative: allowed, nothing due, no payment method needed."""
    account = subscriber(
        seats=4,
        period_amount="100.00",
        period=("2026-11-11T10:15:00Z", "2026-12-11T10:15:00Z"),
    )
    plan = price(make_order(item(seats=5), payment_method=None), account)
    (line,) = plan.invoice.lines
    assert (line.amount, line.credit) == (Decimal("50.00"), Decimal("50.00"))
    assert plan.invoice.total == Decimal("0.00")


# --- trials -------------------------------------------------------------------------------------


def test_trial_line_is_free_and_ends_after_trial_days() -> None:
    """A trial: zero amounts, status trialing, trial_end = t + trial_days, same seats."""
    plan = price(make_order(item(seats=4, mode="trial"), payment_method=None))
    (line,) = plan.invoice.lines
    assert line.kind is LineKind.TRIAL
    assert (line.unit_price, line.amount, line.credit) == (Decimal("0.00"),) * 3
    assert line.billing_cycle is None
    assert (line.period_start, line.period_end) == (T, T + timedelta(days=14))
    assert line.seats == line.new_seats == 4
    (target,) = plan.targets
    assert target.status is SubscriptionStatus.TRIALING
    assert target.trial_end == T + timedelta(days=14)
    assert target.seats == 4
    assert target.billing_cycle is None
    assert plan.invoice.total == Decimal("0.00")


def test_trial_length_comes_from_the_product() -> None:
    """gamma has a 30-day trial."""
    plan = price(make_order(item("gamma", mode="trial")))
    assert plan.targets[0].trial_end == dt("2026-12-26T10:15:00Z")


def test_product_without_trial_days_has_no_trial() -> None:
    """trial_days = 0 means trial_not_available."""
    error = rejected(make_order(item("beta", mode="trial")))
    assert error.reason is Reason.TRIAL_NOT_AVAILABLE
    assert "items[0]" in error.message


@pytest.mark.parametrize(
    "existing",
    [
        subscription(),
        subscription(status="trialing", billing_cycle=None, trial_end="2026-12-01T00:00:00Z"),
        subscription(status="expired", billing_cycle=None, trial_end="2026-05-01T00:00:00Z"),
        subscription(status="canceled", trial_end="2025-01-15T00:00:00Z"),
        subscription(status="canceled"),
    ],
    ids=["active", "trialing", "expired-trial", "canceled-after-trial", "canceled"],
)
def test_one_trial_per_product_ever(existing: dict[str, Any]) -> None:
    """A product the account has or had (any status) cannot be trialled again."""
    account = make_account(subscriptions=[existing])
    error = rejected(make_order(item(mode="trial")), account)
    assert error.reason is Reason.TRIAL_NOT_AVAILABLE


def test_trial_of_another_product_is_still_available() -> None:
    """Having one product does not use up the trial of another."""
    account = subscriber()
    plan = price(make_order(item("gamma", mode="trial")), account)
    assert plan.invoice.lines[0].kind is LineKind.TRIAL


def test_buying_a_product_in_trial_starts_a_paid_period_without_credit() -> None:
    """Buying during the trial: kind new, credit 0, full period from t, trial converted."""
    account = subscriber(
        status="trialing",
        billing_cycle=None,
        seats=3,
        period_amount="0.00",
        period=("2026-11-20T00:00:00Z", "2026-12-04T00:00:00Z"),
        trial_end="2026-12-04T00:00:00Z",
    )
    plan = price(make_order(item(seats=3, billing_cycle="annual")), account)
    (line,) = plan.invoice.lines
    assert line.kind is LineKind.NEW
    assert (line.amount, line.credit) == (Decimal("300.00"), Decimal("0.00"))
    assert (line.period_start, line.period_end) == (T, dt("2027-11-26T10:15:00Z"))
    assert plan.converts_trials == ["alpha"]
    assert plan.targets[0].status is SubscriptionStatus.ACTIVE


def test_buying_a_product_in_trial_gets_no_credit_even_if_period_amount_is_set() -> None:
    """A trial is never credited, whatever period_amount the record carries."""
    account = subscriber(
        status="trialing",
        billing_cycle=None,
        period_amount="99.00",
        trial_end="2026-12-01T00:00:00Z",
    )
    (line,) = price(make_order(item(seats=2)), account).invoice.lines
    assert (line.kind, line.credit) == (LineKind.NEW, Decimal("0.00"))


# --- payment method ------------------------------------------------------------------------------


def test_payment_method_is_required_when_something_is_due() -> None:
    """total > 0 without a payment method is payment_method_required."""
    error = rejected(make_order(item(), payment_method=None))
    assert error.reason is Reason.PAYMENT_METHOD_REQUIRED
    assert "payment_method" in error.message


def test_corporate_accounts_need_no_payment_method() -> None:
    """Corporate accounts are invoiced: no payment method needed even when something is due."""
    plan = price(make_order(item(), payment_method=None), make_account(corporate=True))
    assert plan.corporate is True
    assert plan.invoice.total == Decimal("11.90")


def test_nothing_due_needs_no_payment_method() -> None:
    """A trial-only order (total 0) needs no payment method."""
    plan = price(make_order(item(mode="trial"), item("gamma", mode="trial"), payment_method=None))
    assert plan.invoice.total == Decimal("0.00")


# --- net, VAT, total -----------------------------------------------------------------------------


def test_vat_is_rounded_half_up_on_the_net() -> None:
    """1.50 x 19 % = 0.285 → 0.29 (half up; banker's rounding would give 0.28)."""
    invoice = price(make_order(item("beta"))).invoice
    assert invoice.vat_rate == Decimal("0.19")
    assert totals(invoice) == ("1.50", "0.29", "1.79")


def test_vat_is_computed_once_on_the_net_not_per_line() -> None:
    """Two 1.50 lines: VAT on 3.00 is 0.57 (per line it would be 0.29 + 0.29 = 0.58)."""
    invoice = price(make_order(item("beta"), item("gamma"))).invoice
    assert totals(invoice) == ("3.00", "0.57", "3.57")


def test_net_subtracts_credits_before_vat() -> None:
    """net = Σ(amount - credit) across new and change lines, VAT on that net."""
    account = subscriber()
    invoice = price(make_order(item(seats=5), item("beta", seats=2)), account).invoice
    # alpha: 50.00 - 3.05; beta: 3.00 → net 49.95; VAT 9.4905 → 9.49
    assert totals(invoice) == ("49.95", "9.49", "59.44")


@pytest.mark.parametrize(
    ("country", "vat", "at", "treatment", "vat_country", "rate", "vat_due"),
    [
        pytest.param(
            "DE", VatCheck(vat_id="DE136695976", status="valid"), T,
            TaxTreatment.STANDARD, "DE", "0.19", "5.70", id="seller_country_with_a_vat_id",
        ),
        pytest.param(
            "AT", VatCheck(vat_id="ATU13585627", status="valid"), T,
            TaxTreatment.REVERSE_CHARGE, "AT", "0", "0.00", id="other_eu_business_valid_vat_id",
        ),
        pytest.param(
            "AT", VatCheck(vat_id="ATU13585627", status="unverified"), T,
            TaxTreatment.STANDARD, "AT", "0.20", "6.00", id="unverified_vat_id_vies_down",
        ),
        pytest.param(
            "FI", None, T,
            TaxTreatment.STANDARD, "FI", "0.255", "7.65", id="other_eu_consumer",
        ),
        pytest.param(
            "FI", None, dt("2024-08-31T12:00:00Z"),
            TaxTreatment.STANDARD, "FI", "0.24", "7.20", id="rate_in_force_on_the_anchor_day",
        ),
        pytest.param(
            "US", None, T,
            TaxTreatment.OUTSIDE_SCOPE, None, "0", "0.00", id="outside_the_eu",
        ),
    ],
)  # fmt: skip
def test_vat_follows_the_customers_country_vat_id_and_the_anchor_day(
    country: str,
    vat: VatCheck | None,
    at: datetime,
    treatment: TaxTreatment,
    vat_country: str | None,
    rate: str,
    vat_due: str,
) -> None:
    """VAT on 30.00 net: a customer in the seller's country pays the seller's rate, VAT ID or
    not; another EU state with a valid VAT ID is reverse charged (0 VAT, both VAT IDs on the
    invoice); an unverified VAT ID (VIES down) is charged like a consumer, who pays the
    standard rate of their own state in force on the anchor's day (FI 25.5 %, 24 % before
    2024-09-01); outside the EU no VAT and no VAT country."""
    invoice = price(
        make_order(item(seats=3)), make_account(country=country), at=at, vat=vat
    ).invoice
    assert invoice.tax_treatment is treatment
    assert (invoice.vat_country, invoice.vat_rate, invoice.vat) == (
        vat_country,
        Decimal(rate),
        Decimal(vat_due),
    )
    assert invoice.total == Decimal("30.00") + Decimal(vat_due)
    customer_vat_id = vat.vat_id if vat else None
    assert (invoice.customer_vat_id, invoice.seller_vat_id) == (customer_vat_id, "DE136695976")


# --- the shipped catalog -------------------------------------------------------------------------


def test_shipped_catalog_prices_the_contract_example() -> None:
    """5 seats Remote Support Standard annual for a German consumer: 1450.00 + 275.50 = 1725.50."""
    order = make_order(item("remote-support", "standard", seats=5, billing_cycle="annual"))
    invoice = price(order, catalog=load_catalog()).invoice
    (line,) = invoice.lines
    assert (line.unit_price, line.amount) == (Decimal("290.00"), Decimal("1450.00"))
    assert (line.period_start, line.period_end) == (T, dt("2027-11-26T10:15:00Z"))
    assert invoice.vat_rate == Decimal("0.19")
    assert totals(invoice) == ("1450.00", "275.50", "1725.50")


def test_shipped_catalog_seller_is_irish() -> None:
    """With the shipped catalog an Irish customer pays the Irish rate (23 %)."""
    order = make_order(item("meetings", "professional", seats=2))
    invoice = price(order, make_account(country="IE"), catalog=load_catalog()).invoice
    # 2 x 24.50 = 49.00; x 0.23 = 11.27
    assert (invoice.vat_country, invoice.vat, invoice.total) == (
        "IE",
        Decimal("11.27"),
        Decimal("60.27"),
    )


def test_shipped_catalog_device_backup_has_no_trial() -> None:
    """Device Backup ships with trial_days = 0: no trial."""
    order = make_order(item("device-backup", "essentials", mode="trial"))
    assert rejected(order, catalog=load_catalog()).reason is Reason.TRIAL_NOT_AVAILABLE


def test_shipped_catalog_trials() -> None:
    """Shipped trial lengths: Meetings 14 days, Password Vault 30 days."""
    catalog = load_catalog()
    order = make_order(
        item("meetings", "business", seats=3, mode="trial"),
        item("password-vault", "teams", seats=9, mode="trial"),
    )
    plan = price(order, catalog=catalog)
    assert [t.trial_end for t in plan.targets] == [T + timedelta(days=14), T + timedelta(days=30)]


def test_shipped_catalog_seat_limit() -> None:
    """Remote Support allows 500 seats, not 501."""
    catalog = load_catalog()
    ok = price(make_order(item("remote-support", "standard", seats=500)), catalog=catalog)
    assert ok.invoice.net == Decimal("14500.00")
    error = rejected(make_order(item("remote-support", "standard", seats=501)), catalog=catalog)
    assert error.reason is Reason.SEAT_LIMIT_EXCEEDED


# --- arithmetic properties over random orders ----------------------------------------------------

PRODUCTS = {"alpha": ("basic", "pro"), "beta": ("basic",), "gamma": ("basic",)}


@st.composite
def orders(draw: st.DrawFn) -> tuple[Order, Account, datetime]:
    # Anchors from the day the newest row of the VAT table took effect.
    anchor = draw(
        st.datetimes(
            min_value=datetime(2025, 8, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
        )
    ).replace(microsecond=0)
    chosen = draw(st.lists(st.sampled_from(sorted(PRODUCTS)), min_size=1, unique=True))
    items = []
    subscriptions = []
    for product in chosen:
        plan = draw(st.sampled_from(PRODUCTS[product]))
        seats = draw(st.integers(1, 5))
        cycle = draw(st.sampled_from(["monthly", "annual"]))
        items.append(item(product, plan, seats=seats, billing_cycle=cycle))
        if draw(st.booleans()):
            start = anchor - timedelta(seconds=draw(st.integers(0, 400 * 86400)))
            subscriptions.append(
                subscription(
                    product=product,
                    plan="basic",
                    seats=draw(st.integers(1, seats)),
                    billing_cycle=draw(st.sampled_from(["monthly", "annual"])),
                    current_period_start=start,
                    current_period_end=add_months(start, draw(st.sampled_from([1, 12]))),
                    period_amount=draw(st.decimals(min_value=0, max_value=30, places=2)),
                )
            )
    country = draw(st.sampled_from(["DE", "AT", "FI", "FR", "US", "CH"]))
    account = make_account(country=country, subscriptions=subscriptions)
    return make_order(*items), account, anchor


def price_unless_downgrade(order: Order, account: Account, anchor: datetime) -> CheckoutPlan | None:
    """The plan, or None for the refusals random changes may run into."""
    try:
        return price(order, account, at=anchor)
    except CheckoutRejected as error:
        # A change may cost less than its credit, or change nothing at all; nothing else fails.
        if error.reason not in (Reason.DOWNGRADE_NOT_SUPPORTED, Reason.INVALID_ORDER):
            raise
        return None


@given(orders())
def test_invoice_arithmetic_properties(case: tuple[Order, Account, datetime]) -> None:
    """For any order: cents everywhere, 0 ≤ credit ≤ paid, net = Σ line nets, VAT half up once."""
    order, account, anchor = case
    plan = price_unless_downgrade(order, account, anchor)
    assume(plan is not None)
    assert plan is not None
    invoice = plan.invoice
    paid = {s.product: s.period_amount for s in account.subscriptions}
    for line in invoice.lines:
        for money in (line.unit_price, line.amount, line.credit):
            assert money.as_tuple().exponent == -2
        assert line.amount == line.unit_price * line.seats
        assert Decimal(0) <= line.credit <= paid.get(line.product, Decimal(0))
        assert line.amount - line.credit >= 0
        assert line.period_end > line.period_start == anchor
    assert invoice.net == sum(line.amount - line.credit for line in invoice.lines)
    assert invoice.net.as_tuple().exponent == -2
    assert invoice.vat == half_up(Fraction(invoice.net) * Fraction(invoice.vat_rate))
    assert invoice.total - invoice.net == invoice.vat
    assert invoice.total == invoice.net + invoice.vat
