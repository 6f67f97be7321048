"""Writers to one SQLite file take turns (ledger/store/turns.py): a write waits for the
turn another process holds and commits once it is given; a turn kept past the busy
timeout is a clear `locked` store fault that writes nothing; readers never wait for it.

SQLite only: the turns are how writers of one SQLite file queue (PostgreSQL queues them
itself, on the events table's lock: tests/reliability/test_contention.py).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ledger import FixedClock, Ledger
from ledger.errors import StoreUnavailable
from ledger.store.turns import WriteTurns, turns_path
from tests.support.helpers import NOW, create_campaign, register
from tests.support.holders import held_elsewhere


def turn_held(database: Path) -> AbstractContextManager[None]:
    """Another process holds the file's turn until the block ends (SQLite's own lock is
    free all along: only the turn keeps a writer waiting)."""
    return held_elsewhere("import fcntl, os\n"
                          f"fd = os.open({turns_path(str(database))!r}, os.O_RDWR | os.O_CREAT)\n"
                          "fcntl.flock(fd, fcntl.LOCK_EX)")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Ledger]]:
    monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", "1")
    path = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{path}", clock=FixedClock(NOW))
    assert ledger.send(create_campaign())["ok"]
    try:
        yield path, ledger
    finally:
        ledger.close()


def test_a_write_waits_for_the_turn_another_process_holds_and_commits_when_given(
        store: tuple[Path, Ledger]) -> None:
    path, ledger = store
    with ThreadPoolExecutor(1) as pool:
        with turn_held(path):
            sent = pool.submit(ledger.send, register())
            time.sleep(0.5)
            assert not sent.done(), "the write went ahead while another process had the turn"
        result = sent.result(timeout=10)
    assert result["ok"], result
    assert ledger.events_of(result["aggregate_id"]), "accepted, but nothing stored"


def test_a_turn_kept_past_the_busy_timeout_is_a_locked_fault_that_writes_nothing(
        store: tuple[Path, Ledger]) -> None:
    path, ledger = store
    command = register()
    before = len(ledger.events_of("mega-1111-live"))
    with turn_held(path), pytest.raises(StoreUnavailable, match="locked"):
        ledger.send(command)
    assert len(ledger.events_of("mega-1111-live")) == before
    again = ledger.send(command)  # the turn is free again: the same command is new
    assert again["ok"], again
    assert again["replayed"] is False, again


def test_readers_do_not_wait_for_the_turn(store: tuple[Path, Ledger]) -> None:
    path, ledger = store
    with turn_held(path):
        started = time.monotonic()
        assert ledger.campaign("mega-1111-live").name == "11.11 Mega LIVE Sale"
        assert len(ledger.events_of("mega-1111-live")) == 1
        assert time.monotonic() - started < 0.9  # under the 1 s busy timeout: it did not wait


def test_a_thread_with_the_turn_is_not_kept_waiting_by_itself(tmp_path: Path) -> None:
    database = str(tmp_path / "nested.db")
    outer, inner = WriteTurns(database, 0.2), WriteTurns(database, 0.2)
    with outer.turn(), inner.turn():  # two pools of one process, one thread: no self-wait
        fd = os.open(turns_path(database), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # and the turn is held against others
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
