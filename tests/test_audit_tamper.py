"""An insider with write access to the database edits each table by hand; on both backends,
`ledger audit verify` finds the edit, or the edit cannot change a decision.

Why the cases not found by verify are safe (docs/design.md, "Integrity against an
insider", has the details):
- `ledger_commands.fingerprint`: a resend of the real command is refused (`conflict`) or
  another body under that id is answered with the stored result, which verify checks
  against the events; nothing is written either way.
- `ledger_snapshot_hashes` deleted or changed: the snapshot is not used (the events are
  replayed, with a warning), and verify reports it anyway.
- `ledger_tokens`: credentials, not history; out of verify's scope (a writer who mints a
  token sends genuine commands under that token's actor).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import pytest
from click.testing import CliRunner

from ledger import FixedClock, Ledger
from ledger.audit import chain, integrity, seals
from ledger.cli import main
from ledger.store.hashing import snapshot_hash
from tests.conftest import NewUrl
from tests.support.helpers import NOW, add_session, create_campaign, register, slot
from tests.test_audit_chain import Tables, change_a_payload_byte

KEY = b"kept-outside-the-database"
OWNER, MALLORY = "seller-1", "mallory"


@dataclass
class Store:
    url: str
    registration: UUID  # 51 events: a snapshot at version 50
    tables: Tables

    def open(self) -> Ledger:
        return Ledger.open(self.url, clock=FixedClock(NOW), pool_size=1)

    def verify(self, root: bytes | None = None, key: bytes | None = KEY
               ) -> list[tuple[str, UUID | None, int | None]]:
        with self.open() as ledger:
            checked = integrity.verify(ledger.app, root=root, key=key)
        return [(f.kind, f.aggregate_id, f.version) for f in checked.report.findings]

    def seal(self, key: bytes | None = KEY) -> chain.Seal:
        with self.open() as ledger:
            _, sealed = chain.seal(ledger.app.store, NOW,
                                   sign=None if key is None else seals.signer(key))
        assert sealed is not None
        return sealed

    def snapshots(self) -> str:
        return "stored_snapshots" if self.tables.sqlite else "ledger_snapshots"

    def replace_in_snapshot(self, old: str, new: str) -> None:
        edited = ("CAST(replace(CAST(state AS TEXT), ?, ?) AS BLOB)" if self.tables.sqlite
                  else "convert_to(replace(convert_from(state, 'UTF8'), ?, ?), 'UTF8')")
        self.tables.run(f"UPDATE {self.snapshots()} SET state = {edited}", old, new)

    def rehash_snapshot(self) -> None:
        """What an insider who read ledger/store/hashing.py would do after an edit (an
        insider without LEDGER_SEAL_KEY: a SHA-256 row)."""
        [(version, topic, state)] = self.tables.run(
            f"SELECT originator_version, topic, state FROM {self.snapshots()}")
        [(event_hash,)] = self.tables.run(
            "SELECT hash FROM ledger_event_hashes WHERE originator_id=? AND "
            "originator_version=?", self.registration, version)
        digest = snapshot_hash(bytes(event_hash), self.registration, version, topic, bytes(state))
        self.tables.run("UPDATE ledger_snapshot_hashes SET hash=?", digest)


def build(url: str) -> Store:
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign())["ok"]
        reg = ledger.send(register())["aggregate_id"]  # versions 1-3
        for i in range(48):
            assert ledger.send(add_session(reg, slot(3 + i / 2, 0.25)))["ok"]
    store = Store(url, UUID(reg), Tables(url))
    assert store.tables.run(f"SELECT originator_version FROM {store.snapshots()}") == [(50,)]
    return store


@pytest.fixture
def store(new_url: NewUrl) -> Store:
    return build(new_url())


def _owner_of(store: Store) -> tuple[int, str, str]:
    """`ledger show registration` as a user runs it (its own process: what reaches stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "--db", store.url, "--now", NOW.isoformat(), "show",
         "registration", str(store.registration)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout, result.stderr


# Snapshots -------------------------------------------------------------------------------

def test_an_edited_snapshot_is_not_used_and_says_so_and_verify_reports_it(store: Store) -> None:
    store.replace_in_snapshot(f'"seller_id":"{OWNER}"', f'"seller_id":"{MALLORY}"')
    code, out, err = _owner_of(store)
    assert code == 0
    assert f'"seller_id": "{OWNER}"' in out
    assert f"snapshot of aggregate {store.registration} at version 50 does not match" in err
    with store.open() as ledger:
        stolen = ledger.send(add_session(str(store.registration), slot(40),
                                         seller_id=MALLORY))
        assert stolen["ok"] is False  # refused: the replayed owner is seller-1
        assert ledger.send(add_session(str(store.registration), slot(40)))["version"] == 52
    assert store.verify() == [("snapshot_altered", store.registration, 50)]


def test_a_snapshot_edited_and_rehashed_is_reported_by_verify(store: Store) -> None:
    store.replace_in_snapshot(f'"seller_id":"{OWNER}"', f'"seller_id":"{MALLORY}"')
    store.rehash_snapshot()
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify"])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"aggregate {store.registration} version 50: snapshot_altered: the stored snapshot "
        "differs from the events replayed to version 50 (fields: seller_id); loads do not "
        "use it (they replay the events)"]


