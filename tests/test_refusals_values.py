"""DOMAIN.md's Values: money spelled as ASCII digits matched whole, instants with a zone in
[2000-01-01T00:00:00Z, 2200-01-01T00:00:00Z); anything else is `validation_error` naming the
field, and nothing is written. On both backends, in payloads and in the CLI's time options."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.support.helpers import (
    REG_CLOSES,
    STARTS,
    World,
    add_session,
    create_campaign,
    hours,
    iso,
    record_performance,
    register,
)

BAD_MONEY = {
    "Arabic-Indic digits": "١٢٣",
    "fullwidth digits": "\uff11\uff12\uff13.\uff15\uff10",  # 123.50
    "a trailing newline": "100\n",
    "negative zero": "-0",
    "negative zero with a fraction": "-0.00",
    "a leading plus": "+100",
    "a leading space": " 100",
    "a trailing space": "100 ",
    "an exponent": "1E3",
    "a comma": "12,50",
    "no digits before the point": ".5",
    "no digits after the point": "5.",
    "seven fraction digits": "1.0000001",
    "nineteen digits": "1" * 19,
    "empty": "",
    "an underscore": "1_000",
    "Bengali digits": "১০০",
    "a superscript digit": "1²",
}


@pytest.mark.parametrize("amount", BAD_MONEY.values(), ids=BAD_MONEY.keys())
def test_money_that_is_not_ascii_digits_matched_whole_is_refused_naming_the_field(
    world: World, approved_registration: str, amount: str
) -> None:
    world.at(STARTS + hours(3))
    result = world.refuse(record_performance(approved_registration, gmv=amount),
                          "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["payload.gmv"]


@pytest.mark.parametrize("amount", ["0", "000", "0.000000", "999999999999999999.999999",
                                    "125000.50"])
def test_money_of_ascii_digits_up_to_the_limits_is_accepted_exactly(
    world: World, approved_registration: str, amount: str
) -> None:
    world.at(STARTS + hours(3))
    world.accept(record_performance(approved_registration, refunds=amount))
    recorded = world.ledger.events_of(approved_registration)[-1]
    assert recorded.refunds == Decimal(amount)
    assert recorded.refunds.as_tuple() == Decimal(amount).as_tuple()  # its scale kept too


FAR_FUTURE = "9999-12-31T23:59:59-05:00"
YEAR_ONE = "0001-01-01T00:00:00+00:00"
OUT_OF_RANGE = {  # (the field, its value)
    "the end of year 9999, west of UTC": ("ends_at", FAR_FUTURE),
    "year 1": ("registration_opens_at", YEAR_ONE),
    "2200-01-01 exactly (the end is exclusive)": ("ends_at", "2200-01-01T00:00:00Z"),
    "2200 reached through the offset": ("ends_at", "2199-12-31T21:00:00-03:00"),
    "a second before 2000": ("registration_opens_at", "1999-12-31T23:59:59Z"),
    "2000 only in local time": ("registration_opens_at", "2000-01-01T03:00:00+07:00"),
}


@pytest.mark.parametrize(("field", "instant"), OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_campaign_time_outside_the_ledgers_range_is_refused_naming_the_field(
    world: World, field: str, instant: str
) -> None:
    result = world.refuse(create_campaign("out-of-range", **{field: instant}),
                          "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == [f"payload.{field}"]
    assert "2000-01-01T00:00:00Z" in result["error"]["details"][0]["message"]


@pytest.mark.parametrize(("instant", "why"), [
    ("2026-11-13T00:00:00", "no zone"),
    ("2026-11-13", "no zone"),
    ("2026-11-13T00:00:00+00:00:30", "an offset with seconds"),
    ("\uff12\uff10\uff12\uff16-11-13T00:00:00Z", "fullwidth digits"),
    ("2026-11-13T00:00:00Z\n", "a trailing newline"),
])
def test_a_campaign_time_that_is_not_iso_8601_with_a_zone_is_refused(
    world: World, instant: str, why: str
) -> None:
    result = world.refuse(create_campaign("bad-time", ends_at=instant), "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["payload.ends_at"], why


def test_the_range_edges_are_accepted_with_2000_inclusive_and_2200_exclusive(
    world: World
) -> None:
    world.accept(create_campaign("edges", registration_opens_at="2000-01-01T00:00:00Z",
                                 registration_closes_at=iso(REG_CLOSES),
                                 ends_at="2200-01-01T06:59:59.999999+07:00"))
    campaign = world.ledger.campaign("edges")
    assert campaign.ends_at.year == 2200  # local time; 2199-12-31T23:59:59.999999Z


def test_session_and_report_times_outside_the_range_are_refused_naming_the_field(
    world: World, approved_registration: str
) -> None:
    late = {"starts_at": iso(STARTS), "ends_at": FAR_FUTURE}
    result = world.refuse(register(account_id="shop-2", sessions=[late]), "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["payload.sessions.0.ends_at"]
    result = world.refuse(add_session(approved_registration, late), "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["payload.ends_at"]
    world.at(STARTS + hours(3))
    result = world.refuse(record_performance(approved_registration, period_start=YEAR_ONE),
                          "validation_error")
    assert [d["field"] for d in result["error"]["details"]] == ["payload.period_start"]


@pytest.mark.parametrize("options", [
    ["--now", FAR_FUTURE, "campaigns"],
    ["audit", "as-of", "mega-1111-live", "--at", YEAR_ONE],
    ["audit", "decisions", "--since", "2200-01-01T00:00:00Z"],
    ["audit", "decisions", "--until", "1999-12-31T23:59:59Z"],
], ids=["--now", "--at", "--since", "--until"])
def test_a_time_option_outside_the_range_is_a_validation_error_naming_the_option(
    world: World, options: list[str]
) -> None:
    result = CliRunner().invoke(main, ["--db", world.url, *options])
    assert result.exit_code == 2, result.output
    option = next(o for o in options if o.startswith("--"))
    assert f"Invalid value for '{option}': validation_error:" in result.output
    assert "must be between 2000-01-01T00:00:00Z (inclusive)" in result.output
