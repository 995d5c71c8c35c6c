"""VAT rules of docs/billing-rules.md: offline VAT ID validation, the four tax treatments, dated
rates."""

from __future__ import annotations

from datetime import UTC
from datetime import date
from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkout.models import TaxTreatment
from checkout.vat import EU_COUNTRIES
from checkout.vat import InvalidVatId
from checkout.vat import standard_rate
from checkout.vat import tax_treatment
from checkout.vat import validate_vat_id
from checkout.vat import vat_prefix

#: One valid VAT ID per member state (account country → ID), from python-stdnum's docstrings.
VALID_IDS = {
    "AT": "ATU13585627",
    "BE": "BE0428759497",
    "BG": "BG175074752",
    "CY": "CY10259033P",
    "CZ": "CZ25123891",
    "DE": "DE136695976",
    "DK": "DK13585628",
    "EE": "EE100594102",
    "ES": "ESB64717838",
    "FI": "FI20774740",
    "FR": "FR23334175221",
    "GR": "EL094259216",
    "HR": "HR33392005961",
    "HU": "HU12892312",
    "IE": "IE6433435F",
    "IT": "IT00743110157",
    "LT": "LT119511515",
    "LU": "LU15027442",
    "LV": "LV40003521600",
    "MT": "MT11679112",
    "NL": "NL004495445B01",
    "PL": "PL8567346215",
    "PT": "PT501964843",
    "RO": "RO18547290",
    "SE": "SE123456789701",
    "SI": "SI50223054",
    "SK": "SK2022749619",
}

#: The same IDs with one digit changed so that only the check digit is wrong.
WRONG_CHECK_DIGIT = {
    "AT": "ATU13585628",
    "BE": "BE0428759498",
    "BG": "BG175074753",
    "CY": "CY10259034P",
    "CZ": "CZ25123892",
    "DE": "DE136695977",
    "DK": "DK13585629",
    "EE": "EE100594103",
    "ES": "ESB64717839",
    "FI": "FI20774741",
    "FR": "FR23334175222",
    "GR": "EL094259217",
    "HR": "HR33392005962",
    "HU": "HU12892313",
    "IE": "IE6433436F",
    "IT": "IT00743110158",
    "LT": "LT119511516",
    "LU": "LU15027443",
    "LV": "LV40003521601",
    "MT": "MT11679113",
    "NL": "NL004495446B01",
    "PL": "PL8567346216",
    "PT": "PT501964844",
    "RO": "RO18547291",
    "SE": "SE123456789801",
    "SI": "SI50223055",
    "SK": "SK2022749610",
}

#: EU standard rates in force on 2026-01-01 (European Commission, "VAT rates applied in the
#: Member States"), written out independently of the module's table.
RATES_2026 = {
    "AT": "0.20",
    "BE": "0.21",
    "BG": "0.20",
    "CY": "0.19",
    "CZ": "0.21",
    "DE": "0.19",
    "DK": "0.25",
    "EE": "0.24",
    "ES": "0.21",
    "FI": "0.255",
    "FR": "0.20",
    "GR": "0.24",
    "HR": "0.25",
    "HU": "0.27",
    "IE": "0.23",
    "IT": "0.22",
    "LT": "0.21",
    "LU": "0.17",
    "LV": "0.21",
    "MT": "0.18",
    "NL": "0.21",
    "PL": "0.23",
    "PT": "0.23",
    "RO": "0.21",
    "SE": "0.25",
    "SI": "0.22",
    "SK": "0.23",
}

ON = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


def test_the_tables_cover_exactly_the_27_member_states() -> None:
    """EU_COUNTRIES is the 27 member states, Greece as GR (ISO), no UK, no EL, no XI."""
    assert len(EU_COUNTRIES) == 27
    assert set(VALID_IDS) == set(EU_COUNTRIES) == set(RATES_2026)
    assert "GB" not in EU_COUNTRIES
    assert "EL" not in EU_COUNTRIES
    assert "XI" not in EU_COUNTRIES  # Northern Ireland has VAT IDs of its own, but is no state


# --- VAT ID validation -------------------------------------------------------------------------


@pytest.mark.parametrize(("country", "vat_id"), sorted(VALID_IDS.items()))
def test_valid_vat_id_of_every_member_state_is_accepted(country: str, vat_id: str) -> None:
    """A valid VAT ID of each member state passes offline and comes back compact."""
    assert validate_vat_id(vat_id, country) == vat_id


@pytest.mark.parametrize(
    ("written", "country", "compact"),
    [
        ("de 136 695 976", "DE", "DE136695976"),
        ("DE-136.695.976", "DE", "DE136695976"),
        ("BE 428759497", "BE", "BE0428759497"),
        ("  EL 094259216 ", "GR", "EL094259216"),
        ("LU 150 274 42", "LU", "LU15027442"),
        ("nl4495445b01", "NL", "NL004495445B01"),
    ],
)
def test_vat_id_is_returned_in_compact_form(written: str, country: str, compact: str) -> None:
    """Spaces, dots, dashes and lower case are accepted and normalised to the compact form."""
    assert validate_vat_id(written, country) == compact


