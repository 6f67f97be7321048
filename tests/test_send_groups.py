"""`ledger send` commits in groups: the same results as one at a time, answers while the
input pauses, whole commands after kill -9, an outage named at the group's first line, and
a progress bar only for a person watching a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.cli import main
from tests.conftest import POSTGRES_URL, NewUrl
from tests.reliability.test_crash_writes import assert_stored, assert_whole, command_rows
from tests.reliability.test_outage import dedicated_database, refused, write_locked
from tests.support.helpers import (
    ACCOUNT,
    AUTO,
    MANUAL,
    NOW,
    STARTS,
    Json,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    expire_campaign,
    hours,
    record_performance,
    register,
    register_auto,
    reject,
    slot,
    withdraw,
)
from tests.test_send_stream import Coprocess, jsonl, ledger_cli

REG = str(registration_uuid(MANUAL, ACCOUNT))
OTHER = str(registration_uuid(MANUAL, "shop-2"))
TIMEOUT = 120  # seconds for a child `ledger send` on a busy machine


def mixed() -> bytes:
    """A season's worth of everything: accepted, refused, replayed, reused and unusable
    lines, several commands on one aggregate next to each other."""
    first = register()
    refused_then_again = approve(str(registration_uuid(MANUAL, "nobody")))
    reused = approve(REG, ["s1"], note="ok")
    return b"".join([
        jsonl(create_campaign(), create_auto_campaign(), first,
              register(seller_id="seller-2", account_id="shop-2"),
              register(account_id=ACCOUNT),  # already_registered
              approve(REG, ["s1"], note="ok"), reject(REG, ["s2"]),
              add_session(OTHER, slot(5), seller_id="seller-2"),
              first,  # a replay of line 3
              refused_then_again, refused_then_again,  # not_found twice: refusals write nothing
              {**reused, "command_id": first["command_id"]}),  # command_id_reused
        b'{"command": "approve", "command_id": \n',  # invalid_json
        b'{"command": "register", "command_id": "caf\xe9"}\n',  # not UTF-8
        jsonl({**register_auto(AUTO, seller_id="seller-3", account_id="shop-3"),
               "actor": {"id": "seller-3"}},  # validation_error
              register_auto(AUTO, seller_id="seller-3", account_id="shop-3"),
              withdraw(OTHER, ["s2"], seller_id="seller-2"),
              record_performance(REG, period=(STARTS, STARTS + hours(1))),
              expire_campaign(),  # refused: registration is still open
              add_session(REG, slot(8)), approve(REG, ["s3"])),
    ])


def send_file(url: str, path: Path, *options: str) -> tuple[int, list[Json]]:
    sent = CliRunner().invoke(main, ["--db", url, "--now", NOW.isoformat(), "send", *options,
                                     str(path)])
    assert sent.exception is None or isinstance(sent.exception, SystemExit), sent.output
    return sent.exit_code, [json.loads(line) for line in sent.stdout.splitlines()]


def without_position(results: list[Json]) -> list[Json]:
    return [{k: v for k, v in r.items() if k != "position"} for r in results]


def events_of(url: str, ids: set[str]) -> dict[str, str]:
    return {i: CliRunner().invoke(main, ["--db", url, "events", i, "--json"]).stdout
            for i in sorted(ids)}


def test_grouped_send_prints_what_one_at_a_time_prints(new_url: NewUrl, tmp_path: Path) -> None:
    path = tmp_path / "season.jsonl"
    path.write_bytes(mixed())
    runs = {options: (url := new_url(), send_file(url, path, *options))
            for options in [(), ("--group-size", "4"), ("--group-size", "1")]}
    (one_url, (status, one_by_one)) = runs[("--group-size", "1")]
    codes = [("replayed" if r["replayed"] else "ok") if r["ok"] else r["error"]["code"]
             for r in one_by_one]
    reasons = [r["error"]["details"].get("reason") for r in one_by_one
               if not r["ok"] and isinstance(r["error"]["details"], dict)]
    assert status == 2
    assert codes.count("already_registered") == 1
    assert reasons.count("command_id_reused") == 1
    assert {"replayed", "not_found", "invalid_json", "validation_error"} <= set(codes)
    assert codes.count("ok") >= 10, codes
    aggregates = {str(r["aggregate_id"]) for r in one_by_one if r["ok"]}
    for options, (url, (grouped_status, grouped)) in runs.items():
        assert grouped_status == status, options
        assert without_position(grouped) == without_position(one_by_one), options
        assert events_of(url, aggregates) == events_of(one_url, aggregates), options
        verified = CliRunner().invoke(main, ["--db", url, "audit", "verify"])
        assert verified.exit_code == 0, verified.output


def test_results_stream_while_the_writer_pauses(new_url: NewUrl) -> None:
    writer = Coprocess(new_url())
    try:
        writer.write(create_campaign())
        writer.write(register())
        # The writer now waits: both answers come though a group of 200 is not full.
        first, second = json.loads(writer._line()), json.loads(writer._line())
        assert (first["events"], second["events"]) == (
            ["CampaignCreated"], ["Registered", "SessionAdded", "SessionAdded"])
        assert writer.ask(approve(second["aggregate_id"]))["events"] == ["Approved"]
        assert writer.finish() == (0, "")
    finally:
        if writer.process.poll() is None:
            writer.process.kill()
        writer.process.wait()


def test_a_later_group_of_send_sees_what_another_writer_did_after_the_earlier_one(
        new_url: NewUrl) -> None:
    """`ledger send` keeps the aggregates its groups committed for its next groups only
    while the store still holds them at that version: a session added by another writer
    in between is seen (approved, at the version after it), not decided on stale state."""
    url = new_url()
    writer = Coprocess(url)
    try:
        writer.ask(create_campaign())
        reg = writer.ask(register())["aggregate_id"]
        assert writer.ask(add_session(reg, slot(5)))["version"] == 4  # s3, kept by send
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as other:
            assert other.send(add_session(reg, slot(8)))["version"] == 5  # s4
        approved = writer.ask(approve(reg, ["s4"]))
        assert (approved["ok"], approved["version"]) == (True, 6), approved
        assert writer.finish() == (0, "")
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            assert ledger.registration(reg).sessions["s4"].status == "approved"
    finally:
        if writer.process.poll() is None:
            writer.process.kill()
        writer.process.wait()


def test_send_stops_cleanly_while_its_writer_still_holds_the_pipe_open(
        new_url: NewUrl) -> None:
    with open("/dev/full", "wb") as full:
        writer = subprocess.Popen(ledger_cli(new_url(), "send", "-"), stdin=subprocess.PIPE,
                                  stdout=full, stderr=subprocess.PIPE)
    assert writer.stdin is not None
    assert writer.stderr is not None
    try:
        writer.stdin.write(jsonl(create_campaign()))
        writer.stdin.flush()  # and the input stays open: the reader thread waits in a read
        assert writer.wait(TIMEOUT) == 2
        stderr = writer.stderr.read().decode()
    finally:
        writer.stdin.close()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert stderr.startswith("Error: cannot write the results (No space left on device)")
    assert stderr.count("\n") == 1, stderr  # no "Fatal Python error" from the reader thread


# kill -9 ----------------------------------------------------------------------------------

def feed(registrations: int, *, more: bool = True) -> list[Json]:
    """A campaign and its registrations; with `more`, then a session added to each and
    each approved (several commands per aggregate, spread over many groups)."""
    people = [register(seller_id=f"seller-{n}", account_id=f"shop-{n}", sessions=[slot(0)])
              for n in range(registrations)]
    ids = [str(registration_uuid(MANUAL, f"shop-{n}")) for n in range(registrations)]
    later = [*(add_session(i, slot(3), seller_id=f"seller-{n}") for n, i in enumerate(ids)),
             *(approve(i) for i in ids)] if more else []
    commands = [create_campaign(), *people, *later]
    for n, cmd in enumerate(commands):
        cmd["command_id"] = f"feed-{n:05d}"
    return commands


def test_kill_9_mid_file_then_resend_leaves_every_command_whole_once(
        new_url: NewUrl, tmp_path: Path) -> None:
    url = new_url()
    commands = feed(300)
    path = tmp_path / "feed.jsonl"
    path.write_bytes(jsonl(*commands))
    writer = subprocess.Popen(ledger_cli(url, "send", "--group-size", "50", str(path)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None
    printed = [json.loads(writer.stdout.readline())]  # the first group is stored
    time.sleep(0.3)  # and the kill lands in a later one
    writer.send_signal(signal.SIGKILL)
    printed.extend(json.loads(line) for line in writer.stdout if line.endswith(b"\n"))
    assert writer.wait(TIMEOUT) == -signal.SIGKILL
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        stored = assert_whole(url, ledger)
    assert_stored({r["command_id"]: r for r in printed}, stored)
    assert 0 < len(stored) < len(commands), "the kill landed before or after the feed"

    again = subprocess.run(ledger_cli(url, "send", str(path)), capture_output=True,
                           timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr
    resent = [json.loads(line) for line in again.stdout.splitlines()]
    assert [r["replayed"] for r in resent] == [r["command_id"] in stored for r in resent]
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        after = assert_whole(url, ledger)
    assert set(after) == {c["command_id"] for c in commands}


# Outage -----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outage(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A store URL and a context manager that makes the store unavailable for its block."""
    if request.param == "sqlite":
        monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", "1")
        path = tmp_path / "ledger.db"
        yield f"sqlite:///{path}", lambda: write_locked(path)
        return
    with dedicated_database() as (name, url), \
            psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        yield url, lambda: refused(admin, name)


