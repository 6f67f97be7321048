"""Tamper evidence: hash chains written with the events, `verify`, and Merkle-rooted seals.

Every stored event is chained to the previous event of its aggregate::

    hash(v) = sha256(hash(v-1) ‖ originator id (16 bytes) ‖ v (8 bytes, big-endian)
                     ‖ len(topic) (4 bytes) ‖ topic (UTF-8) ‖ stored state)

with 32 zero bytes before version 1. Our recorders write `(originator_id,
originator_version, hash)` rows to `ledger_event_hashes` in the library's insert
transaction, after the events (`ledger.store.hashing`: the store hashes, the audit
only reads and re-derives). `verify` walks events and hash rows in key order
(keyset pages, one read snapshot, flat memory) and names the first broken link of each
aggregate. `seal` records every aggregate's head `(id, version, hash)` and a Merkle root
over them (RFC 6962 tree shape), so that deleting or truncating whole aggregates — which
leaves no broken link behind — is found too.

Here: the entry points `verify` and `seal`, and the check of stored seals. The parts:
`findings` (what a pass reports), `keyorder` (the store's rows in key order), `walk`
(each aggregate's chain), `merkle` (the roots).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

# Re-exported: what verify reports, and the write-time hashing it re-derives.
from ledger.audit.findings import Finding
from ledger.audit.findings import Report as Report
from ledger.audit.keyorder import PAGE, ChainStore, pages, scalar
from ledger.audit.keyorder import Progress as Progress
from ledger.audit.merkle import MerkleRoot
from ledger.audit.walk import walk_chains
from ledger.store.hashing import GENESIS as GENESIS
from ledger.store.hashing import Link as Link
from ledger.store.hashing import as_bytes, as_uuid
from ledger.store.hashing import event_hash as event_hash


@dataclass(frozen=True)
class Seal:
    """A seal as recorded: its id, the position and counts it covers, its Merkle root."""
    seal_id: int
    position: int
    aggregates: int
    events: int
    root: str  # hex


# Seals -------------------------------------------------------------------------------------

def _check_seals(store: ChainStore, curs: Any, report: Report, broken: set[UUID]) -> None:
    """Each seal's heads still give its root, and each sealed head is still stored."""
    curs.execute(f"SELECT seal_id, aggregates, root FROM {store.seals_table} ORDER BY seal_id")
    for seal in list(curs.fetchall()):
        report.seals += 1
        seal_id = seal["seal_id"]
        merkle = MerkleRoot()
        for row in pages(store, curs, store.seal_heads_table,
                          "originator_id, originator_version, hash", f"seal_id={store.p}",
                          (seal_id,)):
            merkle.add(as_uuid(row["originator_id"]), row["originator_version"],
                       as_bytes(row["hash"]))
        if merkle.root() != as_bytes(seal["root"]) or merkle.leaves != seal["aggregates"]:
            report.findings.append(Finding(
                "seal_altered", None, None, f"seal #{seal_id}: its stored heads no longer give "
                "its root (a head was changed, added or removed)"))
            continue  # its heads vouch for nothing now
        _check_sealed_heads(store, curs, seal_id, report, broken)


def _check_sealed_heads(store: ChainStore, curs: Any, seal_id: int, report: Report,
                        broken: set[UUID]) -> None:
    p = store.p
    curs.execute(
        f"SELECT s.originator_id, s.originator_version FROM {store.seal_heads_table} s "
        f"LEFT JOIN {store.hashes_table} h ON h.originator_id = s.originator_id "
        "AND h.originator_version = s.originator_version "
        f"WHERE s.seal_id = {p} AND (h.hash IS NULL OR h.hash <> s.hash) "
        "ORDER BY s.originator_id", (seal_id,))
    for row in list(curs.fetchall()):
        oid, sealed = as_uuid(row["originator_id"]), row["originator_version"]
        if oid in broken:
            continue
        broken.add(oid)
        last = scalar(curs, f"SELECT MAX(originator_version) AS n FROM {store.events_table} "
                       f"WHERE originator_id={p}", (row["originator_id"],))
        was = f"sealed by seal #{seal_id} at version {sealed}"
        if last is None:
            finding = Finding("deleted", oid, 1, f"{was}; no event of it is stored now")
        elif last < sealed:
            finding = Finding("truncated", oid, last + 1,
                              f"{was}; its stored events now end at version {last}")
        else:
            finding = Finding("rewritten", oid, sealed, f"{was}; the hash of version {sealed} "
                              "differs from the seal: events were changed and rehashed")
        report.findings.append(finding)


# Entry points ------------------------------------------------------------------------------

def verify(store: ChainStore, progress: Progress | None = None) -> Report:
    """Check every chain and every seal, in one read snapshot."""
    report = Report()
    with store.snapshot() as curs:
        _verify(store, curs, report, progress, None)
    return report


def _verify(store: ChainStore, curs: Any, report: Report, progress: Progress | None,
            on_head: Callable[[UUID, int, bytes], None] | None) -> None:
    report.position = scalar(
        curs, f"SELECT MAX({store.position_column}) AS n FROM {store.events_table}") or 0
    broken = walk_chains(store, curs, report, progress, on_head)
    _check_seals(store, curs, report, broken)


def seal(store: ChainStore, now: datetime, progress: Progress | None = None,
         sign: Callable[[Seal, datetime], bytes] | None = None,
         beside: Callable[[Report], None] | None = None) -> tuple[Report, Seal | None]:
    """Verify, then record every aggregate's head and their Merkle root (not if anything
    was found: a seal must not vouch for a store already altered); with `sign`, the
    seal's signature too (`ledger.audit.seals`), in the same transaction. `beside` adds
    the findings of the checks beyond the chains (`ledger.audit.integrity.seal`)."""
    report = Report()
    merkle = MerkleRoot()
    heads = bytearray()  # 56 bytes an aggregate, written after the snapshot is closed

    def on_head(originator_id: UUID, version: int, digest: bytes) -> None:
        merkle.add(originator_id, version, digest)
        heads.extend(HEAD.pack(originator_id.bytes, version, digest))

    with store.snapshot() as curs:
        _verify(store, curs, report, progress, on_head)
    if beside is not None:
        beside(report)
    if not report.clean:
        return report, None
    root = merkle.root()
    with store.writing() as curs:
        curs.execute(
            f"INSERT INTO {store.seals_table} (sealed_at, position, aggregates, events, root) "
            f"VALUES ({store.p}, {store.p}, {store.p}, {store.p}, {store.p}) RETURNING seal_id",
            (store.db_time(now), report.position, merkle.leaves, report.events, root))
        seal_id = int(curs.fetchone()["seal_id"])
        for start in range(0, len(heads), HEAD.size * PAGE):
            chunk = heads[start:start + HEAD.size * PAGE]
            curs.executemany(
                f"INSERT INTO {store.seal_heads_table} VALUES "
                f"({store.p}, {store.p}, {store.p}, {store.p})",
                [(seal_id, store.db_id(UUID(bytes=oid)), version, digest)
                 for oid, version, digest in HEAD.iter_unpack(chunk)])
        sealed = Seal(seal_id, report.position, merkle.leaves, report.events, root.hex())
        if sign is not None:
            curs.execute(f"INSERT INTO {store.seal_signatures_table} VALUES "
                         f"({store.p}, {store.p})", (seal_id, sign(sealed, now)))
    return report, sealed


HEAD = struct.Struct(">16sQ32s")