@pytest.mark.parametrize(("country", "vat_id"), sorted(WRONG_CHECK_DIGIT.items()))
def test_wrong_check_digit_is_invalid(country: str, vat_id: str) -> None:
    """A VAT ID whose check digit does not match is InvalidVatId, for every member state."""
    with pytest.raises(InvalidVatId, match="vat_id"):
        validate_vat_id(vat_id, country)


def test_greece_uses_the_el_prefix() -> None:
    """A Greek account (GR) needs an EL VAT ID; the GR prefix is refused."""
    assert vat_prefix("GR") == "EL"
    assert validate_vat_id("EL094259216", "GR") == "EL094259216"
    with pytest.raises(InvalidVatId, match="EL"):
        validate_vat_id("GR094259216", "GR")


def test_el_is_not_an_account_country() -> None:
    """Account countries are ISO codes: "EL" is not an EU account country."""
    with pytest.raises(InvalidVatId):
        validate_vat_id("EL094259216", "EL")


def test_vat_prefix_is_the_country_code_elsewhere() -> None:
    """Every member state but Greece uses its ISO code as the VAT prefix."""
    assert {vat_prefix(c) for c in EU_COUNTRIES - {"GR"}} == EU_COUNTRIES - {"GR"}


@pytest.mark.parametrize(
    ("vat_id", "country"),
    [
        ("DE136695976", "AT"),
        ("ATU13585627", "DE"),
        ("EL094259216", "CY"),
        ("IE6433435F", "GB"),
        ("FR23334175221", "BE"),
    ],
)
def test_prefix_must_match_the_account_country(vat_id: str, country: str) -> None:
    """A valid VAT ID of another country than the account's is InvalidVatId."""
    with pytest.raises(InvalidVatId):
        validate_vat_id(vat_id, country)


@pytest.mark.parametrize(
    ("vat_id", "country"),
    [
        ("DE136695976", "US"),
        ("CHE-116.281.710 MWST", "CH"),
        ("GB980780684", "GB"),
        ("XI980780684", "GB"),
        ("NO974760673MVA", "NO"),
    ],
)
def test_vat_id_for_a_non_eu_account_is_invalid(vat_id: str, country: str) -> None:
    """A VAT ID is only accepted for accounts in the EU."""
    with pytest.raises(InvalidVatId, match="EU"):
        validate_vat_id(vat_id, country)


@pytest.mark.parametrize(
    "vat_id",
    ["", "   ", "DE", "136695976", "DE13669597", "DE1366959761", "DEABCDEFGHI", "XX136695976"],
)
def test_malformed_vat_id_is_invalid(vat_id: str) -> None:
    """Missing prefix, wrong length, letters for digits or an unknown prefix are InvalidVatId."""
    with pytest.raises(InvalidVatId):
        validate_vat_id(vat_id, "DE")


@given(
    vat_id=st.text(max_size=24),
    country=st.sampled_from([*sorted(EU_COUNTRIES), "GB", "US", "CH", "EL", "XI"]),
)
def test_validation_either_returns_the_matching_compact_id_or_raises_invalid(
    vat_id: str, country: str
) -> None:
    """Whatever is typed, the result is a compact ID with the right prefix, or InvalidVatId."""
    try:
        compact = validate_vat_id(vat_id, country)
    except InvalidVatId:
        return
    assert country in EU_COUNTRIES
    assert compact.startswith(vat_prefix(country))
    assert compact == compact.strip().upper()
    assert " " not in compact


@given(country=st.sampled_from(sorted(EU_COUNTRIES)), digit=st.integers(0, 9))
def test_any_other_check_digit_is_invalid(country: str, digit: int) -> None:
    """Every wrong value of the check digit is caught, not only the one in WRONG_CHECK_DIGIT."""
    original, wrong = VALID_IDS[country], WRONG_CHECK_DIGIT[country]
    (index,) = [i for i, (a, b) in enumerate(zip(original, wrong, strict=True)) if a != b]
    mutated = original[:index] + str(digit) + original[index + 1 :]
    if mutated == original:
        assert validate_vat_id(mutated, country) == original
        return
    with pytest.raises(InvalidVatId):
        validate_vat_id(mutated, country)


# --- tax treatment -----------------------------------------------------------------------------


@pytest.mark.parametrize("vat_id", [True, False])
@pytest.mark.parametrize("country", ["US", "CH", "GB", "NO", "JP"])
def test_customer_outside_the_eu_is_outside_scope(country: str, vat_id: bool) -> None:
    """Outside the EU: outside_scope, 0 %, no VAT country."""
    decision = tax_treatment(
        seller_country="IE", customer_country=country, verified_vat_id=vat_id, on=ON
    )
    assert decision.treatment is TaxTreatment.OUTSIDE_SCOPE
    assert decision.rate == 0
    assert decision.country is None


