"""`ledger send` streams: each answer comes as its command arrives, lines split on `\\n`
only, bytes that are not UTF-8 are one line's refusal, and when its results cannot be
written it stops there and says where."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.support.helpers import MANUAL, NOW, Json, World, approve, create_campaign, register

ANSWER_TIMEOUT = 30.0  # seconds: a process start and a command, on a busy machine


def ledger_cli(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(), *args]


def jsonl(*commands: Json) -> bytes:
    return b"".join(json.dumps(c, ensure_ascii=False).encode() + b"\n" for c in commands)


class Coprocess:
    """`ledger send -` driven through pipes: `ask` writes one command and reads its answer."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(ledger_cli(url, "send", "-"), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.unread = b""

    def write(self, command: Json) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(jsonl(command))
        self.process.stdin.flush()

    def ask(self, command: Json) -> Json:
        self.write(command)
        return json.loads(self._line())

    def _line(self) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while b"\n" not in self.unread:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"no answer within {ANSWER_TIMEOUT:.0f}s: send waits for more input")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                pytest.fail(f"ledger send ended without an answer: {self.finish()}")
            self.unread += chunk
        line, _, self.unread = self.unread.partition(b"\n")
        return line

    def finish(self) -> tuple[int, str]:
        """Close its input; its exit status and what it said on stderr."""
        assert self.process.stdin is not None
        assert self.process.stderr is not None
        self.process.stdin.close()
        status = self.process.wait(ANSWER_TIMEOUT)
        return status, self.process.stderr.read().decode()


@pytest.fixture
def coprocess(world: World) -> Iterator[Coprocess]:
    running = Coprocess(world.url)
    yield running
    if running.process.poll() is None:
        running.process.kill()
    running.process.wait()


def send(world: World, data: bytes) -> tuple[int, list[Json]]:
    result = CliRunner().invoke(main, ["--db", world.url, "--now", NOW.isoformat(), "send", "-"],
                                input=data)
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def test_a_program_reads_each_result_before_it_writes_the_next_command(
        world: World, coprocess: Coprocess) -> None:
    assert coprocess.ask(create_campaign())["events"] == ["CampaignCreated"]
    registered = coprocess.ask(register())
    assert registered["events"] == ["Registered", "SessionAdded", "SessionAdded"]
    assert coprocess.ask(approve(registered["aggregate_id"]))["events"] == ["Approved"]
    assert coprocess.finish() == (0, "")


def test_a_u2028_inside_a_json_string_stays_in_its_line(world: World) -> None:
    name = "11.11\u2028Mega\u2029LIVE\x85Sale"
    status, results = send(world, jsonl(create_campaign(name=name)))
    assert (status, [r["ok"] for r in results]) == (0, [True])
    assert world.ledger.campaign(MANUAL).name == name


def test_a_line_that_is_not_utf8_is_that_lines_invalid_json_and_the_others_run(
        world: World) -> None:
    data = (jsonl(create_campaign()) + b'{"command": "register", "command_id": "caf\xe9"}\n'
            + jsonl(register()))
    status, results = send(world, data)
    assert status == 2
    assert [(r["ok"], r.get("line")) for r in results] == [(True, None), (False, 2), (True, None)]
    assert results[1]["command_id"] is None
    assert results[1]["error"]["code"] == "invalid_json"
    assert "not valid UTF-8" in results[1]["error"]["message"]


def test_pretty_printed_commands_may_follow_each_other_and_a_cut_off_line_spares_the_next(
        world: World) -> None:
    campaign = json.dumps(create_campaign(), indent=2)
    registration = json.dumps(register(), indent=2)
    other = register(seller_id="seller-2", account_id="shop-2")
    data = f'{campaign}\n\n{registration}\n{{"command": "approve",\n'.encode() + jsonl(other)
    status, results = send(world, data)
    cut_off = campaign.count("\n") + registration.count("\n") + 4
    assert status == 2
    assert [(r["ok"], r.get("line")) for r in results] == [
        (True, None), (True, None), (False, cut_off), (True, None)]
    assert results[2]["error"]["code"] == "invalid_json"


def test_results_that_cannot_be_written_stop_send_at_that_line(world: World) -> None:
    first, second = create_campaign(), register()
    with open("/dev/full", "wb") as full:
        sent = subprocess.run(ledger_cli(world.url, "send", "--group-size", "1", "-"),
                              input=jsonl(first, second), stdout=full, stderr=subprocess.PIPE,
                              timeout=60)
    assert sent.returncode == 2
    assert sent.stderr.decode() == (
        "Error: cannot write the results (No space left on device): stopped at input line 1: "
        "it and the lines before it were run and what they wrote is stored, but its result "
        "was not printed; no later line was run (sending the same input again is safe: "
        "stored commands come back as replays)\n")
    assert world.ledger.app.store.find_command(first["command_id"]) is not None
    assert world.ledger.app.store.find_command(second["command_id"]) is None


def test_results_that_cannot_be_written_name_the_group_that_was_run(world: World) -> None:
    first, second = create_campaign(), register()
    with open("/dev/full", "wb") as full:
        sent = subprocess.run(ledger_cli(world.url, "send", "-"), input=jsonl(first, second),
                              stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert sent.returncode == 2
    assert sent.stderr.decode() == (
        "Error: cannot write the results (No space left on device): stopped at input line 1: "
        "the lines up to line 2 (its group) were run and what they wrote is stored, but the "
        "results from line 1 on were not printed; no later line was run (sending the same "
        "input again is safe: stored commands come back as replays)\n")
    assert world.ledger.app.store.find_command(first["command_id"]) is not None
    assert world.ledger.app.store.find_command(second["command_id"]) is not None


def test_once_its_reader_closed_the_pipe_send_runs_nothing_more(
        world: World, coprocess: Coprocess) -> None:
    assert coprocess.ask(create_campaign())["ok"]
    assert coprocess.process.stdout is not None
    coprocess.process.stdout.close()  # the reader has read what it wanted (`| head -1`)
    later = register()
    coprocess.write(later)
    status, stderr = coprocess.finish()
    assert status == 2
    assert stderr == ("Error: cannot write the results (its reader closed the pipe): stopped "
                      "before input line 2: 1 command was run and the results written; "
                      "nothing from line 2 on was run\n")
    assert world.ledger.app.store.find_command(later["command_id"]) is None


def test_a_file_with_windows_line_ends_is_read_line_by_line(world: World, tmp_path: Path,
                                                          ) -> None:
    commands = tmp_path / "commands.jsonl"
    commands.write_bytes(jsonl(create_campaign(), register()).replace(b"\n", b"\r\n") + b"\r\n")
    result = CliRunner().invoke(main, ["--db", world.url, "--now", NOW.isoformat(), "send",
                                       str(commands)])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