def test_verify_counts_the_snapshots_it_rederived(store: Store) -> None:
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify", "--json"])
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert (summary["snapshots"], summary["commands"]) == (1, 50)


# Every table, edited by hand -------------------------------------------------------------

Edit = Callable[[Store], None]


def _sql(statement: str) -> Edit:
    def edit(store: Store) -> None:
        store.tables.run(statement.replace("SNAPSHOTS", store.snapshots()))
    edit.__name__ = statement
    return edit


CASES: list[tuple[str, Edit, str]] = [
    ("events: a payload byte", lambda s: change_a_payload_byte(s.tables, s.registration),
     "altered"),
    ("ledger_event_hashes: a hash", _sql(
        "UPDATE ledger_event_hashes SET hash = (SELECT hash FROM ledger_event_hashes h2 "
        "WHERE h2.originator_version = 1 LIMIT 1) WHERE originator_version = 7"), "altered"),
    ("snapshots: the seller", lambda s: s.replace_in_snapshot('"seller-1"', '"mallory"'),
     "snapshot_altered"),
    ("snapshots: a session's status", lambda s: s.replace_in_snapshot(
        '"under_review"', '"approved"'), "snapshot_altered"),
    ("ledger_snapshot_hashes: deleted", _sql("DELETE FROM ledger_snapshot_hashes"),
     "snapshot_altered"),
    ("ledger_commands: the result's events", _sql(
        "UPDATE ledger_commands SET result = replace(result, '\"SessionAdded\"', "
        "'\"Approved\"') WHERE version = 20"), "command_altered"),
    ("ledger_commands: the result's version", _sql(
        "UPDATE ledger_commands SET result = replace(result, '\"version\":20', "
        "'\"version\":21') WHERE version = 20"), "command_altered"),
    ("ledger_commands: a row deleted", _sql("DELETE FROM ledger_commands WHERE version = 20"),
     "command_missing"),
    ("ledger_registrations: a row deleted", _sql("DELETE FROM ledger_registrations"),
     "index_altered"),
    ("ledger_registrations: the campaign", _sql(
        "UPDATE ledger_registrations SET campaign_id = 'other'"), "index_altered"),
    ("ledger_registrations: the seller", _sql(
        "UPDATE ledger_registrations SET seller_id = 'mallory'"), "index_altered"),
    ("ledger_seals: the root", _sql(
        "UPDATE ledger_seals SET root = (SELECT hash FROM ledger_event_hashes LIMIT 1)"),
     "seal_altered"),
    ("ledger_seals: the position (signed)", _sql(
        "UPDATE ledger_seals SET position = position - 1"), "seal_forged"),
    ("ledger_seal_heads: a head deleted", _sql("DELETE FROM ledger_seal_heads WHERE "
                                               "originator_version = 1"), "seal_altered"),
    ("ledger_seal_signatures: one deleted", _sql(
        "DELETE FROM ledger_seal_signatures WHERE seal_id = 2"), "seal_unsigned"),
]


@pytest.mark.parametrize(("edit", "kind"), [pytest.param(e, k, id=name) for name, e, k in CASES])
def test_verify_finds_a_hand_edit_of_any_ledger_table(store: Store, edit: Edit,
                                                      kind: str) -> None:
    store.seal()
    store.seal()
    assert store.verify() == []
    edit(store)
    assert kind in [found[0] for found in store.verify()]


