"""Read models: catching up in any pages gives the rows of a rebuild; a rebuild swaps its
tables in at once and resumes when interrupted; unknown events are skipped and counted;
a second catch-up writes nothing; rows hold no wall-clock time.

Every test runs over every read model in the registry, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteDatastore
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledger import FixedClock, Ledger
from ledger.projections.campaign_performance import REGISTRATIONS, CampaignPerformance
from ledger.projections.rebuild import split
from ledger.projections.registry import READ_MODELS, projector
from ledger.projections.runner import Projector
from ledger.projections.tables import Batch
from ledger.projections.view import PostgresView, physical
from tests.support.helpers import (
    NOW,
    STARTS,
    World,
    approve,
    create_campaign,
    dump_store,
    hours,
    record_performance,
    register,
)
from tests.support.projections import (
    Rows,
    clone_events,
    copy_events,
    event_count,
    read_model_tables,
    rows_elsewhere,
    rows_of,
    status_of,
    store_tables,
)
from tests.support.scenarios import PHASES, History, Player, histories, seasoned

NewUrl = Callable[[], str]
Store = tuple[str, Ledger]  # its URL, and a ledger on it
UNKNOWN = ("ledger.future:Unknown", "ledger.aggregates.registration_events:Refunded")


@pytest.fixture(scope="module")
def source(new_url: NewUrl) -> Iterator[Ledger]:
    """A season of every command kind (~110 events), written once per backend."""
    with seasoned(new_url(), registrations=12) as ledger:
        yield ledger


@pytest.fixture
def half(source: Ledger, new_url: NewUrl) -> Iterator[Store]:
    """A fresh store with the first half of the season's events (add the rest with
    `copy_events`)."""
    url = new_url()
    with clone_events(source.app, url, upto=event_count(source.app) // 2) as ledger:
        yield url, ledger


@pytest.fixture
def full(source: Ledger, new_url: NewUrl) -> Iterator[Store]:
    url = new_url()
    with clone_events(source.app, url) as ledger:
        yield url, ledger


def assert_applied_once(p: Projector, *, skipped: int = 0) -> None:
    """Every read model is at the head, and counted each event once."""
    for name, status in status_of(p).items():
        assert status["position"] == p.head(), name
        assert status["lag"] == 0, name
        assert status["events_applied"] == event_count(p.app) - skipped, name
        assert status["rebuild_in_progress"] is False, name


# Catch-up and rebuild give the same rows ----------------------------------------------------

cuts = st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 7),
                          st.sets(st.sampled_from(sorted(READ_MODELS)))), max_size=6)
# A rebuild's page, events between its writes, and the rows its working set keeps: small
# sets drop rows after writes, so later events fetch state rows and add to sums as deltas.
rebuilds = st.tuples(st.integers(1, 9), st.integers(1, 40), st.integers(2, 80))


# No shrinking: a failure is reported as found (shrinking would take minutes here).
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(history=histories(), cuts=cuts, rebuild=rebuilds, live=st.integers(1, 12))
def test_catching_up_in_any_pages_gives_the_rows_of_a_rebuild(
    new_url: NewUrl, history: History, cuts: list[tuple[int, int, set[str]]],
    rebuild: tuple[int, int, int], live: int
) -> None:
    clock = FixedClock(PHASES[0])
    with Ledger.open(new_url(), clock=clock, pool_size=1) as ledger:
        Player(ledger, clock).play(history)
        p = projector(ledger.app, page=5)
        # The working sets it keeps from one catch-up to the next: small ones drop rows
        # and fold columns, which later catch-ups fetch again.
        p.live_working_set = live
        for per_mille, page, names in cuts:  # some read models only, now and then
            p.page = page
            p.catch_up(sorted(names) or None, until=p.head() * per_mille // 1000)
        p.page = 5
        p.catch_up()
        caught_up = rows_of(p, exact=True)
        assert_applied_once(p)
        projector(ledger.app).rebuild()
        assert rows_of(p, exact=True) == caught_up
        assert_applied_once(p)
        page, flush_every, working_set = rebuild
        paged = projector(ledger.app, page, flush_every=flush_every, working_set=working_set)
        if isinstance(paged.view, PostgresView):
            paged.view.copy_min_rows = 1  # every write by COPY (a big rebuild's way)
        paged.rebuild()
        assert rows_of(p, exact=True) == caught_up
        assert_applied_once(p)
        # The same with a helper folding the reports of the chunks it takes.
        projector(ledger.app, page, flush_every=flush_every, working_set=working_set,
                  jobs=2).rebuild()
        assert rows_of(p, exact=True) == caught_up
        assert_applied_once(p)


def test_money_sums_keep_their_scale_whatever_the_pages(new_url: NewUrl) -> None:
    """Refunds of 0.00, 12.5 and 12.5 sum to 25.00 whether paged one by one or not."""
    url, clock = new_url(), FixedClock(NOW)
    with Ledger.open(url, clock=clock, pool_size=1) as ledger:
        world = World(ledger, url, clock)
        registration = world.register(register(world.accept(create_campaign())["aggregate_id"]))
        world.accept(approve(registration))
        world.at(STARTS + hours(3))
        for n, refunds in enumerate(["0.00", "12.5", "12.5"]):
            world.accept(record_performance(registration, report_id=f"r{n}", refunds=refunds))
        one_by_one = projector(ledger.app, page=1)
        one_by_one.catch_up()
        assert rows_of(one_by_one) == rows_elsewhere(ledger.app, new_url())  # the same sums
        assert rows_of(one_by_one, exact=True) == rows_elsewhere(ledger.app, new_url(),
                                                                 exact=True)


# Rebuild: shadow tables, an atomic swap, resuming -------------------------------------------

def test_readers_see_the_old_rows_until_the_rebuild_swaps_the_new_ones_in(
    source: Ledger, half: Store, new_url: NewUrl
) -> None:
    url, ledger = half
    projector(ledger.app).catch_up()
    old = rows_of(projector(ledger.app))
    copy_events(source.app, ledger.app, after=projector(ledger.app).head())
    seen: list[int] = []

    with Ledger.open(url, pool_size=1) as reader:  # another connection, as a reader has
        readers_view = projector(reader.app)

        def check_readers(position: int, stop: int) -> None:
            seen.append(position)
            assert rows_of(readers_view) == old
            assert sum(map(len, rows_of(readers_view, shadow=True).values())) > 0
            assert all(s["rebuild_in_progress"] for s in readers_view.status())

        projector(ledger.app, page=15).rebuild(progress=check_readers)

    assert len(seen) > 3, "the rebuild took a few pages"
    p = projector(ledger.app)
    new = rows_of(p)
    assert new != old
    assert new == rows_elsewhere(source.app, new_url())
    assert_applied_once(p)


def fix_shadow_rows(fixer: Projector) -> None:
    """Change every shadow registration row (`account_id` prefixed `fixed-`): the rows a
    fixed read model would have rebuilt, unlike any the live tables held."""
    with fixer.view._txn() as c:
        shadow = fixer.view.dialect.q(physical(REGISTRATIONS, True))
        c.execute(f"UPDATE {shadow} SET account_id = 'fixed-' || account_id")


def test_a_catch_up_keeps_its_working_set_only_while_nobody_else_writes_the_read_model(
    source: Ledger, half: Store
) -> None:
    """A projector keeps each read model's working set from one catch-up to the next (a
    follower's), and reads the rows again once anyone else has written them: here a
    rebuild swapped in at the very position it kept them at, whose rows differ (as a
    read model fixed in between would write them). Without that, the rows the second
    half of the season changes would go back to what the projector held."""
    _, ledger = half
    p = projector(ledger.app)
    p.catch_up()
    assert p._kept, "the working sets are kept"
    before = p.head()
    fixer = projector(ledger.app, page=10)
    swap = fixer.view.swap

    def fixed_then_swapped(name: str, tables: Any) -> None:
        fix_shadow_rows(fixer)
        swap(name, tables)

    fixer.view.swap = fixed_then_swapped  # type: ignore[method-assign]
    fixer.rebuild([CampaignPerformance.name])
    assert fixer.view.position(CampaignPerformance.name) == before  # the kept position
    swapped = {row["aggregate_id"]: row for row in p.view.query(
        f"SELECT * FROM {p.view.dialect.q(physical(REGISTRATIONS, False))}")}
    assert all(row["account_id"].startswith("fixed-") for row in swapped.values())
    copy_events(source.app, ledger.app, after=before)
    p.catch_up()
    after = {row["aggregate_id"]: row for row in p.view.query(
        f"SELECT * FROM {p.view.dialect.q(physical(REGISTRATIONS, False))}")}
    changed = [aid for aid, row in swapped.items() if after[aid] != row]
    assert changed, "the second half changes registrations the first half made"
    assert all(after[aid]["account_id"].startswith("fixed-") for aid in swapped)


def test_a_rebuild_swapped_in_between_a_catch_up_s_read_and_its_write_is_not_written_over(
    source: Ledger, half: Store
) -> None:
    """A catch-up reads its page's rows, then a rebuild is swapped in at the very position
    the page starts from, with rows that differ (a read model fixed in between); then the
    catch-up writes. Its compare-and-set sees the swap: the page is applied again to the
    rows swapped in, not written over them from what was read before."""
    _, ledger = half
    p = projector(ledger.app)
    p.catch_up()
    fixer = projector(ledger.app, page=10)
    swaps: list[tuple[str, Any]] = []
    swap = fixer.view.swap
    fixer.view.swap = lambda name, tables: swaps.append((name, tables))  # type: ignore
    fixer.rebuild([CampaignPerformance.name])  # built up to p's position; not swapped in
    assert fixer.view.position(CampaignPerformance.name, shadow=True) == p.head()
    live = p.view.dialect.q(physical(REGISTRATIONS, False))
    copy_events(source.app, ledger.app, after=p.head())
    write = p.view.flush_live
    fixed: set[str] = set()

    def swapped_first(*args: Any) -> set[str]:
        if swaps:
            fix_shadow_rows(fixer)
            swap(*swaps.pop())
            fixed.update(row["aggregate_id"] for row in p.view.query(f"SELECT * FROM {live}"))
        return write(*args)

    p.view.flush_live = swapped_first  # type: ignore[method-assign]
    p.catch_up()
    after = {row["aggregate_id"]: row for row in p.view.query(f"SELECT * FROM {live}")}
    assert fixed, "the rebuild was swapped in"
    assert all(after[aid]["account_id"].startswith("fixed-") for aid in fixed)
    assert_applied_once(p)


def test_fetching_a_page_s_rows_waits_for_no_write_of_the_same_process(full: Store) -> None:
    """A follower in a `ledger serve` worker reads the rows of its page while that worker
    writes commands: the read takes no writer's place (SQLite's pool lets one writer of a
    process in at a time)."""
    _, ledger = full
    p = projector(ledger.app)
    p.catch_up()
    model = p.model(CampaignPerformance.name)
    aids = [row["aggregate_id"] for row in p.view.query(
        f"SELECT aggregate_id FROM {p.view.dialect.q(physical(REGISTRATIONS, False))}")]
    holding, release = threading.Event(), threading.Event()

    def write_held_open() -> None:
        with p.view.datastore.transaction(commit=True):
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=write_held_open)
    writer.start()
    try:
        assert holding.wait(10)
        batch = Batch(model.tables)
        reader = threading.Thread(target=p.view.prefetch,
                                  args=(model.state_tables, aids, batch), kwargs={"shadow": False})
        reader.start()
        reader.join(5)
        assert not reader.is_alive(), "the read waited for the write"
        assert {key[0] for key, row in batch.rows[REGISTRATIONS.name].items()
                if row is not None} == set(aids)
    finally:
        release.set()
        writer.join()


class Interrupted(Exception):
    pass


def interrupt_after(pages: int) -> Callable[[int, int], None]:
    calls = []

    def progress(position: int, stop: int) -> None:
        calls.append(position)
        if len(calls) == pages:
            raise Interrupted(position)

    return progress


@pytest.mark.parametrize("restart", [False, True], ids=["resumed", "restarted"])
def test_an_interrupted_rebuild_leaves_the_old_rows_and_completes_when_run_again(
    source: Ledger, half: Store, new_url: NewUrl, restart: bool
) -> None:
    _, ledger = half
    projector(ledger.app).catch_up()
    old, before = rows_of(projector(ledger.app)), projector(ledger.app).head()
    copy_events(source.app, ledger.app, after=before)
    p = projector(ledger.app, page=4)

    with pytest.raises(Interrupted):
        p.rebuild(progress=interrupt_after(3))

    assert rows_of(p) == old
    for name, status in status_of(p).items():
        assert status["rebuild_in_progress"] is True, name
        assert status["position"] == before, name
        assert p.view.position(name, shadow=True) == 12, name
    done = projector(ledger.app, page=50).rebuild(restart=restart)
    assert done == p.head() - (0 if restart else 12)
    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_applied_once(p)
    assert not {t for t in store_tables(p) if t.endswith("__new")}


def test_a_second_rebuild_swaps_again(full: Store, source: Ledger, new_url: NewUrl) -> None:
    _, ledger = full
    p = projector(ledger.app, page=40)
    p.rebuild()
    p.rebuild()
    assert rows_of(p) == rows_elsewhere(source.app, new_url())
    assert_applied_once(p)


def awaiting_helper(p: Projector, methods: list[str] | None = None
                    ) -> Callable[[int, int], None]:
    """A rebuild's progress callback that waits for the helper to take a chunk (a spawned
    one needs a second to start), then lets this process go on: the helper takes chunks
    from where this process is. `methods`: how the helper was started is added to it."""
    def progress(position: int, stop: int) -> None:
        if methods is not None and p.share is not None and not methods:
            methods.append(p.share.method)
        deadline = time.monotonic() + 60
        while p.share is not None and not any(p.share.owners) and time.monotonic() < deadline:
            time.sleep(0.001)

    return progress


def test_a_rebuild_in_two_processes_gives_the_same_rows(
    full: Store, source: Ledger, new_url: NewUrl
) -> None:
    """The helper folds the reports of the chunks it takes (segments of three chunks,
    rows evicted, so sums and state rows are fetched again); every event counts once."""
    _, ledger = full
    p = projector(ledger.app, page=9, flush_every=30, working_set=10, jobs=2)
    # Both processes must take chunks. A forked helper on a fast machine can fold all
    # twelve small chunks before this process asks for its first: then rebuild again.
    for _ in range(8):
        done = p.rebuild(restart=True, progress=awaiting_helper(p))
        assert done == p.head()
        assert p.shared is not None
        chunks, by_helper = p.shared
        assert chunks == -(-p.head() // 9)
        assert by_helper > 0
        if by_helper < chunks:
            break
    assert 0 < by_helper < chunks
    assert rows_of(p, exact=True) == rows_elsewhere(source.app, new_url(), exact=True)
    assert_applied_once(p)
    assert not {t for t in store_tables(p) if t.endswith("__new")}


def rebuilt_by_helper(ledger: Ledger) -> tuple[str, Projector]:
    """Rebuild in two processes; how the helper was started, and the projector."""
    p = projector(ledger.app, page=9, flush_every=30, working_set=10, jobs=2)
    methods: list[str] = []
    p.rebuild(restart=True, progress=awaiting_helper(p, methods))
    assert p.shared is not None
    assert p.shared[1] > 0  # the helper folded chunks
    return methods[0], p


def test_a_helper_is_forked_unless_this_process_holds_the_sqlite_file_open(
    full: Store, source: Ledger, new_url: NewUrl
) -> None:
    """Forked (no second of imports) on PostgreSQL, and on SQLite once the pools' idle
    connections are closed and no descriptor of this process is left on the file; while
    one is (here a connection the test holds, then a descriptor of the writers' lock
    file), the helper is spawned. Both fold the same rows as one process."""
    _, ledger = full
    expected = rows_elsewhere(source.app, new_url(), exact=True)
    datastore = ledger.app.factory.datastore  # type: ignore[attr-defined]
    if isinstance(datastore, SQLiteDatastore):
        held = sqlite3.connect(datastore.pool.db_name)
        try:
            held.execute("SELECT count(*) FROM sqlite_master").fetchall()  # the file open
            method, p = rebuilt_by_helper(ledger)
            assert method == "spawn"
            assert rows_of(p, exact=True) == expected
        finally:
            held.close()
        # A descriptor of the writers' lock file (a write in progress, ledger/store/turns.py)
        # would let the child keep this process's turn held: spawned too.
        turn = os.open(datastore.turns.path, os.O_RDONLY | os.O_CREAT)
        try:
            method, p = rebuilt_by_helper(ledger)
            assert method == "spawn"
        finally:
            os.close(turn)
    method, p = rebuilt_by_helper(ledger)
    assert method == "fork"
    assert rows_of(p, exact=True) == expected


def test_a_report_stored_before_its_registration_counts_nowhere_whoever_folds_it(
    source: Ledger, new_url: NewUrl
) -> None:
    """A store no command writes (imported by hand): each `Registered` stored just after
    its registration's first report. A report counts only when its registration is stored
    before it: in one process, in a helper (which has applied every seed up to its chunk's
    end, the later ones too), and when caught up incrementally."""
    with Ledger.open(new_url(), pool_size=1) as odd:
        events = source.app.recorder.select_notifications(0, 10_000)
        held: dict[UUID, Any] = {}
        moved: list[Any] = []
        early = 0  # reports stored before their registration
        for n in events:
            if n.topic.endswith("Registered"):
                held[n.originator_id] = n
                continue
            moved.append(n)
            if n.originator_id in held and n.topic.endswith("PerformanceRecorded"):
                early += 1
                moved.append(held.pop(n.originator_id))
        moved.extend(held.values())
        odd.app.recorder.insert_events([
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in moved])
        p = projector(odd.app, page=9, flush_every=30, working_set=10, jobs=2)
        assert p.rebuild(progress=awaiting_helper(p)) == p.head()
        assert p.shared is not None
        assert p.shared[1] > 0  # the helper folded some chunks
        assert_applied_once(p)
        shared = rows_of(p, exact=True)
        alone = projector(odd.app, page=9, flush_every=30, working_set=10, jobs=1)
        assert alone.rebuild() == p.head()
        assert rows_of(alone, exact=True) == shared
        assert rows_elsewhere(odd.app, new_url(), exact=True) == shared
        reports = sum(n.topic.endswith("PerformanceRecorded") for n in events)
        assert early > 0
        for table in ("rm_ytd_months", "rm_cp_sellers"):
            counted = sum(dict(row)["reports"] for row in shared[table])
            assert counted == reports - early, table


def test_read_models_that_read_no_reports_are_rebuilt_in_groups(
    full: Store, source: Ledger, new_url: NewUrl
) -> None:
    _, ledger = full
    p = projector(ledger.app, page=9, flush_every=30, working_set=10, jobs=2)
    chosen = ["manage_campaign", "review_decisions"]
    assert [len(group) for group in split([p.model(n) for n in chosen], 2)] == [1, 1]
    assert p.rebuild(chosen) == p.head()
    assert p.shared is None
    tables = {physical(t, False) for name in chosen for t in p.model(name).tables}
    expected = rows_elsewhere(source.app, new_url(), exact=True)
    seen = rows_of(p, exact=True)
    assert {t: seen[t] for t in tables} == {t: expected[t] for t in tables}
    assert all(seen[t] for t in tables)


# Unknown events, idempotence, determinism -------------------------------------------------

def unknown_event(topic: str) -> StoredEvent:
    return StoredEvent(originator_id=uuid4(), originator_version=1, topic=topic,
                       state=b'{"timestamp": "2026-10-05T09:30:00+00:00"}')


def test_events_of_unknown_types_are_skipped_and_counted_per_topic(
    source: Ledger, half: Store, new_url: NewUrl
) -> None:
    _, ledger = half
    p = projector(ledger.app, page=4)
    known = p.head()
    p.catch_up(until=known - 3)
    ledger.app.recorder.insert_events([unknown_event(UNKNOWN[0])])
    ledger.app.recorder.insert_events([unknown_event(UNKNOWN[1]), unknown_event(UNKNOWN[1])])
    copy_events(source.app, ledger.app, after=known)

    p.catch_up(until=known + 1)  # a page that ends on an unknown event
    assert all(s["position"] == known + 1 for s in p.status())
    assert all(s["skipped_unknown"] == {UNKNOWN[0]: 1} for s in p.status())
    p.catch_up()

    counts = {UNKNOWN[0]: 1, UNKNOWN[1]: 2}
    for name, status in status_of(p).items():
        assert status["skipped_unknown"] == counts, name
    assert_applied_once(p, skipped=3)
    caught_up = rows_of(p)
    assert caught_up == rows_elsewhere(source.app, new_url())
    p.rebuild()
    assert rows_of(p) == caught_up
    assert all(s["skipped_unknown"] == counts for s in status_of(p).values())
    assert_applied_once(p, skipped=3)


def test_catching_up_again_writes_nothing(full: Store) -> None:
    url, ledger = full
    projector(ledger.app, page=10).catch_up()
    before = dump_store(url)

    assert projector(ledger.app, page=10).catch_up() == 0
    assert projector(ledger.app, page=10).catch_up(until=5) == 0

    assert dump_store(url) == before
    assert all(s["lag"] == 0 for s in status_of(projector(ledger.app)).values())


def wall_clock_values(rows: Rows, since: datetime, until: datetime) -> list[Any]:
    """Values in the rows (inside JSON too) that are a time between `since` and `until`."""
    return [(column, value) for table_rows in rows.values() for row in table_rows
            for column, value in row for leaf in _leaves(value)
            if (moment := _as_time(leaf)) is not None and since <= moment <= until]


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, str) and value[:1] in ("[", "{"):
        value = json.loads(value)
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _as_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def test_rows_hold_no_wall_clock_time_so_a_later_rebuild_gives_the_same_rows(
    full: Store,
) -> None:
    _, ledger = full
    since = datetime.now(UTC) - timedelta(seconds=1)
    p = projector(ledger.app, page=25)
    p.rebuild()
    first = rows_of(p)
    first_rebuilt_at = {s["name"]: s["rebuilt_at"] for s in p.status()}
    time.sleep(0.05)

    p.rebuild(restart=True)

    assert rows_of(p) == first
    assert wall_clock_values(first, since, datetime.now(UTC) + timedelta(seconds=1)) == []
    for status in p.status():  # the status is where wall-clock time belongs
        assert status["rebuilt_at"] > first_rebuilt_at[status["name"]]


def test_every_read_model_table_is_covered(full: Store) -> None:
    _, ledger = full
    p = projector(ledger.app)
    tables = {physical(t, False) for t in read_model_tables()}
    assert tables <= store_tables(p)
    assert set(rows_of(p)) == tables
    assert len(tables) >= len(READ_MODELS)