def test_an_outage_names_the_first_line_of_the_group_that_was_not_committed(
        outage: tuple[str, Any]) -> None:
    url, unavailable = outage
    commands = feed(5, more=False)  # a campaign and five registrations
    writer = subprocess.Popen(ledger_cli(url, "send", "--group-size", "3",
                                         "--group-wait-ms", "10000", "-"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert writer.stdin is not None
    assert writer.stdout is not None
    assert writer.stderr is not None
    try:
        writer.stdin.write(jsonl(*commands[:3]))
        writer.stdin.flush()
        assert [json.loads(writer.stdout.readline())["ok"] for _ in range(3)] == [True] * 3
        with unavailable():
            writer.stdin.write(jsonl(*commands[3:]))
            writer.stdin.close()
            assert writer.wait(TIMEOUT) == 2
        stderr = writer.stderr.read().decode()
        assert writer.stdout.read() == b""
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert stderr.startswith("Error: store unavailable: "), stderr
    assert stderr.endswith("(stopped at line 4: the 3 results printed before it stand; "
                           "send from line 4 again)\n"), stderr
    assert stderr.count("\n") == 1
    assert "Traceback" not in stderr
    assert set(command_rows(url)) == {c["command_id"] for c in commands[:3]}
    again = subprocess.run(ledger_cli(url, "send", "-"), input=jsonl(*commands),
                           capture_output=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert [json.loads(r)["replayed"] for r in again.stdout.splitlines()] == [True] * 3 + [
        False] * 3


# Progress ---------------------------------------------------------------------------------

def big_file(path: Path) -> Path:
    """Over a megabyte of commands the ledger refuses at once (no store work)."""
    pad = "x" * 4000
    lines = [json.dumps({"command": "no_such_command", "command_id": f"p-{n}",
                         "actor": {"id": "ops", "role": "operator"}, "payload": {"pad": pad}})
             for n in range(300)]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_on_terminal(url: str, path: Path, results: Path | None, *options: str) -> str:
    """`ledger send FILE` with stderr on a pseudo-terminal, stdout to `results` (None: the
    terminal too); what the terminal showed."""
    leader, follower = pty.openpty()
    try:
        with open(results or os.devnull, "wb") as out:
            child = subprocess.Popen(ledger_cli(url, "send", *options, str(path)),
                                     stdout=follower if results is None else out,
                                     stderr=follower)
        os.close(follower)
        shown = b""
        while select.select([leader], [], [], TIMEOUT)[0]:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: the child has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert child.wait(TIMEOUT) == 2
    finally:
        os.close(leader)
    return shown.decode()


def test_a_large_file_shows_a_progress_bar_only_to_a_person_at_a_terminal(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    path = big_file(tmp_path / "big.jsonl")
    results = tmp_path / "results.jsonl"
    shown = run_on_terminal(url, path, results)
    for part in ("sending", "100%", "300 commands"):
        assert part in shown, shown
    printed = [json.loads(line) for line in results.read_bytes().splitlines()]
    assert [r["line"] for r in printed] == list(range(1, 301))  # no bar in the results

    assert run_on_terminal(url, path, results, "--json") == ""  # a program reads them
    on_screen = run_on_terminal(url, path, None)  # the results themselves show progress
    assert "sending" not in on_screen
    assert on_screen.count("no_such_command") == 300
    piped = subprocess.run(ledger_cli(url, "send", str(path)), capture_output=True,
                           timeout=TIMEOUT)
    assert (piped.returncode, piped.stderr) == (2, b"")
    small = tmp_path / "small.jsonl"
    small.write_bytes(path.read_bytes()[:100_000].rpartition(b"\n")[0] + b"\n")
    assert run_on_terminal(url, small, results) == ""
