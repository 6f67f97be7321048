"""The YTD, campaign performance and review decisions read models, against what was sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.projections.campaign_performance import campaign_performance_report
from ledger.projections.decisions import decisions_report
from ledger.projections.registry import projector
from ledger.projections.runner import Projector
from ledger.projections.view import ViewMixin
from ledger.projections.ytd import ytd_report
from ledger.values import instant_text
from tests.support.helpers import (
    AUTO,
    BANGKOK,
    MANUAL,
    NOW,
    STARTS,
    World,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    hours,
    iso,
    profile,
    record_performance,
    register,
    register_auto,
    reject,
    slot,
    withdraw,
)

LONG = "year-end-live"  # runs from November 2026 into January 2027
AFTER_LONG = datetime(2027, 2, 1, tzinfo=UTC)


def caught_up(world: World, page: int = 1000) -> ViewMixin:
    read = projector(world.ledger.app, page=page)
    read.catch_up()
    return read.view


def report(world: World, registration_id: str, report_id: str, start: datetime,
           currency: str = "THB", gmv: str = "100.10", **fields: Any) -> None:
    world.accept(record_performance(registration_id, report_id=report_id, currency=currency,
                                    gmv=gmv, period=(start, start + hours(1)), **fields))


def joined(world: World, campaign_id: str, seller_id: str, account_id: str | None = None) -> str:
    """A manual registration of `seller_id`, approved."""
    registration_id = world.register(register(campaign_id, seller_id=seller_id,
                                              account_id=account_id or f"shop-{seller_id}"))
    world.accept(approve(registration_id))
    return registration_id


# YTD performance ---------------------------------------------------------------------------

def test_ytd_sums_each_month_and_each_currency_apart_in_the_report_s_own_offset(
    world: World,
) -> None:
    world.accept(create_campaign(LONG, ends_at=iso(datetime(2027, 1, 31, tzinfo=UTC))))
    registration_id = joined(world, LONG, "seller-1")
    world.at(AFTER_LONG)
    report(world, registration_id, "r1", STARTS, gmv="0.10", orders=3)
    report(world, registration_id, "r2", datetime(2026, 11, 20, tzinfo=UTC), gmv="0.20",
           orders=4)
    report(world, registration_id, "r3", datetime(2026, 12, 5, tzinfo=UTC), currency="USD",
           gmv="10.01")
    # 2026-12-31T18:00Z, but the seller reported it in +07:00: it is January 2027.
    report(world, registration_id, "r4", datetime(2027, 1, 1, 1, tzinfo=BANGKOK), gmv="7")

    view = caught_up(world)
    year = ytd_report(view, "seller-1", 2026)
    assert [(t["currency"], t["gmv"], t["orders"], t["reports"]) for t in year["totals"]] == [
        ("THB", "0.30", 7, 2), ("USD", "10.01", 412, 1)]
    assert [(m["month"], m["currency"], m["gmv"]) for m in year["months"]] == [
        (11, "THB", "0.30"), (12, "USD", "10.01")]
    assert [(c["campaign_id"], c["currency"], c["gmv"]) for c in year["campaigns"]] == [
        (LONG, "THB", "0.30"), (LONG, "USD", "10.01")]
    assert year["campaigns_joined"] == 1
    next_year = ytd_report(view, "seller-1", 2027)
    assert [(m["month"], m["gmv"]) for m in next_year["months"]] == [(1, "7")]
    assert next_year["campaigns_joined"] == 0  # joined by the year the campaign starts


def test_ytd_counts_a_campaign_joined_once_and_not_when_never_approved(world: World) -> None:
    world.accept(create_campaign())
    world.accept(create_campaign("second-live"))
    joined(world, MANUAL, "seller-1")
    second = joined(world, "second-live", "seller-1", account_id="shop-other")
    world.register(register(MANUAL, seller_id="seller-1", account_id="shop-third",
                            sessions=[slot(30)]))  # never decided
    world.accept(add_session(second, slot(40), seller_id="seller-1"))
    world.accept(approve(second, ["s3"]))  # a second approval joins nothing new

    year = ytd_report(caught_up(world), "seller-1", 2026)
    assert year["campaigns_joined"] == 2
    assert [(j["campaign_id"], j["registrations"]) for j in year["joined"]] == [
        (MANUAL, 1), ("second-live", 1)]
    assert year["totals"] == []
    assert year["months"] == []


# Campaign performance ----------------------------------------------------------------------

def test_campaign_performance_counts_statuses_and_the_approval_rate_of_decided_ones(
    world: World,
) -> None:
    world.accept(create_campaign())
    approved = joined(world, MANUAL, "seller-a")
    rejected = world.register(register(seller_id="seller-b", account_id="shop-b"))
    world.accept(reject(rejected))
    second_try = world.register(register(seller_id="seller-c", account_id="shop-c"))
    world.accept(reject(second_try, ["s1"]))
    world.accept(approve(second_try, ["s2"]))
    withdrawn = world.register(register(seller_id="seller-d", account_id="shop-d"))
    world.accept(withdraw(withdrawn, seller_id="seller-d"))  # never decided: not counted

    world.at(STARTS + hours(30))
    # 2026-11-11T01:00+07:00 is the 10th in UTC: the day is the report's own.
    report(world, approved, "a1", datetime(2026, 11, 11, 1, tzinfo=BANGKOK), gmv="10.05")
    report(world, second_try, "c1", STARTS + hours(2), gmv="20.10")
    report(world, second_try, "c2", STARTS + hours(3), currency="USD", gmv="1.50")

    result = campaign_performance_report(caught_up(world), MANUAL)
    assert result["registrations"] == {"total": 4, "by_status": {
        "approved": 2, "rejected": 1, "withdrawn": 1}}
    assert result["approval"] == {"decided": 3, "approved": 2, "approval_rate": "0.6667"}
    assert [(t["currency"], t["gmv"]) for t in result["totals"]] == [
        ("THB", "30.15"), ("USD", "1.50")]
    assert [(d["day"], d["currency"], d["gmv"]) for d in result["days"]] == [
        ("2026-11-10", "THB", "20.10"), ("2026-11-10", "USD", "1.50"),
        ("2026-11-11", "THB", "10.05")]
    assert [(s["seller_id"], s["currency"], s["gmv"]) for s in result["sellers"]] == [
        ("seller-a", "THB", "10.05"), ("seller-c", "THB", "20.10"), ("seller-c", "USD", "1.50")]
    # The hour the period starts in, spelt in UTC (Bangkok's 01:00 is 18:00Z the day before).
    assert [(h["hour"], h["currency"], h["gmv"]) for h in result["hours"]] == [
        ("2026-11-10T02:00:00Z", "THB", "20.10"), ("2026-11-10T03:00:00Z", "USD", "1.50"),
        ("2026-11-10T18:00:00Z", "THB", "10.05")]


@pytest.mark.parametrize("page", [1, 1000])
def test_reports_of_one_instant_in_two_offsets_count_on_each_report_s_own_day(
    world: World, page: int,
) -> None:
    """Two sellers of one campaign report the hour starting at 2026-11-10T18:00Z, one in
    +07:00 (the 11th for that seller): one hour row, two days, whatever the pages."""
    world.accept(create_campaign())
    bangkok = joined(world, MANUAL, "seller-a")
    utc = joined(world, MANUAL, "seller-b", account_id="shop-b")
    world.at(STARTS + hours(30))
    report(world, bangkok, "a1", datetime(2026, 11, 11, 1, tzinfo=BANGKOK), gmv="10.05")
    report(world, utc, "b1", datetime(2026, 11, 10, 18, tzinfo=UTC), gmv="1.5")
    report(world, bangkok, "a2", datetime(2026, 11, 11, 1, 30, tzinfo=BANGKOK), gmv="2")

    result = campaign_performance_report(caught_up(world, page), MANUAL)
    assert [(d["day"], d["gmv"], d["reports"]) for d in result["days"]] == [
        ("2026-11-10", "1.5", 1), ("2026-11-11", "12.05", 2)]
    assert [(h["hour"], h["gmv"], h["reports"]) for h in result["hours"]] == [
        ("2026-11-10T18:00:00Z", "13.55", 3)]
    assert [(s["seller_id"], s["gmv"]) for s in result["sellers"]] == [
        ("seller-a", "12.05"), ("seller-b", "1.5")]


def test_the_system_s_auto_decisions_count_in_the_approval_rate(world: World) -> None:
    world.accept(create_auto_campaign())
    world.register(register_auto(seller_id="seller-a", account_id="shop-a"))
    world.register(register_auto(seller_id="seller-b", account_id="shop-b",
                                 profile_=profile(account_level=1)))

    result = campaign_performance_report(caught_up(world), AUTO)
    assert result["registrations"]["by_status"] == {"approved": 1, "rejected": 1}
    assert result["approval"]["approval_rate"] == "0.5000"


# Review decisions --------------------------------------------------------------------------

def test_decisions_record_the_reviewer_the_override_and_the_time_since_submission(
    world: World,
) -> None:
    world.accept(create_campaign())
    world.accept(create_auto_campaign())
    registration_id = world.register(register(profile_=profile(account_level=1)))
    world.at(NOW + hours(1))
    world.accept(add_session(registration_id, slot(30)))
    world.at(NOW + hours(3))
    world.accept(approve(registration_id, ["s3"], override_reason="top seller last year"))
    world.at(NOW + hours(5))
    world.accept(reject(registration_id, ["s1", "s2"], reasons=["capacity_full"]))
    world.register(register_auto(seller_id="seller-2", account_id="shop-2"))

    view = caught_up(world)
    rows = decisions_report(view, reviewer="rev-bao")
    assert [(r["decision"], r["session_ids"], r["override_reason"], r["reasons"],
             r["seconds_to_decide"]) for r in rows] == [
        ("approved", ["s3"], "top seller last year", [], 7200),
        ("rejected", ["s1", "s2"], None, ["capacity_full"], 18000)]
    assert rows[0]["failed_criteria"] == ["min_account_level"]
    assert rows[0]["submitted_at"] == instant_text(NOW + hours(1))
    assert [r["version"] for r in decisions_report(view, overrides_only=True)] == [
        rows[0]["version"]]
    (auto,) = decisions_report(view, reviewer="system")
    assert (auto["campaign_id"], auto["reviewer_role"], auto["decision"],
            auto["seconds_to_decide"]) == (AUTO, "system", "approved", 0)
    assert len(decisions_report(view, campaign_id=MANUAL)) == 2


# Rebuild -----------------------------------------------------------------------------------

def everything(view: ViewMixin, seller_id: str, campaign_id: str) -> list[Any]:
    return [ytd_report(view, seller_id, 2026), campaign_performance_report(view, campaign_id),
            decisions_report(view)]


@pytest.mark.parametrize("page", [1, 3])
def test_a_rebuild_gives_what_catching_up_page_by_page_gave(world: World, page: int) -> None:
    world.accept(create_campaign())
    first = joined(world, MANUAL, "seller-1")
    second = world.register(register(seller_id="seller-2", account_id="shop-2"))
    world.accept(reject(second, ["s1"]))
    world.at(STARTS + hours(30))
    for n in range(4):
        report(world, first, f"r{n}", STARTS + hours(n), currency=("THB", "USD")[n % 2])

    read: Projector = projector(world.ledger.app, page=page)
    read.catch_up()
    caught = everything(read.view, "seller-1", MANUAL)
    assert caught[0]["totals"][0]["gmv"] == "200.20"
    read.rebuild()
    assert everything(read.view, "seller-1", MANUAL) == caught