@pytest.mark.parametrize("vat_id", [True, False])
def test_customer_in_the_seller_country_pays_the_seller_rate(vat_id: bool) -> None:
    """Same country as the seller: standard at the seller's rate, VAT ID or not."""
    decision = tax_treatment(
        seller_country="IE", customer_country="IE", verified_vat_id=vat_id, on=ON
    )
    assert decision.treatment is TaxTreatment.STANDARD
    assert (decision.country, decision.rate) == ("IE", Decimal("0.23"))


def test_other_eu_business_with_verified_vat_id_is_reverse_charge() -> None:
    """Another EU state with a valid VAT ID: reverse_charge at 0 %."""
    decision = tax_treatment(
        seller_country="IE", customer_country="DE", verified_vat_id=True, on=ON
    )
    assert decision.treatment is TaxTreatment.REVERSE_CHARGE
    assert decision.rate == 0
    assert decision.country == "DE"


@pytest.mark.parametrize(("country", "rate"), [("DE", "0.19"), ("FI", "0.255"), ("GR", "0.24")])
def test_other_eu_consumer_pays_the_customer_country_rate(country: str, rate: str) -> None:
    """Another EU state without a verified VAT ID: standard at the customer country's rate."""
    decision = tax_treatment(
        seller_country="IE", customer_country=country, verified_vat_id=False, on=ON
    )
    assert decision.treatment is TaxTreatment.STANDARD
    assert (decision.country, decision.rate) == (country, Decimal(rate))


def test_treatment_uses_the_rate_of_the_day() -> None:
    """The consumer rate is the one in force on the order's day (SK 20 % in 2024, 23 % in 2025)."""
    before = tax_treatment(
        seller_country="IE",
        customer_country="SK",
        verified_vat_id=False,
        on=datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    after = tax_treatment(
        seller_country="IE",
        customer_country="SK",
        verified_vat_id=False,
        on=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert (before.rate, after.rate) == (Decimal("0.20"), Decimal("0.23"))


# --- dated standard rates ----------------------------------------------------------------------


@pytest.mark.parametrize(("country", "rate"), sorted(RATES_2026.items()))
def test_standard_rate_of_every_member_state(country: str, rate: str) -> None:
    """Each member state's standard rate on 2026-01-01, quoted as an exact fraction."""
    found = standard_rate(country, date(2026, 1, 1))
    assert found == Decimal(rate)
    assert str(found) == rate


@pytest.mark.parametrize(
    ("country", "last_day_before", "first_day", "old", "new"),
    [
        ("FI", date(2024, 8, 31), date(2024, 9, 1), "0.24", "0.255"),
        ("SK", date(2024, 12, 31), date(2025, 1, 1), "0.20", "0.23"),
        ("EE", date(2025, 6, 30), date(2025, 7, 1), "0.22", "0.24"),
        ("RO", date(2025, 7, 31), date(2025, 8, 1), "0.19", "0.21"),
        ("SI", date(2013, 6, 30), date(2013, 7, 1), "0.20", "0.22"),
    ],
)
def test_standard_rate_picks_the_row_in_force_on_the_day(
    country: str, last_day_before: date, first_day: date, old: str, new: str
) -> None:
    """A rate change takes effect on its first day, not a day earlier or later."""
    assert standard_rate(country, last_day_before) == Decimal(old)
    assert standard_rate(country, first_day) == Decimal(new)


def test_standard_rate_accepts_a_datetime() -> None:
    """A timestamp is looked up by its (UTC) day."""
    assert standard_rate("FI", datetime(2024, 8, 31, 23, 59, 59, tzinfo=UTC)) == Decimal("0.24")
    assert standard_rate("FI", datetime(2024, 9, 1, 0, 0, tzinfo=UTC)) == Decimal("0.255")


@pytest.mark.parametrize("country", ["US", "CH", "GB", "EL", "XX", "", "de"])
def test_standard_rate_of_an_unknown_country_raises(country: str) -> None:
    """No rate is invented: a country that is not in the table raises LookupError."""
    with pytest.raises(LookupError):
        standard_rate(country, date(2026, 1, 1))


@given(
    country=st.sampled_from(sorted(EU_COUNTRIES)),
    day=st.dates(min_value=date(2025, 8, 1), max_value=date(2100, 1, 1)),
)
def test_every_member_state_has_a_plausible_rate_from_mid_2025(country: str, day: date) -> None:
    """From 2025-08-01 on, every member state has a rate between 15 % and 28 %."""
    rate = standard_rate(country, day)
    assert Decimal("0.15") <= rate <= Decimal("0.28")
