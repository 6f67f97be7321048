"""Tamper evidence: hash chains written with the events, `verify` naming each kind of
tampering done to the real tables, seals catching whole aggregates deleted or truncated,
chains unforked by racing writers, and the `ledger audit verify|seal` commands."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import UUID, uuid4

import psycopg
import pytest
from click.testing import CliRunner

from ledger import FixedClock, Ledger
from ledger.aggregates.base import campaign_uuid
from ledger.audit import chain
from ledger.audit.merkle import MerkleRoot
from ledger.cli import main
from tests.conftest import NewUrl, new_schema_url
from tests.support.helpers import (
    NOW,
    add_session,
    approve,
    create_auto_campaign,
    create_campaign,
    register,
    register_auto,
    slot,
    withdraw,
)
from tests.support.racing import Racers

# The scene --------------------------------------------------------------------------------------

# Two campaigns (an event each), a manual registration (5 events), an auto one (2).
EVENTS, AGGREGATES = 9, 4


@dataclass
class Scene:
    url: str
    registration: UUID  # versions 1-5: Registered, SessionAdded x2, SessionAdded, Approved
    campaign: UUID

    def open(self) -> Ledger:
        return Ledger.open(self.url, clock=FixedClock(NOW), pool_size=1)

    def verify(self) -> chain.Report:
        with self.open() as ledger:
            return chain.verify(ledger.app.store)

    def seal(self) -> chain.Seal:
        with self.open() as ledger:
            report, sealed = chain.seal(ledger.app.store, NOW)
        assert report.clean, report.findings
        assert sealed is not None
        return sealed

    def found(self) -> list[tuple[str, UUID | None, int | None]]:
        return [(f.kind, f.aggregate_id, f.version) for f in self.verify().findings]


def build_scene(url: str) -> Scene:
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        campaign = ledger.send(create_campaign())["aggregate_id"]
        auto = ledger.send(create_auto_campaign())["aggregate_id"]
        registration = ledger.send(register(campaign))["aggregate_id"]
        assert ledger.send(add_session(registration, slot(6)))["ok"]
        assert ledger.send(approve(registration))["version"] == 5
        assert ledger.send(register_auto(auto))["ok"]
    return Scene(url, UUID(registration), campaign_uuid(campaign))


@pytest.fixture
def scene(new_url: NewUrl) -> Scene:
    return build_scene(new_url())


# The tables, touched directly (as someone with database access could) -----------------------------

class Tables:
    """Raw SQL on a store: `?` placeholders, aggregate ids as UUIDs, on either backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite:")
        self.events = "stored_events" if self.sqlite else "ledger_events"

    def run(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        values = [(p.hex if self.sqlite else p) if isinstance(p, UUID) else p for p in params]
        statement = statement.replace("EVENTS", self.events)
        if self.sqlite:
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as lite, lite:
                return lite.execute(statement, values).fetchall()
        parts = urlsplit(self.url)
        schema = parse_qs(parts.query)["schema"][0]
        with psycopg.connect(urlunsplit(parts._replace(query="")),
                             options=f"-c search_path={schema}") as conn:
            cursor = conn.execute(statement.replace("?", "%s"), values)
            return cursor.fetchall() if cursor.description else []

    def event(self, aggregate: UUID, version: int) -> tuple[str, bytes]:
        [(topic, state)] = self.run("SELECT topic, state FROM EVENTS WHERE originator_id=? "
                                    "AND originator_version=?", aggregate, version)
        return topic, bytes(state)

    def set_event(self, aggregate: UUID, version: int, topic: str, state: bytes) -> None:
        self.run("UPDATE EVENTS SET topic=?, state=? WHERE originator_id=? "
                 "AND originator_version=?", topic, state, aggregate, version)

    def delete(self, table: str, aggregate: UUID, since_version: int = 1,
               until_version: int = 10**9) -> None:
        self.run(f"DELETE FROM {table} WHERE originator_id=? AND originator_version>=? "
                 "AND originator_version<=?", aggregate, since_version, until_version)


Tamper = Callable[[Tables, UUID], None]


def change_a_payload_byte(tables: Tables, reg: UUID) -> None:
    topic, state = tables.event(reg, 2)
    i = state.index(b"s1")  # the session id inside the JSON
    tables.set_event(reg, 2, topic, state[:i] + b"x" + state[i + 1:])


def edit_the_payload_as_text_in_sql(tables: Tables, reg: UUID) -> None:
    """What an operator's hand-written UPDATE does (on SQLite it even leaves TEXT behind)."""
    edited = ("replace(state, 's1', 'sX')" if tables.sqlite else
              "convert_to(replace(convert_from(state, 'UTF8'), 's1', 'sX'), 'UTF8')")
    tables.run(f"UPDATE EVENTS SET state = {edited} WHERE originator_id=? "
               "AND originator_version=?", reg, 2)


def change_a_topic(tables: Tables, reg: UUID) -> None:
    topic, state = tables.event(reg, 5)
    tables.set_event(reg, 5, topic.replace("Approved", "Rejected"), state)


def delete_an_event(tables: Tables, reg: UUID) -> None:
    tables.delete("EVENTS", reg, 3, 3)


def delete_an_event_and_its_hash(tables: Tables, reg: UUID) -> None:
    tables.delete("EVENTS", reg, 3, 3)
    tables.delete("ledger_event_hashes", reg, 3, 3)


def swap_two_versions(tables: Tables, reg: UUID) -> None:
    second, fourth = tables.event(reg, 2), tables.event(reg, 4)
    tables.set_event(reg, 2, *fourth)
    tables.set_event(reg, 4, *second)


def insert_a_forged_event(tables: Tables, reg: UUID) -> None:
    topic, state = tables.event(reg, 5)
    tables.run("INSERT INTO EVENTS (originator_id, originator_version, topic, state) "
               "VALUES (?, ?, ?, ?)", reg, 6, topic, state)


@pytest.mark.parametrize(("tamper", "kind", "version", "says"), [
    (change_a_payload_byte, "altered", 2, "topic or state was changed"),
    (edit_the_payload_as_text_in_sql, "altered", 2, "topic or state was changed"),
    (change_a_topic, "altered", 5, "topic or state was changed"),
    (delete_an_event, "deleted_event", 3, "event was deleted"),
    (delete_an_event_and_its_hash, "gap", 3, "version 3 is missing"),
    (swap_two_versions, "swapped", 2, "now stored as version 4"),
    (insert_a_forged_event, "unhashed", 6, "inserted outside the ledger"),
])
def test_verify_names_the_first_broken_link_of_a_tampered_aggregate(
    scene: Scene, tamper: Tamper, kind: str, version: int, says: str
) -> None:
    tamper(Tables(scene.url), scene.registration)
    report = scene.verify()
    assert [(f.kind, f.aggregate_id, f.version) for f in report.findings] == [
        (kind, scene.registration, version)]
    assert says in report.findings[0].detail
    assert report.aggregates == AGGREGATES


def test_a_store_written_by_the_ledger_verifies_clean(scene: Scene) -> None:
    report = scene.verify()
    assert report.clean
    assert (report.events, report.aggregates, report.seals) == (EVENTS, AGGREGATES, 0)
    assert report.position == EVENTS


def test_every_event_has_one_hash_row_chained_from_zeros(scene: Scene) -> None:
    tables = Tables(scene.url)
    rows = tables.run("SELECT originator_version, hash FROM ledger_event_hashes "
                      "WHERE originator_id=? ORDER BY originator_version", scene.registration)
    previous = chain.GENESIS
    for version, digest in rows:
        expected = chain.event_hash(previous, scene.registration, version,
                                    *tables.event(scene.registration, version))
        assert bytes(digest) == expected
        previous = expected
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert tables.run("SELECT COUNT(*) FROM ledger_event_hashes") == [(EVENTS,)]


def test_an_untouched_aggregate_is_not_reported_beside_a_tampered_one(scene: Scene) -> None:
    tables = Tables(scene.url)
    change_a_payload_byte(tables, scene.registration)
    tables.delete("EVENTS", scene.campaign)
    tables.delete("ledger_event_hashes", scene.campaign)  # no seal: this goes unseen
    assert scene.found() == [("altered", scene.registration, 2)]


# Seals --------------------------------------------------------------------------------------------

def test_a_seal_records_every_head_and_later_writes_still_verify(scene: Scene) -> None:
    sealed = scene.seal()
    assert (sealed.seal_id, sealed.position, sealed.aggregates, sealed.events) == (
        1, EVENTS, AGGREGATES, EVENTS)
    with scene.open() as ledger:
        assert ledger.send(add_session(str(scene.registration), slot(9)))["version"] == 6
    report = scene.verify()
    assert report.clean
    assert (report.seals, report.events) == (1, EVENTS + 1)


def test_verify_finds_a_whole_aggregate_deleted_after_a_seal(scene: Scene) -> None:
    scene.seal()
    tables = Tables(scene.url)
    for table in ("EVENTS", "ledger_event_hashes"):
        tables.delete(table, scene.registration)
    [finding] = scene.verify().findings
    assert (finding.kind, finding.aggregate_id, finding.version) == (
        "deleted", scene.registration, 1)
    assert "sealed by seal #1 at version 5" in finding.detail


def test_verify_finds_an_aggregate_truncated_after_a_seal(scene: Scene) -> None:
    scene.seal()
    tables = Tables(scene.url)
    for table in ("EVENTS", "ledger_event_hashes"):
        tables.delete(table, scene.registration, since_version=4)
    [finding] = scene.verify().findings
    assert (finding.kind, finding.aggregate_id, finding.version) == (
        "truncated", scene.registration, 4)
    assert "now end at version 3" in finding.detail


def test_verify_finds_a_chain_rehashed_after_a_seal(scene: Scene) -> None:
    scene.seal()
    tables = Tables(scene.url)
    change_a_payload_byte(tables, scene.registration)
    previous = bytes(tables.run("SELECT hash FROM ledger_event_hashes WHERE originator_id=? "
                                "AND originator_version=1", scene.registration)[0][0])
    for version in range(2, 6):  # as someone who knows the algorithm would
        previous = chain.event_hash(previous, scene.registration, version,
                                    *tables.event(scene.registration, version))
        tables.run("UPDATE ledger_event_hashes SET hash=? WHERE originator_id=? "
                   "AND originator_version=?", previous, scene.registration, version)
    assert scene.found() == [("rewritten", scene.registration, 5)]


@pytest.mark.parametrize("change", [
    "DELETE FROM ledger_seal_heads WHERE originator_id=?",
    "UPDATE ledger_seal_heads SET originator_version=originator_version+1 WHERE originator_id=?",
])
def test_verify_finds_a_seal_whose_heads_were_changed(scene: Scene, change: str) -> None:
    scene.seal()
    Tables(scene.url).run(change, scene.campaign)
    [finding] = scene.verify().findings
    assert (finding.kind, finding.aggregate_id) == ("seal_altered", None)
    assert finding.line() == ("seal_altered: seal #1: its stored heads no longer give "
                              "its root (a head was changed, added or removed)")


def test_a_write_over_a_deleted_event_is_refused_at_once_and_says_why(scene: Scene) -> None:
    tables = Tables(scene.url)
    tables.delete("EVENTS", scene.registration, 5, 5)  # its hash row stays behind
    before = tables.run("SELECT count(*) FROM EVENTS")
    with scene.open() as ledger:
        result = ledger.send(withdraw(str(scene.registration), ["s1"]))
    assert result["ok"] is False
    assert result["error"]["code"] == "conflict"
    assert "an event was deleted outside the ledger" in result["error"]["message"]
    assert tables.run("SELECT count(*) FROM EVENTS") == before


def test_an_altered_store_is_not_sealed(scene: Scene) -> None:
    swap_two_versions(Tables(scene.url), scene.registration)
    with scene.open() as ledger:
        report, sealed = chain.seal(ledger.app.store, NOW)
    assert sealed is None
    assert [f.kind for f in report.findings] == ["swapped"]
    assert Tables(scene.url).run("SELECT COUNT(*) FROM ledger_seals") == [(0,)]


def _rfc6962(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _rfc6962(leaves[:split]) + _rfc6962(leaves[split:])).digest()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 13, 100])
def test_the_streamed_merkle_root_is_rfc_6962s_tree_hash(n: int) -> None:
    heads = [(uuid4(), i + 1, hashlib.sha256(bytes([i])).digest()) for i in range(n)]
    merkle = MerkleRoot()
    for head in heads:
        merkle.add(*head)
    leaves = [hashlib.sha256(b"\x00" + oid.bytes + version.to_bytes(8, "big") + digest).digest()
              for oid, version, digest in heads]
    assert merkle.root() == _rfc6962(leaves)


