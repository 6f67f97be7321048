"""Every command that prints data takes --json, and its output then parses: one JSON
document for a single object, JSON Lines (one object per line) for a listing."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import click
import pytest

from ledger.cli import main
from tests.conftest import NewUrl
from tests.support.machine import CAMPAIGN, REGISTRATION, SCRIPT, SELLER, build, cli

# Commands that print no data: `serve` logs on stderr and answers over HTTP.
NO_DATA = {"serve"}

RESENT = json.dumps(SCRIPT[0][1][0])  # the first command again: its result, replayed

# Each command with --json: its arguments, and what it prints ("document" or "lines").
# Run in this order ({token} is the id `tokens add --json` printed).
WALK: dict[str, tuple[list[str], str]] = {
    "send": (["-"], "lines"),
    "show campaign": ([CAMPAIGN], "document"),
    "show registration": ([REGISTRATION], "document"),
    "events": ([REGISTRATION], "lines"),
    "projections status": ([], "lines"),
    "projections catch-up": ([], "document"),
    "projections rebuild": (["manage_campaign"], "document"),
    "projections verify": ([], "document"),
    "manage": (["--seller", SELLER], "lines"),
    "campaigns": ([], "lines"),
    "performance ytd": (["--seller", SELLER, "--year", "2026"], "document"),
    "performance campaign": ([CAMPAIGN], "document"),
    "decisions": ([], "lines"),
    "export": (["manage_registrations"], "lines"),
    "audit history": ([CAMPAIGN], "lines"),
    "audit as-of": ([REGISTRATION, "--version", "2"], "document"),
    "audit decisions": ([], "lines"),
    "audit findings": ([], "lines"),
    "audit verify": ([], "document"),
    "audit seal": ([], "document"),
    "audit seals": ([], "lines"),
    "tokens add": (["--role", "reviewer", "--id", "rev-walk"], "document"),
    "tokens list": ([], "lines"),
    "tokens revoke": (["{token}"], "document"),
}
ON_THEIR_OWN = {"demo", "projections run"}  # they need a store of their own: tests below
ON_THEIR_OWN |= {"sql"}  # reads Parquet exports: tests/test_export_parquet.py (--json too)


def leaves(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield from leaves(command, path + " ")
        else:
            yield path, command


def takes_json(command: click.Command) -> bool:
    return any("--json" in p.opts for p in command.params if isinstance(p, click.Option))


def test_every_command_that_prints_data_takes_json():
    commands = dict(leaves(main))
    assert set(commands) == set(WALK) | ON_THEIR_OWN | NO_DATA, "walk every new command too"
    assert [path for path, c in commands.items()
            if path not in NO_DATA and not takes_json(c)] == []


def parses(text: str, shape: str) -> list[dict[str, object]]:
    """The objects printed, asserting the shape the listing rule gives them."""
    if shape == "document":
        document = json.loads(text)
        assert isinstance(document, dict)
        return [document]
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "a listing printed nothing"
    assert all(isinstance(line, dict) for line in lines)
    return lines


def test_every_command_prints_json_that_parses_with_json(new_url: NewUrl):
    url = new_url()
    build(url)
    token = ""
    for path, (args, shape) in WALK.items():
        argv = [*path.split(), *(a.format(token=token) for a in args), "--json"]
        result = cli(url, *argv, input=RESENT if path == "send" else None)
        assert result.exit_code == 0, (path, result.output)
        printed = parses(result.stdout, shape)
        if path == "tokens add":
            token = str(printed[0]["id"])


def test_demo_json_prints_its_summary_as_one_document_and_talks_on_stderr(new_url: NewUrl):
    result = cli(new_url(), "demo", "--json")
    assert result.exit_code == 0, result.output
    [summary] = parses(result.stdout, "document")
    assert isinstance(summary["events"], int)
    assert summary["events"] > 0
    assert {c["campaign_id"] for c in summary["campaigns"]} >= {"1111-mega-live"}
    assert "store:" in result.stderr


def test_projections_run_json_prints_json_lines_as_it_advances_and_stops(new_url: NewUrl):
    url = new_url()
    build(url)
    follower = subprocess.Popen([sys.executable, "-m", "ledger", "--db", url, "projections",
                                 "run", "--json", "--interval", "0.05"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _readable_within(follower, 20.0), "run printed nothing"
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=20)
    assert follower.returncode == 0, err
    lines = parses(out, "lines")
    assert "advanced_to" in lines[0]
    assert set(lines[-1]) == {"stopped_at"}


def _readable_within(process: subprocess.Popen[str], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            return True
    return False


def test_export_json_is_format_jsonl(new_url: NewUrl):
    url = new_url()
    build(url)
    cli(url, "projections", "catch-up")
    as_json = cli(url, "export", "manage_campaigns", "--json")
    assert as_json.stdout == cli(url, "export", "manage_campaigns", "--format", "jsonl").stdout


@pytest.mark.parametrize("argv", [["export", "manage_campaigns", "--json", "--format", "csv"],
                                  ["audit", "decisions", "--json", "--format", "csv"]])
def test_json_beside_another_format_is_a_usage_error(tmp_path, argv: list[str]):
    refused = cli(f"sqlite:///{tmp_path / 'ledger.db'}", *argv)
    assert (refused.exit_code, refused.stdout) == (2, "")
    assert "--json" in refused.stderr
