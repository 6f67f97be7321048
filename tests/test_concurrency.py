"""Races between real processes, each with its own Ledger on the same store.

The outcomes asserted here do not depend on who wins: they hold for every interleaving.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from itertools import combinations
from typing import Any

import pytest

from ledger import FixedClock, Ledger
from ledger.store.recorders import LedgerPostgresRecorder
from tests.support.helpers import (
    ENDS,
    NOW,
    Json,
    World,
    add_session,
    approve,
    create_auto_campaign,
    duplicate,
    event_tables,
    expire_campaign,
    register,
    seller,
    slot,
)
from tests.support.racing import Racers

RACERS = 4


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pool = Racers(RACERS)
    yield pool
    pool.close()


def outcomes(results: list[Json]) -> Counter[str]:
    return Counter("ok" if r["ok"] else r["error"]["code"] for r in results)


def test_the_same_command_sent_at_once_is_written_once_and_replayed_to_the_others(
    world: World, registration: str, racers: Racers
) -> None:
    cmd = add_session(registration, slot(30))
    results = racers.race_one_each(world.url, NOW, [cmd] * RACERS)
    assert sorted(r["replayed"] for r in results) == [False] + [True] * (RACERS - 1)
    first = next(r for r in results if not r["replayed"])
    assert all(r == {**first, "replayed": r["replayed"]} for r in results)
    assert world.event_names(registration).count("SessionAdded") == 3


def test_one_account_registered_at_once_is_registered_once(
    world: World, manual_campaign: str, racers: Racers
) -> None:
    commands = [register(seller_id=f"seller-{i}", actor=seller(f"seller-{i}"))
                for i in range(RACERS)]
    results = racers.race_one_each(world.url, NOW, commands)
    assert outcomes(results) == {"ok": 1, "already_registered": RACERS - 1}
    winner = next(r for r in results if r["ok"])
    assert all(r["error"]["details"]["registration_id"] == winner["aggregate_id"]
               for r in results if not r["ok"])
    events_table, _ = event_tables(world.url)
    assert len(world.dump()["ledger_registrations"]) == 1
    assert len(world.dump()[events_table]) == 1 + 3  # CampaignCreated + one registration


def test_overlapping_sessions_added_at_once_admit_exactly_one(
    world: World, registration: str, racers: Racers
) -> None:
    windows = [slot(30 + 0.25 * i, 2) for i in range(RACERS)]  # every pair overlaps
    commands = [add_session(registration, w) if i % 2 else duplicate(registration, "s1", w)
                for i, w in enumerate(windows)]
    results = racers.race_one_each(world.url, NOW, commands)
    assert outcomes(results) == {"ok": 1, "session_overlap": RACERS - 1}
    sessions = world.ledger.registration(registration).sessions.values()
    open_sessions = [s for s in sessions if s.status in ("under_review", "approved")]
    assert len(open_sessions) == 3
    for a, b in combinations(open_sessions, 2):
        assert a.ends_at <= b.starts_at or b.ends_at <= a.starts_at, (a, b)


def test_sessions_added_at_once_without_expected_version_are_all_kept(
    world: World, registration: str, racers: Racers
) -> None:
    per_racer = 3
    batches = [[add_session(registration, slot(10 + 2 * (per_racer * i + j)))
                for j in range(per_racer)] for i in range(RACERS)]
    results = [r for batch in racers.race(world.url, NOW, batches) for r in batch]
    assert outcomes(results) == {"ok": RACERS * per_racer}
    reg = world.ledger.registration(registration)
    assert len(reg.sessions) == 2 + RACERS * per_racer
    assert reg.version == 3 + RACERS * per_racer
    assert sorted(r["version"] for r in results) == list(range(4, reg.version + 1))


def test_writers_racing_with_the_same_expected_version_leave_one_winner(
    world: World, registration: str, racers: Racers
) -> None:
    version = world.ledger.registration(registration).version
    commands = [add_session(registration, slot(10 + 2 * i), expected_version=version)
                for i in range(RACERS)]
    results = racers.race_one_each(world.url, NOW, commands)
    assert outcomes(results) == {"ok": 1, "conflict": RACERS - 1}
    assert world.ledger.registration(registration).version == version + 1


def test_expiry_racing_reviewers_expires_every_open_registration_once(
    world: World, manual_campaign: str, racers: Racers
) -> None:
    regs = [world.register(register(account_id=f"shop-{i}")) for i in range(RACERS - 1)]
    world.at(ENDS)
    commands = [expire_campaign()] + [approve(r) for r in regs]
    results = racers.race_one_each(world.url, ENDS, commands)
    assert results[0]["ok"], results[0]
    assert all(r["ok"] or r["error"]["code"] == "invalid_transition" for r in results[1:])
    for reg in regs:
        assert world.ledger.registration(reg).status() == "expired"
        assert world.event_names(reg).count("Expired") == 1


def test_ledgers_opened_at_once_on_one_store_all_open_and_work(
    world: World, manual_campaign: str, racers: Racers
) -> None:
    # Like N service workers starting together on an existing store.
    commands = [[register(account_id=f"shop-{i}")] for i in range(RACERS)]
    results = racers.race(world.url, NOW, commands, open_at_once=True)
    assert outcomes([r for batch in results for r in batch]) == {"ok": RACERS}


def test_ledgers_opened_at_once_on_a_new_store_all_open_and_work(
    backend: str, racers: Racers
) -> None:
    commands = [[create_auto_campaign(f"campaign-{i}")] for i in range(RACERS)]
    results = racers.race(backend, NOW, commands, open_at_once=True)
    assert outcomes([r for batch in results for r in batch]) == {"ok": RACERS}


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_ledger_opens_while_another_ledger_is_opening_the_same_store(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic form of N workers starting together: the first opener is held inside
    # its table-creation transaction (uncommitted) while the second opens.
    Ledger.open(backend, pool_size=1).close()  # the store exists
    paused, release = threading.Event(), threading.Event()
    create = LedgerPostgresRecorder._create_table

    def create_then_pause(self: LedgerPostgresRecorder, curs: Any) -> None:
        create(self, curs)
        if threading.current_thread().name == "first":
            paused.set()
            release.wait(30)

    monkeypatch.setattr(LedgerPostgresRecorder, "_create_table", create_then_pause)
    errors: list[str] = []
    first = threading.Thread(target=_open_and_send, args=(backend, errors), name="first")
    second = threading.Thread(target=_open_and_send, args=(backend, errors), name="second")
    first.start()
    assert paused.wait(30)
    second.start()
    time.sleep(0.5)  # the second is now waiting on the first's catalog rows
    release.set()
    first.join(30)
    second.join(30)
    assert errors == []


def _open_and_send(url: str, errors: list[str]) -> None:
    try:
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            result = ledger.send(create_auto_campaign(f"c-{threading.current_thread().name}"))
            assert result["ok"], result
    except Exception as e:
        errors.append(f"{threading.current_thread().name}: {type(e).__name__}: {e}")
