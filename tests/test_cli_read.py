"""The read-model commands: projections status/catch-up/rebuild, queries, export."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.support.helpers import json_lines
from tests.test_cli import CAMPAIGN, NOW, REGISTER


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    opts = ["--db", f"sqlite:///{tmp_path / 'read.db'}", "--now", NOW]
    sent = CliRunner().invoke(main, [*opts, "send", "-"],
                              input=json.dumps(CAMPAIGN) + "\n" + json.dumps(REGISTER) + "\n")
    assert sent.exit_code == 0, sent.output
    return opts


def run(opts: list[str], *args: str) -> str:
    result = CliRunner().invoke(main, [*opts, *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_the_lag_until_a_catch_up(store):
    before = [json.loads(line) for line in run(store, "projections", "status", "--json")
              .splitlines()]
    assert {row["lag"] for row in before} == {3}
    assert "caught up 3 events" in run(store, "projections", "catch-up")
    after = [json.loads(line) for line in run(store, "projections", "status", "--json")
             .splitlines()]
    assert {(row["position"], row["lag"]) for row in after} == {(3, 0)}


def test_rebuild_prints_a_summary_line(store):
    output = run(store, "projections", "rebuild", "manage_campaign")
    assert output.startswith("rebuilt manage_campaign: 3 events")


def test_an_unknown_read_model_name_is_refused_with_the_list(store):
    result = CliRunner().invoke(main, [*store, "projections", "catch-up", "nope"])
    assert result.exit_code == 2
    assert "unknown read model 'nope'; one of: manage_campaign" in result.output


def test_manage_with_fresh_shows_a_just_sent_registration_and_its_actions(store):
    rows = json_lines(run(store, "manage", "--seller", "seller-1", "--fresh", "--json"))
    assert [(r["campaign_id"], r["status"], r["actions"]) for r in rows] == [
        ("1111-mega-live", "under_review", ["cancel"])]
    assert rows[0]["sessions"][0]["session_id"] == "s1"


def test_manage_filters_by_status(store):
    assert json_lines(run(store, "manage", "--seller", "seller-1", "--status", "approved",
                          "--fresh", "--json")) == []


def test_campaigns_open_lists_campaigns_open_for_registration_now(store):
    rows = json_lines(run(store, "campaigns", "--open", "--fresh", "--json"))
    assert [(r["campaign_id"], r["status"]) for r in rows] == [
        ("1111-mega-live", "registration_open")]
    later = [*store[:2], "--now", "2026-11-20T00:00:00+07:00"]
    assert json_lines(run(later, "campaigns", "--open", "--json")) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_writes_a_read_model_table(store, fmt):
    run(store, "projections", "catch-up")
    output = run(store, "export", "manage_registrations", "--format", fmt)
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(output)))
    else:
        rows = [json.loads(line) for line in output.splitlines()]
    assert [(r["seller_id"], r["status"]) for r in rows] == [("seller-1", "under_review")]


def test_export_refuses_an_unknown_table(store):
    result = CliRunner().invoke(main, [*store, "export", "nope"])
    assert result.exit_code == 2
    assert "unknown table 'nope'" in result.output


def approve_and_report(opts: list[str]) -> None:
    registration_id = json_lines(run(opts, "manage", "--seller", "seller-1", "--fresh",
                                     "--json"))[0]["registration_id"]
    approve = {"command": "approve", "command_id": "ap-1",
               "actor": {"id": "rev-1", "role": "reviewer"},
               "payload": {"registration_id": registration_id}}
    report = {"command": "record_performance", "command_id": "pr-1",
              "actor": {"id": "perf", "role": "system"},
              "payload": {"registration_id": registration_id, "report_id": "r1",
                          "period_start": "2026-11-11T20:00:00+07:00",
                          "period_end": "2026-11-11T22:00:00+07:00", "currency": "THB",
                          "gmv": "1250.50", "orders": 3, "items_sold": 4, "buyers": 3,
                          "views": 900, "refunds": "0.50"}}
    for command, now in ((approve, NOW), (report, "2026-11-12T00:00:00+07:00")):
        result = CliRunner().invoke(main, [*opts[:2], "--now", now, "send", "-"],
                                    input=json.dumps(command))
        assert result.exit_code == 0, result.output


def test_performance_ytd_and_campaign_show_what_was_recorded(store):
    approve_and_report(store)
    ytd = json.loads(run(store, "performance", "ytd", "--seller", "seller-1", "--year", "2026",
                         "--fresh", "--json"))
    assert [(t["currency"], t["gmv"], t["refunds"]) for t in ytd["totals"]] == [
        ("THB", "1250.50", "0.50")]
    campaign = json.loads(run(store, "performance", "campaign", "1111-mega-live", "--fresh",
                              "--json"))
    assert campaign["registrations"]["by_status"] == {"approved": 1}
    assert [(d["day"], d["gmv"]) for d in campaign["days"]] == [("2026-11-11", "1250.50")]
    readable = run(store, "performance", "campaign", "1111-mega-live")
    assert "approval rate 1" in readable


def test_performance_of_an_unknown_campaign_is_one_error_line(store):
    result = CliRunner().invoke(main, [*store, "performance", "campaign", "nope", "--fresh"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: not_found: campaign 'nope'")


def test_decisions_lists_who_decided_what(store):
    approve_and_report(store)
    rows = json_lines(run(store, "decisions", "--reviewer", "rev-1", "--fresh", "--json"))
    assert [(r["decision"], r["session_ids"], r["reviewer_id"]) for r in rows] == [
        ("approved", ["s1"], "rev-1")]
    assert json_lines(run(store, "decisions", "--overrides", "--json")) == []
