"""Write-time hashing: the event chain links, snapshot hashes, and the tables that hold them.

Every stored event is chained to the previous event of its aggregate::

    hash(v) = sha256(hash(v-1) ‖ originator id (16 bytes) ‖ v (8 bytes, big-endian)
                     ‖ len(topic) (4 bytes) ‖ topic (UTF-8) ‖ stored state)

with 32 zero bytes before version 1. A snapshot taken at version v is tied to the hash of
event v (`snapshot_hash`), keyed with LEDGER_SEAL_KEY when it is set, so that a database
writer without the key cannot recompute it. Our recorders (events and snapshots) and
bench/rebuild.py's bulk writer all hash through this module; `ledger.audit` re-derives the
same values to verify them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

GENESIS = bytes(32)
KEY_VARIABLE = "LEDGER_SEAL_KEY"
EVENT_HASHES = "ledger_event_hashes"
SNAPSHOT_HASHES = "ledger_snapshot_hashes"
HASH_COLUMNS = ("originator_id", "originator_version", "hash")
Link = tuple[UUID, int, bytes]  # originator id, version, hash


def key_from_env() -> bytes | None:
    """The seal key (its UTF-8 bytes), or None when LEDGER_SEAL_KEY is unset or empty."""
    key = os.environ.get(KEY_VARIABLE)
    return key.encode() if key else None


def as_bytes(value: Any) -> bytes:
    """A stored value as bytes; text (an edit that turned a BLOB into TEXT) as UTF-8, so
    that it is found as a changed value instead of stopping a check."""
    return value.encode() if isinstance(value, str) else bytes(value)


def as_uuid(value: UUID | str) -> UUID:
    """A UUID from a UUID or its text (backends return either)."""
    return value if isinstance(value, UUID) else UUID(value)


def _framed(originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    encoded = topic.encode()
    return b"".join((originator_id.bytes, struct.pack(">QI", version, len(encoded)),
                     encoded, state))


def event_hash(previous: bytes, originator_id: UUID, version: int, topic: str,
               state: bytes) -> bytes:
    """The hash chaining an event to the previous one of its aggregate."""
    return hashlib.sha256(previous + _framed(originator_id, version, topic, state)).digest()


def snapshot_hash(event_digest: bytes, originator_id: UUID, version: int, topic: str,
                  state: bytes, key: bytes | None = None) -> bytes:
    """What `ledger_snapshot_hashes` holds for a snapshot taken at `version`: SHA-256, or
    HMAC-SHA256 under `key` (LEDGER_SEAL_KEY) when there is one."""
    message = b"snapshot" + event_digest + _framed(originator_id, version, topic, state)
    if key is None:
        return hashlib.sha256(message).digest()
    return hmac.new(key, message, hashlib.sha256).digest()


def previous_links(stored_events: Sequence[StoredEvent]) -> list[tuple[UUID, int]]:
    """(id, version - 1) of each aggregate's first event in the batch, when it has one."""
    firsts: dict[UUID, int] = {}
    for event in stored_events:
        firsts.setdefault(as_uuid(event.originator_id), event.originator_version)
    return [(oid, v - 1) for oid, v in firsts.items() if v > 1]


def link(stored_events: Sequence[StoredEvent], previous: Mapping[UUID, bytes]) -> list[Link]:
    """The hash rows of a batch, chained to `previous` (each aggregate's stored head).

    An aggregate whose previous hash is missing (written before chaining existed) is
    chained from zeros; `verify` reports its older events as unhashed.
    """
    heads = dict(previous)
    rows: list[Link] = []
    for event in stored_events:
        oid = as_uuid(event.originator_id)
        version = event.originator_version
        before = heads.get(oid, GENESIS) if version > 1 else GENESIS
        digest = event_hash(before, oid, version, event.topic, event.state)
        heads[oid] = digest
        rows.append((oid, version, digest))
    return rows


def create_statements(t: str, id_type: str, blob: str, big: str, time_type: str,
                      serial_key: str) -> list[str]:
    """The hash and seal tables, in the dialect of a recorder (`t` is its table prefix)."""
    keyed = (f"originator_id {id_type} NOT NULL, originator_version {big} NOT NULL, "
             f"hash {blob} NOT NULL, PRIMARY KEY (originator_id, originator_version))")
    return [
        f"CREATE TABLE IF NOT EXISTS {t}{EVENT_HASHES} ({keyed}",
        f"CREATE TABLE IF NOT EXISTS {t}{SNAPSHOT_HASHES} ({keyed}",
        f"CREATE TABLE IF NOT EXISTS {t}ledger_seals (seal_id {serial_key}, "
        f"sealed_at {time_type} NOT NULL, position {big} NOT NULL, "
        f"aggregates {big} NOT NULL, events {big} NOT NULL, root {blob} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t}ledger_seal_heads (seal_id {big} NOT NULL, "
        f"originator_id {id_type} NOT NULL, originator_version {big} NOT NULL, "
        f"hash {blob} NOT NULL, PRIMARY KEY (seal_id, originator_id))",
        # A seal's HMAC (`ledger audit seal` with LEDGER_SEAL_KEY): a table of its own,
        # so that stores sealed before signatures existed need no migration.
        f"CREATE TABLE IF NOT EXISTS {t}ledger_seal_signatures ("
        f"seal_id {big} PRIMARY KEY, signature {blob} NOT NULL)",
    ]
