"""Small footguns of issue 12: a busy port for `ledger serve`, overlapping sessions in one
command, a JSON array sent as a command."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from click.testing import CliRunner

from ledger.cli import main
from tests.support.helpers import World, register, slot


def test_serve_on_a_busy_port_is_one_line_and_exit_2_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 's.db'}", "serve",
                                           "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == (f"Error: 127.0.0.1:{port} is in use (another server?); "
                                     "choose another with --host/--port")


def test_two_overlapping_sessions_in_one_register_name_each_other(
        world: World, manual_campaign: str) -> None:
    refused = world.refuse(register(manual_campaign, sessions=[slot(0, 2), slot(1, 2)]),
                           "session_overlap")
    error = refused["error"]
    assert error["details"] == {"overlaps": "sessions[0]"}
    assert error["message"].startswith("session overlaps sessions[0] of this command (")


def test_a_json_array_sent_as_a_command_says_so(tmp_path: Path) -> None:
    text = json.dumps([register()]) + "\n"
    result = CliRunner().invoke(main, ["--db", f"sqlite:///{tmp_path / 'a.db'}", "send", "-"],
                                input=text)
    assert result.exit_code == 2
    [refusal] = [json.loads(line) for line in result.stdout.splitlines()]
    assert refusal["line"] == 1
    assert refusal["error"]["message"] == ("a command is a JSON object, not an array; send one "
                                           "command per line (JSON Lines)")