def test_a_forged_command_fingerprint_changes_no_state(store: Store) -> None:
    """Safe: the genuine resend is refused and writes nothing (and verify checks results)."""
    with store.open() as ledger:
        cmd = add_session(str(store.registration), slot(60))
        assert ledger.send(cmd)["version"] == 52
        store.tables.run("UPDATE ledger_commands SET fingerprint = 'forged' WHERE "
                         "command_id = ?", cmd["command_id"])
        before = store.tables.run("SELECT COUNT(*) FROM EVENTS")
        assert ledger.send(cmd)["error"]["code"] == "conflict"
        assert store.tables.run("SELECT COUNT(*) FROM EVENTS") == before
    assert store.verify() == []


# Seals anchored outside the database ------------------------------------------------------

def _rewrite_chain_and_reseal(store: Store) -> chain.Seal:
    """Change an event, rehash its chain, drop the snapshot it would contradict, and
    rebuild every seal to match (unsigned)."""
    tables = store.tables
    for table in (store.snapshots(), "ledger_snapshot_hashes"):
        tables.run(f"DELETE FROM {table}")
    change_a_payload_byte(tables, store.registration)
    previous = chain.GENESIS
    for version in range(1, 52):
        previous = chain.event_hash(previous, store.registration, version,
                                    *tables.event(store.registration, version))
        tables.run("UPDATE ledger_event_hashes SET hash=? WHERE originator_id=? "
                   "AND originator_version=?", previous, store.registration, version)
    for table in ("ledger_seal_signatures", "ledger_seal_heads", "ledger_seals"):
        tables.run(f"DELETE FROM {table}")
    return store.seal(key=None)


def test_a_consistent_rewrite_with_new_seals_is_found_only_against_the_kept_root(
    store: Store,
) -> None:
    kept = bytes.fromhex(store.seal().root)
    _rewrite_chain_and_reseal(store)
    assert store.verify(key=None) == []  # the database alone vouches for the rewrite
    assert store.verify(root=kept, key=None) == [("root_not_found", None, None)]


def test_deleted_seal_rows_are_found_against_the_kept_root(store: Store) -> None:
    kept = bytes.fromhex(store.seal().root)
    for table in ("ledger_seal_signatures", "ledger_seal_heads", "ledger_seals"):
        store.tables.run(f"DELETE FROM {table}")
    assert store.verify(key=None) == []
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify", "--root",
                                       kept.hex()])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"root_not_found: no seal has root {kept.hex()}: the seal rows were deleted or "
        "rewritten since it was printed"]


def test_a_seal_rewritten_without_the_key_is_reported_as_forged(store: Store) -> None:
    store.seal()
    forged = _rewrite_chain_and_reseal(store)
    store.tables.run("INSERT INTO ledger_seal_signatures VALUES (?, ?)", forged.seal_id,
                     b"\x00" * 32)
    assert store.verify() == [("seal_forged", None, None)]


def test_seal_signs_with_the_key_prints_the_root_and_seals_lists_it(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_SEAL_KEY", KEY.decode())
    runner = CliRunner()
    sealed = runner.invoke(main, ["--db", store.url, "--now", NOW.isoformat(), "audit", "seal"])
    assert sealed.exit_code == 0
    first, root_line = sealed.stdout.splitlines()
    assert first == "sealed #1 at position 52: 2 aggregates, 52 events, signed"
    root = root_line.removeprefix("root ")
    assert f"ledger audit verify --root {root}" in sealed.stderr
    listed = runner.invoke(main, ["--db", store.url, "audit", "seals", "--json"])
    assert listed.exit_code == 0
    assert listed.stdout.strip() == (
        f'{{"seal_id": 1, "sealed_at": "{NOW.isoformat().replace("+00:00", "Z")}", '
        f'"position": 52, "aggregates": 2, "events": 52, "root": "{root}", "signed": true}}')
    checked = runner.invoke(main, ["--db", store.url, "audit", "verify", "--root", root])
    assert checked.exit_code == 0, checked.stdout
    monkeypatch.setenv("LEDGER_SEAL_KEY", "another key")
    forged = runner.invoke(main, ["--db", store.url, "audit", "verify"])
    assert forged.exit_code == 1
    assert forged.stdout.startswith("seal_forged: seal #1: its signature does not match")


def test_verify_refuses_a_root_that_is_not_64_hex_digits(store: Store) -> None:
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify", "--root", "abc"])
    assert result.exit_code == 2
    assert "must be a seal's root: 64 hex digits" in result.stderr
