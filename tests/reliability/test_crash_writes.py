"""Crash during writes (issue 6): a writer process killed with SIGKILL at random moments
while it sends commands. Afterwards every command it reported accepted is in the store,
nothing is half-written (every event belongs to a recorded command, the hash chains
verify), and resending every command (same `command_id`s) creates nothing new.

The writer (`crash_writer.writer`) restarts from the first command after each kill: the
commands already stored come back as replays. It sends one command at a time, or (issue
14) in groups of 7 with `send_many`, one transaction per group: killed mid-group, the
whole group is stored or none of it. It reports each result over a pipe as soon
as `Ledger.send` returns, so what the parent was told is exactly what a client was told.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any
from uuid import UUID

import pytest

from ledger import FixedClock, Ledger
from ledger.audit import chain
from tests.reliability.crash_writer import script, send_all, writer
from tests.reliability.test_crash_projections import forkserver
from tests.support.helpers import NOW, Json, dump_store
from tests.support.projections import event_count

NewUrl = Callable[[], str]
KILLS = 4
TIMEOUT = 60
SAME = ("ok", "command_id", "aggregate_id", "version", "events")  # what a replay repeats


def same(result: Json) -> tuple[Any, ...]:
    return tuple(result.get(key) for key in SAME)


# The writer, killed ---------------------------------------------------------------------------

def receive(receiver: Connection, reported: dict[str, Json]) -> str:
    """One message from the writer ("ready", "result" or "done"); an accepted result is
    noted (a later report of the same command must be its replay)."""
    kind, command_id, result = receiver.recv()
    if kind == "result" and result["ok"]:
        if command_id in reported:
            assert result["replayed"] is True, result
            assert same(result) == same(reported[command_id]), result
        else:
            reported[command_id] = result
    return str(kind)


def run_writer(url: str, results: int, rng: random.Random, reported: dict[str, Json],
               group_size: int = 0) -> bool:
    """Start the writer; kill -9 it once it has reported `results` results and a random
    instant has passed. Collects every result it reported, before and after the kill.
    Killed (or did it finish first)?"""
    context = forkserver()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=writer, args=(url, sender, group_size), daemon=True)
    process.start()
    sender.close()
    try:
        seen, finished = -1, False  # "ready" comes first
        while seen < results and not finished:
            assert receiver.poll(TIMEOUT), "the writer is stuck"
            try:
                finished = receive(receiver, reported) == "done"
            except EOFError:
                process.join(TIMEOUT)
                pytest.fail(f"the writer failed (exit code {process.exitcode}; see its stderr)")
            seen += 1
        time.sleep(rng.uniform(0, 0.004))
        process.kill()
        process.join(TIMEOUT)
        assert process.exitcode in (-signal.SIGKILL, 0), process.exitcode
        # What it reported before it died counts too (each message is one small write).
        while receiver.poll(0):
            try:
                receive(receiver, reported)
            except EOFError:
                break
        return bool(process.exitcode == -signal.SIGKILL)
    finally:
        if process.is_alive():
            process.kill()
            process.join(TIMEOUT)
        receiver.close()


# What the store holds -------------------------------------------------------------------------

def command_rows(url: str) -> dict[str, Json]:
    """command_id -> (aggregate, stored result), from the `ledger_commands` table."""
    rows = dump_store(url)["ledger_commands"]
    return {str(command_id): {"aggregate": UUID(str(aggregate_id)), **_json(result)}
            for command_id, _, aggregate_id, _, result, _ in rows}


def _json(text: Any) -> Json:
    loaded: Json = json.loads(text)
    return loaded


def assert_whole(url: str, ledger: Ledger) -> dict[str, Json]:
    """Nothing half-written: chains verify, and the events are exactly those of the
    recorded commands (per aggregate: as many, versions 1..n, n = its last command's)."""
    report = chain.verify(ledger.app.store)
    assert report.clean, report.findings
    commands = command_rows(url)
    expected: Counter[UUID] = Counter()
    last: dict[UUID, int] = {}
    for row in commands.values():
        expected[row["aggregate"]] += len(row["events"])
        last[row["aggregate"]] = max(last.get(row["aggregate"], 0), row["version"])
    versions: dict[UUID, list[int]] = {}
    for n in ledger.app.recorder.select_notifications(0, 10**6):
        versions.setdefault(UUID(str(n.originator_id)), []).append(n.originator_version)
    assert {oid: len(v) for oid, v in versions.items()} == {
        oid: count for oid, count in expected.items() if count}, "events without their command"
    for oid, found in versions.items():
        assert sorted(found) == list(range(1, last[oid] + 1)), oid
    assert report.events == event_count(ledger.app) == sum(expected.values())
    registered = {row["aggregate"] for row in commands.values() if "Registered" in row["events"]}
    rows = dump_store(url)["ledger_registrations"]
    assert {UUID(str(row[0])) for row in rows} == registered
    return commands


def assert_stored(reported: dict[str, Json], commands: dict[str, Json]) -> None:
    """Every command the writer was told was accepted has its command row, same result."""
    missing = sorted(set(reported) - set(commands))
    assert not missing, f"reported accepted, not in the store: {missing}"
    for command_id, result in reported.items():
        assert same(commands[command_id]) == same(result), command_id


# The test -------------------------------------------------------------------------------------

@pytest.mark.parametrize("group_size", [0, 7], ids=["one-at-a-time", "groups-of-7"])
def test_a_writer_killed_at_random_moments_leaves_whole_commands_only(
    new_url: NewUrl, group_size: int
) -> None:
    url = new_url()
    steps = script()
    rng = random.Random(20261106 + group_size)
    reported: dict[str, Json] = {}
    # Each kill further on than the last: it lands among new writes, not replays.
    targets = sorted(rng.sample(range(3, len(steps) - 20), KILLS))
    killed = sum(run_writer(url, target, rng, reported, group_size) for target in targets)
    assert reported, "the writer reported nothing"

    clock = FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        # (1) + (2): what was reported is stored; nothing is half-written.
        assert_stored(reported, assert_whole(url, ledger))

        # Finish the list once: stored commands replay, the others run for the first time.
        finished = send_all(ledger, clock, steps, group_size)
        assert all(r["ok"] for r in finished), [r for r in finished if not r["ok"]]
        for result in finished:
            if result["command_id"] in reported:
                assert result["replayed"] is True, result
                assert same(result) == same(reported[result["command_id"]]), result
        commands = assert_whole(url, ledger)
        assert set(commands) == {cmd["command_id"] for _, cmd in steps}
        assert event_count(ledger.app) == sum(len(r["events"]) for r in finished)

        # (3) Resending every command creates nothing new: all replays, not a row changed.
        before = dump_store(url)
        again = send_all(ledger, clock, steps, group_size)
        assert [r["replayed"] for r in again] == [True] * len(steps)
        assert [same(r) for r in again] == [same(r) for r in finished]
        assert dump_store(url) == before
    print(f"{killed} kills, {len(reported)} results reported accepted")