# Racing writers -----------------------------------------------------------------------------------

RACERS = 3


@pytest.fixture(scope="module")
def racers() -> Iterator[Racers]:
    pool = Racers(RACERS)
    yield pool
    pool.close()


def test_racing_writers_never_fork_a_chain(scene: Scene, racers: Racers) -> None:
    reg = str(scene.registration)
    batches = [[add_session(reg, slot(10 + 2 * (4 * i + j))) for j in range(4)]
               + [register(account_id=f"shop-race-{i}-{j}") for j in range(2)]
               for i in range(RACERS)]
    results = [r for batch in racers.race(scene.url, NOW, batches) for r in batch]
    assert all(r["ok"] for r in results), results
    report = scene.verify()
    assert report.clean, [f.line() for f in report.findings]
    assert report.events == EVENTS + RACERS * (4 + 2 * 3)  # a registration: 3 events
    tables = Tables(scene.url)
    assert tables.run("SELECT COUNT(*) FROM ledger_event_hashes") == [(report.events,)]


# A recorder remembers the chain heads it committed (`ledger.store.rows.Heads`) ------------------

def test_writers_taking_turns_on_one_aggregate_chain_to_each_others_events(scene: Scene) -> None:
    """Each writer chains its next event to the stored head, whether it wrote that head
    itself (remembered) or another writer did (read back)."""
    reg = str(scene.registration)
    with scene.open() as first, scene.open() as second:
        for hour, writer in zip(range(10, 22, 2), [first, second, first, first, second, first],
                                strict=True):
            assert writer.send(add_session(reg, slot(hour)))["ok"]
        assert len(first.app.store.heads.known([(scene.registration, 11)])[0]) == 1
    report = scene.verify()
    assert report.clean, [f.line() for f in report.findings]
    assert report.events == EVENTS + 6


