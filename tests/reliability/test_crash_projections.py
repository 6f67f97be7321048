"""Crash during projection (issue 6). Read models survive kill -9: a catch-up, a rebuild or
a two-process rebuild killed at random moments, then run to the end, gives the rows of a
clean rebuild in a store of its own, each event counted once. And runners that overlap (a
follower and a `--fresh` query, say) count nothing twice.

The children are forked from a server that imported the ledger once (`forkserver`), so a
kill costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from ledger import Ledger
from ledger.projections.processes import RebuildFailed
from ledger.projections.registry import projector
from ledger.projections.runner import Projector
from tests.support.projections import (
    child,
    clone_events,
    event_count,
    rows_elsewhere,
    rows_of,
    status_of,
    store_tables,
)
from tests.support.scenarios import seasoned

NewUrl = Callable[[], str]
Store = tuple[str, Ledger]
KILLS = 5
ATTEMPTS = 8  # rebuilds tried until the helper is caught holding cells (see its test)
PAGE = 4
TIMEOUT = 60
ORPHAN_GRACE = 1.0  # seconds: a helper left running writes a page in far less


@pytest.fixture(scope="module")
def source(new_url: NewUrl) -> Iterator[Ledger]:
    """A busy season (~320 events), written once per backend."""
    with seasoned(new_url(), registrations=36) as ledger:
        yield ledger


@pytest.fixture
def store(source: Ledger, new_url: NewUrl) -> Iterator[Store]:
    """A fresh store with the season's events, no read model built yet."""
    url = new_url()
    with clone_events(source.app, url) as ledger:
        yield url, ledger


# Children ---------------------------------------------------------------------------------------

def forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.support.projections"])
    return context


def start(mode: str, url: str, page: int) -> tuple[BaseProcess, Connection]:
    context = forkserver()
    receiver, sender = context.Pipe(duplex=False)
    # A daemon may not start processes of its own; the parent kills the child in any case.
    process = context.Process(target=child, args=(mode, url, page, sender),
                              daemon=mode != "rebuild-jobs")
    process.start()
    sender.close()
    return process, receiver


def kill_mid_way(mode: str, url: str, pages: int, rng: random.Random) -> bool:
    """Run a child; kill -9 it after `pages` pages and a random instant. Killed?"""
    process, receiver = start(mode, url, PAGE)
    try:
        seen = -1  # "ready" comes first
        while seen < pages:
            assert receiver.poll(TIMEOUT), "the child is stuck"
            try:
                message, _ = receiver.recv()
            except EOFError:
                process.join(TIMEOUT)
                pytest.fail(f"the child failed (exit code {process.exitcode}; see its stderr)")
            if message == "done":
                process.join(TIMEOUT)
                return False
            seen += 1
        time.sleep(rng.uniform(0, 0.01))
        process.kill()
        process.join(TIMEOUT)
        assert process.exitcode in (-signal.SIGKILL, 0), process.exitcode
        return process.exitcode == -signal.SIGKILL
    finally:
        if process.is_alive():
            process.kill()
            process.join(TIMEOUT)
        receiver.close()


