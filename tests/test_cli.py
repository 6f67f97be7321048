"""The `ledger` command line: exit codes, one-line errors, help with examples, the demo."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ledger.cli import main

NOW = "2026-10-02T09:00:00+07:00"
CAMPAIGN = {
    "command": "create_campaign", "command_id": "cc-1", "actor": {"id": "ops", "role": "operator"},
    "payload": {
        "campaign_id": "1111-mega-live", "name": "11.11 Mega LIVE", "kind": "live",
        "review_mode": "manual", "registration_opens_at": "2026-10-01T00:00:00+07:00",
        "registration_closes_at": "2026-11-05T00:00:00+07:00",
        "starts_at": "2026-11-10T00:00:00+07:00", "ends_at": "2026-11-13T00:00:00+07:00",
        "levels": [{"code": "gold", "name": "Gold"}],
    },
}
REGISTER = {
    "command": "register", "command_id": "rg-1", "actor": {"id": "seller-1", "role": "seller"},
    "payload": {
        "campaign_id": "1111-mega-live", "seller_id": "seller-1", "account_id": "shop-1",
        "main_category": "fashion", "level": "gold",
        "profile": {"account_level": 3, "livestream_level": 2},
        "sessions": [{"starts_at": "2026-11-11T20:00:00+07:00",
                      "ends_at": "2026-11-11T22:00:00+07:00"}],
    },
}


@pytest.fixture
def cli(tmp_path: Path) -> tuple[CliRunner, list[str]]:
    return CliRunner(), ["--db", f"sqlite:///{tmp_path / 'cli.db'}", "--now", NOW]


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_send_prints_one_result_per_line_and_exits_0_when_all_are_accepted(cli):
    runner, opts = cli
    text = json.dumps(CAMPAIGN) + "\n" + json.dumps(REGISTER) + "\n"
    result = runner.invoke(main, [*opts, "send", "-"], input=text)
    assert result.exit_code == 0, result.output
    results = lines(result.output)
    assert [r["events"] for r in results] == [["CampaignCreated"], ["Registered", "SessionAdded"]]


def test_send_accepts_one_pretty_printed_command(cli):
    runner, opts = cli
    result = runner.invoke(main, [*opts, "send", "-"], input=json.dumps(CAMPAIGN, indent=2))
    assert result.exit_code == 0, result.output
    assert lines(result.output)[0]["aggregate_id"] == "1111-mega-live"


def test_send_exits_1_when_a_command_is_refused(cli):
    runner, opts = cli
    text = json.dumps(CAMPAIGN) + "\n" + json.dumps({**CAMPAIGN, "command_id": "cc-2"}) + "\n"
    result = runner.invoke(main, [*opts, "send", "-"], input=text)
    assert result.exit_code == 1
    refused = lines(result.output)[1]
    assert refused["error"]["code"] == "already_exists"
    assert refused["line"] == 2


def test_send_exits_2_on_unusable_input_and_says_which_line(cli):
    runner, opts = cli
    text = json.dumps(CAMPAIGN) + "\n{not json\n"
    result = runner.invoke(main, [*opts, "send", "-"], input=text)
    assert result.exit_code == 2
    bad = lines(result.output)[1]
    assert bad == {**bad, "ok": False, "command_id": None, "line": 2}
    assert bad["error"]["code"] == "invalid_json"


def test_send_reads_a_file(cli, tmp_path: Path):
    runner, opts = cli
    commands = tmp_path / "commands.jsonl"
    commands.write_text(json.dumps(CAMPAIGN) + "\n")
    result = runner.invoke(main, [*opts, "send", str(commands)])
    assert result.exit_code == 0, result.output


def test_show_and_events_print_the_stored_state(cli):
    runner, opts = cli
    sent = runner.invoke(main, [*opts, "send", "-"],
                         input=json.dumps(CAMPAIGN) + "\n" + json.dumps(REGISTER) + "\n")
    registration_id = lines(sent.output)[1]["aggregate_id"]
    campaign = json.loads(runner.invoke(main, [*opts, "show", "campaign", "1111-mega-live"]).output)
    assert (campaign["status"], campaign["registrations"]) == ("registration_open", 1)
    shown = runner.invoke(main, [*opts, "show", "registration", registration_id])
    state = json.loads(shown.output)
    assert state["status"] == "under_review"
    assert [s["session_id"] for s in state["sessions"]] == ["s1"]
    listed = runner.invoke(main, [*opts, "events", registration_id, "--json"])
    records = lines(listed.output)
    assert [(r["version"], r["type"], r["command_id"]) for r in records] == [
        (1, "Registered", "rg-1"), (2, "SessionAdded", "rg-1")]
    assert records[0]["actor"] == {"id": "seller-1", "role": "seller"}


def test_an_unknown_id_is_one_error_line_without_traceback(cli):
    runner, opts = cli
    result = runner.invoke(main, [*opts, "show", "campaign", "nope"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: not_found: campaign 'nope' not found"


def test_an_unreachable_postgres_is_one_line_naming_the_host():
    result = CliRunner().invoke(
        main, ["--db", "postgresql://postgres@127.0.0.1:1/ledger", "show", "campaign", "x"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "cannot reach PostgreSQL at 127.0.0.1:1" in result.output


def test_a_naive_now_is_refused():
    result = CliRunner().invoke(main, ["--now", "2026-11-11T20:00:00", "show", "campaign", "x"])
    assert result.exit_code == 2
    assert "timezone" in result.output


def test_demo_runs_a_season_and_summarises_it(tmp_path: Path):
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'demo.db'}", "demo"])
    assert result.exit_code == 0, result.output
    assert "11.11 Mega LIVE" in result.output
    assert "refused: session_overlap" in result.output
    assert "replayed" in result.output


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += all_commands(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize(("name", "command"), all_commands(main))
def test_every_command_has_help_with_an_example(name, command):
    text = command.help or ""
    assert text.strip(), f"{name} has no help"
    if not isinstance(command, click.Group):
        assert "Example" in text, f"{name}'s help has no example"


def test_a_lone_surrogate_in_a_command_is_echoed_as_an_escape_not_a_crash(cli):
    runner, opts = cli
    text = ('{"command": "approve", "command_id": "x\\ud800", "actor": {"id": "r", '
            '"role": "reviewer"}, "payload": {}}\n')
    result = runner.invoke(main, [*opts, "send", "-"], input=text)
    assert result.exit_code == 2, result.output
    assert "\\ud800" in result.output
    [refusal] = lines(result.output)
    assert refusal["command_id"] == "x\ud800"
    assert refusal["error"]["code"] == "validation_error"