@pytest.mark.postgres
def test_a_head_is_remembered_only_once_its_write_committed(postgres_database: str) -> None:
    """A write whose commit fails (here a deferred check, run by PostgreSQL at commit,
    after the chain links were written) leaves no head behind: the next write chains to
    what another writer committed at that version. (SQLite has no failure after the
    statements but before the commit, short of the disk.)"""
    scene = build_scene(new_schema_url(postgres_database))
    reg = str(scene.registration)
    tables = Tables(scene.url)
    tables.run("CREATE FUNCTION doomed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               "IF starts_with(NEW.command_id, 'doomed-') THEN RAISE EXCEPTION 'doomed at commit'; "
               "END IF; RETURN NEW; END $$")
    tables.run("CREATE CONSTRAINT TRIGGER doomed AFTER INSERT ON ledger_commands "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION doomed()")
    with scene.open() as first, scene.open() as second:
        doomed = add_session(reg, slot(10))
        doomed["command_id"] = "doomed-1"
        with pytest.raises(Exception, match="doomed at commit"):
            first.send(doomed)
        assert first.app.store.heads.known([(scene.registration, 6)])[0] == {}
        assert second.send(add_session(reg, slot(12)))["version"] == 6
        assert first.send(add_session(reg, slot(14)))["version"] == 7
    report = scene.verify()
    assert report.clean, [f.line() for f in report.findings]


# The commands -----------------------------------------------------------------------------------

def _cli(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--db", url, "--now", NOW.isoformat(), "audit", *args])
    return result.exit_code, result.stdout


def test_audit_verify_prints_what_it_checked_and_exits_0_on_a_clean_store(scene: Scene) -> None:
    code, out = _cli(scene.url, "verify")
    assert code == 0
    assert out.splitlines() == [f"verified {EVENTS} events of {AGGREGATES} aggregates up to "
                                f"position {EVENTS}, 0 snapshot(s) and 6 command row(s), "
                                "against 0 seal(s): nothing altered"]


def test_audit_verify_names_each_broken_link_and_exits_1(scene: Scene) -> None:
    delete_an_event_and_its_hash(Tables(scene.url), scene.registration)
    code, out = _cli(scene.url, "verify")
    assert code == 1
    assert out.splitlines() == [f"aggregate {scene.registration} version 3: gap: version 3 "
                                "is missing (next stored version is 4)"]
    code, out = _cli(scene.url, "verify", "--json")
    assert code == 1
    report = json.loads(out)
    assert (report["ok"], report["events"]) == (False, EVENTS - 1)
    assert report["findings"] == [{"kind": "gap", "aggregate_id": str(scene.registration),
                                   "version": 3, "detail": "version 3 is missing (next "
                                   "stored version is 4)"}]


def test_audit_seal_prints_the_seal_and_verify_then_checks_it(scene: Scene) -> None:
    code, out = _cli(scene.url, "seal", "--json")
    assert code == 0
    sealed = json.loads(out)
    assert {k: sealed[k] for k in ("ok", "seal_id", "aggregates", "events")} == {
        "ok": True, "seal_id": 1, "aggregates": AGGREGATES, "events": EVENTS}
    assert len(bytes.fromhex(sealed["root"])) == 32
    code, out = _cli(scene.url, "seal")
    assert code == 0
    assert out.startswith(f"sealed #2 at position {EVENTS}: ")
    code, out = _cli(scene.url, "verify")
    assert code == 0
    assert "against 2 seal(s)" in out


def test_audit_seal_refuses_an_altered_store(scene: Scene) -> None:
    insert_a_forged_event(Tables(scene.url), scene.registration)
    code, out = _cli(scene.url, "seal")
    assert code == 1
    assert out.splitlines() == [f"aggregate {scene.registration} version 6: unhashed: an "
                                "event with no hash row: inserted outside the ledger "
                                "(or written by a ledger older than hash chains)"]