def early(rng: random.Random, events_left: int, kill: int) -> int:
    """How many pages to let a child write before this kill: some, never nearly all."""
    return rng.randrange(max(1, events_left // PAGE // (KILLS + 1 - kill)))


def positions(p: Projector, *, shadow: bool = False) -> dict[str, int]:
    return {m.name: p.view.position(m.name, shadow=shadow) for m in p.models}


def assert_each_event_applied_once(p: Projector) -> None:
    for name, status in status_of(p).items():
        assert status["position"] == p.head(), name
        assert status["events_applied"] == event_count(p.app), name
        assert status["rebuild_in_progress"] is False, name


# Kill -9 ---------------------------------------------------------------------------------------

def test_a_catch_up_killed_at_random_moments_loses_nothing_and_counts_nothing_twice(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    url, ledger = store
    rng = random.Random(20261111)
    p = projector(ledger.app, page=PAGE)
    head, killed, reached = p.head(), 0, [0]
    for kill in range(KILLS):
        pages = early(rng, head - min(positions(p).values()), kill)
        killed += kill_mid_way("catch-up", url, pages, rng)
        reached.append(min(positions(p).values()))
    assert killed >= KILLS - 1, "the children finished before they were killed"
    assert reached == sorted(reached)
    assert reached[-1] < head

    p.catch_up()

    assert rows_of(p) == rows_elsewhere(source.app, new_url(), rebuild=True)
    assert_each_event_applied_once(p)


def test_a_rebuild_killed_at_random_moments_keeps_the_old_rows_then_completes(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    url, ledger = store
    rng = random.Random(20261112)
    p = projector(ledger.app, page=PAGE)
    head = p.head()
    p.catch_up(until=head // 3)
    old, killed = rows_of(p), 0
    for kill in range(KILLS):
        pages = early(rng, head - min(positions(p, shadow=True).values()), kill)
        killed += kill_mid_way("rebuild", url, pages, rng)
        assert rows_of(p) == old, "readers saw the rebuild before its swap"
        assert set(positions(p).values()) == {head // 3}
    assert killed >= KILLS - 1, "the children finished before they were killed"
    assert 0 < min(positions(p, shadow=True).values()) < head
    assert all(s["rebuild_in_progress"] for s in status_of(p).values())

    p.rebuild()

    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_each_event_applied_once(p)
    assert not {t for t in store_tables(p) if t.endswith("__new")}


def test_a_two_process_rebuild_killed_at_random_moments_leaves_no_helper_then_completes(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    """`rebuild --jobs 2` killed with SIGKILL: its helper process stops too (an orphan
    would go on loading the store), each read model shows its old rows or, if its half had
    been swapped in before the kill, its complete new rows; the next rebuild completes."""
    url, ledger = store
    rng = random.Random(20261125)
    p = projector(ledger.app, page=PAGE)
    head = p.head()
    p.catch_up(until=head // 3)
    old, new, killed = rows_of(p), rows_elsewhere(source.app, new_url()), 0
    for kill in range(KILLS):
        pages = early(rng, head - min(positions(p, shadow=True).values()), kill)
        killed += kill_mid_way("rebuild-jobs", url, pages, rng)
        reached = positions(p, shadow=True)
        time.sleep(ORPHAN_GRACE)  # an orphaned helper would move on meanwhile
        assert positions(p, shadow=True) == reached, "a helper outlived its rebuild"
        seen = rows_of(p)
        assert all(seen[t] in (old[t], new[t]) for t in seen), "readers saw a partial model"
        assert set(positions(p).values()) <= {head // 3, head}
    assert killed >= KILLS - 1, "the children finished before they were killed"
    assert any(s["rebuild_in_progress"] for s in status_of(p).values())

    p.rebuild(jobs=2)

    assert rows_of(p) == new
    assert_each_event_applied_once(p)
    assert not {t for t in store_tables(p) if t.endswith("__new")}


def test_a_helper_killed_mid_rebuild_fails_the_rebuild_in_one_line_then_it_resumes(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    """Read models split into groups (these read no reports): a helper killed with
    SIGKILL once every group has written a page."""
    _, ledger = store
    p = projector(ledger.app, page=PAGE)
    chosen = ["manage_campaign", "review_decisions"]
    killed: list[int] = []

    def kill_the_helper(position: int, stop: int) -> None:
        # `position` is the slowest group's: past 0 once the helper has written a page
        # (killed before that, under load, it would leave nothing in progress to resume).
        if not killed and 0 < position < stop:
            for helper in multiprocessing.active_children():
                helper.kill()
                killed.append(helper.exitcode or 0)

    with pytest.raises(RebuildFailed, match=r"a rebuild helper exited with code\(s\) \[-9\]"):
        p.rebuild(chosen, progress=kill_the_helper, jobs=2)
    assert killed, "no helper was running"
    assert any(s["rebuild_in_progress"] for s in status_of(p).values())

    p.rebuild(jobs=2)

    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_each_event_applied_once(p)


def kill_the_helper_mid_segment(p: Projector, killed: list[int]) -> Callable[[int, int], None]:
    """A rebuild's progress callback: once this process has written a segment, kill the
    report-folding helper with SIGKILL while it holds the cells of a segment not sent yet
    (it is stopped first, so that this is known, not raced)."""

    def progress(_position: int, _stop: int) -> None:
        share = p.share
        if killed or share is None or share.merged < 0:
            return
        deadline = time.monotonic() + TIMEOUT
        while not any(share.owners) and time.monotonic() < deadline:
            time.sleep(0.001)  # until the helper (forked, or spawned: ~1 s) takes a chunk
        helper = share.processes[0]
        if helper.pid is None or not helper.is_alive():
            return
        os.kill(helper.pid, signal.SIGSTOP)  # frozen: what it has taken stays as it is
        latest = share.counter.value - 1
        if latest < share.chunks.count - 1 and share.owners[latest]:
            helper.kill()  # its latest chunk's segment was not sent: it is lost
            killed.append(latest)
        else:
            os.kill(helper.pid, signal.SIGCONT)

    return progress


def test_a_report_folding_helper_killed_fails_the_rebuild_then_it_resumes(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    """The helper of a shared rebuild is killed with SIGKILL while it holds the cells of a
    segment not sent yet, after this process wrote a segment: the rebuild fails in one
    line, what it wrote holds every event up to its position once, and the next rebuild
    finishes it.

    A forked helper on a fast machine may fold every chunk left before this process has
    written its first segment (the store is small), and then there is nothing to catch:
    that rebuild finishes, and the scenario is tried again on a new rebuild (at most
    ATTEMPTS times). A helper killed holding cells must always fail the rebuild."""
    _, ledger = store
    for _ in range(ATTEMPTS):
        p = projector(ledger.app, page=PAGE)
        killed: list[int] = []
        failed: RebuildFailed | None = None
        try:
            p.rebuild(jobs=2, progress=kill_the_helper_mid_segment(p, killed))
        except RebuildFailed as error:
            failed = error
        if failed is not None:
            assert killed, f"the rebuild failed with no helper killed: {failed}"
            assert "a rebuild helper exited with code(s) [-9]" in str(failed)
            break
        assert not killed, "a helper was killed holding cells, yet the rebuild finished"
    else:
        pytest.fail(f"the helper was never caught with a segment to send in {ATTEMPTS} "
                    "rebuilds")
    assert all(s["rebuild_in_progress"] for s in status_of(p).values())
    assert 0 < min(positions(p, shadow=True).values()) < p.head()

    p.rebuild(jobs=2)  # resumed: in one process

    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_each_event_applied_once(p)


# Overlapping runners ----------------------------------------------------------------------------

@pytest.mark.parametrize("overtaken_on", [None, "campaign_performance"],
                         ids=["all", "one-read-model"])
def test_a_catch_up_overtaken_by_another_runner_counts_nothing_twice(
    store: Store, source: Ledger, new_url: NewUrl, overtaken_on: str | None
) -> None:
    """Runner B reads its page; runner A commits part of it first (of every read model,
    or of one: B's others are written in the same transaction as ever); then B writes."""
    _, ledger = store
    a, b = projector(ledger.app), projector(ledger.app)
    head, write = b.head(), b.view.flush_live
    overtaken: list[int] = []

    def a_goes_first(*args: Any, **kwargs: Any) -> set[str]:
        if not overtaken:
            overtaken.append(a.catch_up(None if overtaken_on is None else [overtaken_on],
                                        until=head // 2))
        return write(*args, **kwargs)

    b.view.flush_live = a_goes_first  # type: ignore[method-assign]
    b.catch_up()
    b.catch_up()

    assert overtaken == [head // 2]
    assert rows_of(b) == rows_elsewhere(source.app, new_url())
    assert_each_event_applied_once(b)


def run_at_once(url: str, pages: tuple[int, ...]) -> list[int | None]:
    """Catch-ups in processes started together; their exit codes."""
    runners = [start("catch-up", url, page) for page in pages]
    for process, receiver in runners:
        process.join(TIMEOUT)
        receiver.close()
    return [process.exitcode for process, _ in runners]


def test_runners_racing_in_processes_count_nothing_twice(
    store: Store, source: Ledger, new_url: NewUrl
) -> None:
    url, ledger = store
    p = projector(ledger.app)  # the tables exist: the runners race on rows only

    exit_codes = run_at_once(url, (3, 5, 7, 11))
    p.catch_up()

    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_each_event_applied_once(p)
    assert exit_codes == [0, 0, 0, 0], "a runner failed (its stderr says why)"


def test_runners_started_at_once_on_a_new_store_all_start(store: Store) -> None:
    url, _ = store
    assert run_at_once(url, (50, 50, 50, 50)) == [0, 0, 0, 0], "see the runners' stderr"
