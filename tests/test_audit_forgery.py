"""Forgeries a database writer can make even after reading our code, on both backends:
a snapshot rehashed after an edit, seals from before signing began, sealing over an
altered store. (tests/test_audit_tamper.py holds the hand edits of every table.)"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.conftest import NewUrl
from tests.support.helpers import NOW, add_session, slot
from tests.test_audit_tamper import KEY, MALLORY, OWNER, Store, _owner_of, build

FORGED_IDENTITY = [
    pytest.param(f'"seller_id":"{OWNER}"', f'"seller_id":"{MALLORY}"', "seller_id", id="seller"),
    pytest.param('"account_id":"shop-1"', '"account_id":"shop-9"', "account_id", id="account"),
    pytest.param('"campaign_id":"mega-1111-live"', '"campaign_id":"other"', "campaign_id",
                 id="campaign"),
    pytest.param('"allow_duplicates":true', '"allow_duplicates":false', "terms", id="terms"),
]


@pytest.fixture
def store(new_url: NewUrl) -> Store:
    return build(new_url())


@pytest.fixture
def keyed(new_url: NewUrl, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store written with LEDGER_SEAL_KEY set (its snapshot hash row is keyed)."""
    monkeypatch.setenv("LEDGER_SEAL_KEY", KEY.decode())
    return build(new_url())


def _verify(store: Store, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify", *args])
    return result.exit_code, result.stdout, result.stderr


# a. Identity never comes from a snapshot alone --------------------------------------------

@pytest.mark.parametrize(("old", "new", "field"), FORGED_IDENTITY)
def test_a_rehashed_snapshot_cannot_change_who_a_registration_belongs_to(
    store: Store, old: str, new: str, field: str,
) -> None:
    store.replace_in_snapshot(old, new)
    store.rehash_snapshot()  # its SHA-256 row recomputed: the hash check alone passes
    code, out, err = _owner_of(store)
    assert code == 0
    assert new.replace(":", ": ") not in out  # the replayed registration is shown
    assert f"at version 50 does not match its chained events (its {field} differ" in err


def test_the_forged_owner_is_refused_and_the_real_owner_acts(store: Store) -> None:
    store.replace_in_snapshot(f'"seller_id":"{OWNER}"', f'"seller_id":"{MALLORY}"')
    store.rehash_snapshot()
    with store.open() as ledger:
        stolen = ledger.send(add_session(str(store.registration), slot(40), seller_id=MALLORY))
        assert stolen["error"]["code"] == "not_found"
        assert ledger.send(add_session(str(store.registration), slot(40)))["version"] == 52


def test_with_the_key_a_snapshot_rehashed_without_it_is_not_used(keyed: Store) -> None:
    assert _verify(keyed)[0] == 0  # the keyed row matches under the key
    keyed.replace_in_snapshot('"under_review"', '"approved"')  # not identity: sessions
    keyed.rehash_snapshot()
    code, out, err = _owner_of(keyed)
    assert code == 0
    assert '"approved"' not in out
    assert "its hash row is not keyed with LEDGER_SEAL_KEY" in err
    code, out, _ = _verify(keyed)
    assert code == 1
    assert "snapshot_altered" in out


def test_snapshots_hashed_before_the_key_was_set_are_a_note_not_a_finding(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_SEAL_KEY", KEY.decode())
    code, _, err = _verify(store)
    assert code == 0
    assert ("note: 1 snapshot(s) agree with their events but were hashed before "
            "LEDGER_SEAL_KEY was set") in err


# b. Seals made before signing began -------------------------------------------------------

def test_unsigned_seals_older_than_the_first_signed_one_are_not_findings(store: Store,
                                                                          ) -> None:
    store.seal(key=None)
    store.seal(key=None)
    store.seal(key=KEY)
    assert store.verify(key=KEY) == []
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify"],
                                env={"LEDGER_SEAL_KEY": KEY.decode()})
    assert result.exit_code == 0
    assert result.stdout.rstrip().endswith(
        "against 3 seal(s) (1 checked by signature, 2 made before signing began): "
        "nothing altered")


def test_an_unsigned_seal_made_after_a_signed_one_is_reported(store: Store) -> None:
    store.seal(key=None)
    store.seal(key=KEY)
    store.seal(key=None)
    assert store.verify(key=KEY) == [("seal_unsigned", None, None)]


def test_with_the_key_set_and_no_seal_signed_verify_says_so_and_passes(store: Store) -> None:
    store.seal(key=None)
    result = CliRunner().invoke(main, ["--db", store.url, "audit", "verify", "--json"],
                                env={"LEDGER_SEAL_KEY": KEY.decode()})
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert (report["signed_seals"], report["seals_before_signing"]) == (0, 1)
    assert any(note.startswith("LEDGER_SEAL_KEY is set but none of the 1 seal(s) is signed")
               for note in report["notes"])


# c. `ledger audit seal` seals only a clean store -------------------------------------------

BESIDE_THE_CHAINS = [
    pytest.param(lambda s: s.replace_in_snapshot('"under_review"', '"approved"'),
                 "snapshot_altered", id="snapshot"),
    pytest.param(lambda s: s.tables.run("DELETE FROM ledger_commands WHERE version = 20"),
                 "command_missing", id="command row"),
    pytest.param(lambda s: s.tables.run("DELETE FROM ledger_registrations"),
                 "index_altered", id="index"),
]


@pytest.mark.parametrize(("edit", "kind"), BESIDE_THE_CHAINS)
def test_seal_refuses_a_store_whose_snapshots_command_rows_or_index_were_altered(
    store: Store, edit: Callable[[Store], object], kind: str,
) -> None:
    edit(store)
    result = CliRunner().invoke(main, ["--db", store.url, "--now", NOW.isoformat(), "audit",
                                       "seal"])
    assert result.exit_code == 1
    assert f": {kind}: " in result.stdout
    assert "not sealed: fix or explain the findings above first" in result.stderr
    assert store.tables.run("SELECT COUNT(*) FROM ledger_seals") == [(0,)]
    assert store.tables.run("SELECT COUNT(*) FROM ledger_seal_heads") == [(0,)]
