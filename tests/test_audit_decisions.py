"""`ledger audit decisions` and `ledger audit findings`: every decision with the facts it
was made on, and the decisions an auditor should look at, replayed from the store."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from ledger.audit.decisions import Filters, decisions, findings
from ledger.cli import main
from ledger.projections.decisions import decisions_report
from ledger.projections.registry import projector
from ledger.values import instant_text, jsonable
from tests.support.helpers import (
    AUTO,
    ENDS,
    MANUAL,
    NOW,
    STARTS,
    World,
    approve,
    hours,
    profile,
    register,
    register_auto,
    reject,
)

DAY = NOW + hours(24)
CAM = {"id": "rev-cam", "role": "reviewer"}


def audit(world: World, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", world.url, "audit", *args])


def joined(world: World, seller_id: str, campaign_id: str = MANUAL, **kwargs: Any) -> str:
    build = register_auto if campaign_id == AUTO else register
    return world.register(build(campaign_id, seller_id=seller_id,
                                account_id=f"shop-{seller_id}", **kwargs))


@pytest.fixture
def season(world: World, manual_campaign: str, auto_campaign: str) -> dict[str, str]:
    """Sellers registered at NOW, then decided: seller → registration id."""
    ids = {s: joined(world, s) for s in ("clean", "vague", "specific", "started", "late",
                                         "self")}
    ids["override"] = joined(world, "weak", profile_=profile(account_level=1))
    ids["auto-ok"] = joined(world, "auto-ok", AUTO)
    ids["auto-low"] = joined(world, "auto-low", AUTO, profile_=profile(livestream_level=1))
    world.at(DAY)
    world.accept(approve(ids["clean"]))
    world.accept(approve(ids["override"], override_reason="top seller last quarter"))
    world.accept(approve(ids["self"], actor={"id": "self", "role": "reviewer"}))
    world.at(DAY + hours(24))
    world.accept(reject(ids["vague"], reasons=["other"], actor=CAM))
    world.accept(reject(ids["specific"], reasons=["other", "capacity_full"], actor=CAM))
    world.at(STARTS + hours(0.5))  # s1 (hour 0) has started, s2 (hour 2) has not
    world.accept(approve(ids["started"]))
    world.at(ENDS + hours(1))
    world.accept(reject(ids["late"]))
    return ids


# Decisions ----------------------------------------------------------------------------------

def test_each_decision_carries_the_facts_it_was_made_on(
    world: World, season: dict[str, str]
) -> None:
    row = next(r for r in decisions(world.ledger) if r["registration_id"] == season["override"])
    assert row["profile"] == {"account_level": 1, "livestream_level": 5}
    assert [c["criterion"] for c in row["eligibility"] if not c["passed"]] == [
        "min_account_level"]
    assert row["requirements"]["min_account_level"] == 2
    assert row["override_reason"] == "top seller last quarter"
    assert [s["session_id"] for s in row["sessions"]] == ["s1", "s2"]
    assert row["sessions"][0]["starts_at"] == STARTS
    assert (row["reviewer_id"], row["seconds_to_decide"]) == ("rev-bao", 24 * 3600)


def test_decisions_agree_with_the_review_decisions_read_model(
    world: World, season: dict[str, str]
) -> None:
    read = projector(world.ledger.app)
    read.catch_up()
    modelled = {(r["registration_id"], r["version"]): r for r in decisions_report(read.view)}
    replayed = [jsonable(r) for r in decisions(world.ledger)]
    assert len(replayed) == len(modelled) == 9
    for row in replayed:
        expected = modelled[(row["registration_id"], row["version"])]
        assert {k: row[k] for k in expected} == expected


@pytest.mark.parametrize(("filters", "sellers"), [
    (Filters(reviewer="rev-cam"), {"vague", "specific"}),
    (Filters(campaign=AUTO), {"auto-ok", "auto-low"}),
    (Filters(auto=True), {"auto-ok", "auto-low"}),
    (Filters(overrides=True), {"weak"}),
    (Filters(since=DAY + hours(24), until=ENDS), {"vague", "specific", "started"}),
    (Filters(until=DAY), {"auto-ok", "auto-low"}),
])
def test_decisions_can_be_filtered(
    world: World, season: dict[str, str], filters: Filters, sellers: set[str]
) -> None:
    assert {row["seller_id"] for row in decisions(world.ledger, filters)} == sellers


def test_decisions_as_csv_have_one_row_per_decision_with_nested_values_as_json(
    world: World, season: dict[str, str]
) -> None:
    result = audit(world, "decisions", "--campaign", MANUAL, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 7
    override = next(r for r in rows if r["seller_id"] == "weak")
    assert json.loads(override["profile"]) == {"account_level": 1, "livestream_level": 5}
    assert json.loads(override["session_ids"]) == ["s1", "s2"]


def test_decisions_as_json_and_as_a_table(world: World, season: dict[str, str]) -> None:
    as_json = audit(world, "decisions", "--reviewer", "rev-cam", "--json")
    assert as_json.exit_code == 0, as_json.output
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [(r["seller_id"], r["reasons"]) for r in rows] == [
        ("vague", ["other"]), ("specific", ["other", "capacity_full"])]
    readable = audit(world, "decisions", "--overrides")
    assert readable.exit_code == 0, readable.output
    assert "top seller last quarter" in readable.output
    assert "min_account_level" in readable.output


# Findings -----------------------------------------------------------------------------------

def test_findings_catch_each_case_and_not_the_clean_decisions(
    world: World, season: dict[str, str]
) -> None:
    found = {(f["finding"], f["seller_id"]) for f in findings(world.ledger)}
    assert found == {
        ("override", "weak"),
        ("rejection_without_specific_reason", "vague"),
        ("own_registration", "self"),
        ("session_already_started", "started"),
        ("session_already_started", "late"),
        ("after_campaign_end", "late"),
    }


def test_each_finding_comes_with_its_evidence(world: World, season: dict[str, str]) -> None:
    by_case = {f["finding"]: f["evidence"] for f in findings(world.ledger)
               if f["seller_id"] != "late"}
    assert by_case["override"]["override_reason"] == "top seller last quarter"
    assert by_case["override"]["failed_criteria"][0]["actual"] == 1
    assert [s["session_id"] for s in by_case["session_already_started"]["started_sessions"]
            ] == ["s1"]
    assert by_case["rejection_without_specific_reason"]["reasons"] == ["other"]
    assert by_case["own_registration"]["reviewer_id"] == "self"


def test_findings_json_and_table(world: World, season: dict[str, str]) -> None:
    as_json = audit(world, "findings", "--json")
    assert as_json.exit_code == 0, as_json.output
    late = [json.loads(line) for line in as_json.output.splitlines()
            if json.loads(line)["finding"] == "after_campaign_end"]
    assert late[0]["evidence"] == {"decided_at": instant_text(ENDS + hours(1)),
                                   "campaign_ends_at": instant_text(ENDS)}
    readable = audit(world, "findings", "--reviewer", "rev-cam")
    assert readable.exit_code == 0, readable.output
    assert readable.output.splitlines()[1].startswith("rejection_without_specific_reason")
