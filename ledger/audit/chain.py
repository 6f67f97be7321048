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
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

# Re-exported: the write-time hashing (ledger.store.hashing) that verify re-derives.
from ledger.store.hashing import GENESIS as GENESIS
from ledger.store.hashing import Link as Link
from ledger.store.hashing import as_bytes, as_uuid
from ledger.store.hashing import event_hash as event_hash

PAGE = 5_000
Progress = Callable[[int, int], None]


# The store, as verify and seal see it ------------------------------------------------------

class ChainStore(Protocol):
    """What our recorders offer the audit: tables, placeholders, a snapshot, a writer."""

    p: str
    position_column: str

    @property
    def events_table(self) -> str: ...
    @property
    def hashes_table(self) -> str: ...
    @property
    def seals_table(self) -> str: ...
    @property
    def seal_heads_table(self) -> str: ...
    @property
    def seal_signatures_table(self) -> str: ...

    def snapshot(self) -> AbstractContextManager[Any]: ...
    def writing(self) -> AbstractContextManager[Any]: ...
    def db_id(self, originator_id: UUID) -> Any: ...
    def db_time(self, moment: datetime) -> Any: ...


@dataclass(frozen=True)
class Finding:
    """A broken link: `aggregate_id` (None for a seal itself), the version, what differs.

    `kind`: altered, swapped, gap, unhashed, deleted_event (the chain itself); deleted,
    truncated, rewritten (an aggregate against a seal); seal_altered (a seal's own rows).
    """

    kind: str
    aggregate_id: UUID | None
    version: int | None
    detail: str

    def line(self) -> str:
        if self.aggregate_id is None:
            return f"{self.kind}: {self.detail}"
        return f"aggregate {self.aggregate_id} version {self.version}: {self.kind}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "aggregate_id": str(self.aggregate_id or "") or None,
                "version": self.version, "detail": self.detail}


@dataclass
class Report:
    events: int = 0
    aggregates: int = 0
    seals: int = 0
    position: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class Seal:
    seal_id: int
    position: int
    aggregates: int
    events: int
    root: str  # hex


class MerkleRoot:
    """RFC 6962's Merkle tree hash, fed one leaf at a time in O(log n) memory."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []  # perfect subtrees: (leaves, hash)
        self.leaves = 0

    def add(self, originator_id: UUID, version: int, digest: bytes) -> None:
        self.leaves += 1
        node = (1, hashlib.sha256(b"\x00" + originator_id.bytes + struct.pack(">Q", version)
                                  + digest).digest())
        while self.stack and self.stack[-1][0] == node[0]:
            size, left = self.stack.pop()
            node = (2 * size, _node(left, node[1]))
        self.stack.append(node)

    def root(self) -> bytes:
        if not self.stack:
            return hashlib.sha256(b"").digest()
        acc = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            acc = _node(left, acc)
        return acc


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# Reading in key order ------------------------------------------------------------------------

def _pages(store: ChainStore, curs: Any, table: str, columns: str,
           where: str = "", params: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Rows of `table` by (originator_id, originator_version), PAGE at a time (keyset)."""
    p = store.p
    base = f"SELECT {columns} FROM {table} WHERE {where + ' AND ' if where else ''}"
    order = f" ORDER BY originator_id, originator_version LIMIT {PAGE}"
    curs.execute(base + "TRUE" + order, params)
    while rows := list(curs.fetchall()):
        yield from rows
        last = rows[-1]
        if len(rows) < PAGE:
            return
        curs.execute(base + f"(originator_id, originator_version) > ({p}, {p})" + order,
                     (*params, last["originator_id"], last["originator_version"]))


def events_in_key_order(store: ChainStore, curs: Any, columns: str) -> Iterator[Any]:
    """Every stored event's `columns`, by aggregate then version (keyset pages, flat memory)."""
    return _pages(store, curs, store.events_table, columns)


def _keyed(rows: Iterator[Any]) -> Iterator[tuple[tuple[UUID, int], Any]]:
    for row in rows:
        yield (as_uuid(row["originator_id"]), row["originator_version"]), row


def _merged(events: Iterator[Any], hashes: Iterator[Any]
            ) -> Iterator[tuple[UUID, int, Any, bytes | None]]:
    """Events and hash rows side by side: (id, version, event or None, hash or None)."""
    e_it, h_it = _keyed(events), _keyed(hashes)
    e, h = next(e_it, None), next(h_it, None)
    while e is not None or h is not None:
        if h is None or (e is not None and e[0] < h[0]):
            assert e is not None
            yield *e[0], e[1], None
            e = next(e_it, None)
        elif e is None or h[0] < e[0]:
            yield *h[0], None, as_bytes(h[1]["hash"])
            h = next(h_it, None)
        else:
            yield *e[0], e[1], as_bytes(h[1]["hash"])
            e, h = next(e_it, None), next(h_it, None)


# Walking the chains --------------------------------------------------------------------------

class _Walk:
    """Follows one aggregate's chain; keeps its first broken link, and its head."""

    def __init__(self, originator_id: UUID) -> None:
        self.id = originator_id
        self.expected = 1
        self.head: tuple[int, bytes] | None = None
        self.finding: Finding | None = None
        self.altered: tuple[int, bytes, bytes] | None = None  # version, previous, stored

    def step(self, version: int, event: Any, stored: bytes | None) -> None:
        if self.altered is not None:
            if event is not None:
                self._look_for_swap(version, event)
            return
        if self.finding is not None:
            return
        if event is None:
            self._found("deleted_event", version, "a hash row with no event: the event was "
                        "deleted")
        elif version != self.expected:
            self._found("gap", self.expected, f"version {self.expected} is missing (next "
                        f"stored version is {version})")
        elif stored is None:
            self._found("unhashed", version, "an event with no hash row: inserted outside "
                        "the ledger (or written by a ledger older than hash chains)")
        else:
            before = self.head[1] if self.head else GENESIS
            digest = event_hash(before, self.id, version, event["topic"], as_bytes(event["state"]))
            if digest != stored:
                self.altered = (version, before, stored)
                self._found("altered", version, "hash differs: the stored topic or state "
                            "was changed")
            else:
                self.head = (version, digest)
                self.expected += 1

    def _look_for_swap(self, version: int, event: Any) -> None:
        assert self.altered is not None
        at, before, stored = self.altered
        if event_hash(before, self.id, at, event["topic"], as_bytes(event["state"])) == stored:
            self.altered = None
            self._found("swapped", at, f"version {at} holds another event; the event "
                        f"recorded as version {at} is now stored as version {version}")

    def _found(self, kind: str, version: int, detail: str) -> None:
        self.finding = Finding(kind, self.id, version, detail)


def _walk(store: ChainStore, curs: Any, report: Report, progress: Progress | None,
          on_head: Callable[[UUID, int, bytes], None] | None) -> set[UUID]:
    """Check every chain in one pass; the ids of the aggregates with a finding."""
    total = _scalar(curs, f"SELECT COUNT(*) AS n FROM {store.events_table}")
    events = _pages(store, curs, store.events_table,
                    "originator_id, originator_version, topic, state")
    hashes = _pages(store, curs, store.hashes_table, "originator_id, originator_version, hash")
    broken: set[UUID] = set()
    walk: _Walk | None = None

    def close(done: _Walk) -> None:
        if done.finding is not None:
            report.findings.append(done.finding)
            broken.add(done.id)
        elif done.head is not None and on_head is not None:
            on_head(done.id, *done.head)

    for originator_id, version, event, stored in _merged(events, hashes):
        if walk is None or walk.id != originator_id:
            if walk is not None:
                close(walk)
            walk = _Walk(originator_id)
            report.aggregates += 1
        walk.step(version, event, stored)
        if event is not None:
            report.events += 1
            if progress is not None and report.events % PAGE == 0:
                progress(report.events, total)
    if walk is not None:
        close(walk)
    if progress is not None:
        progress(report.events, total)
    return broken


def _scalar(curs: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    curs.execute(sql, params)
    row = curs.fetchone()
    return None if row is None else row[next(iter(row.keys()))]


# Seals -------------------------------------------------------------------------------------

def _check_seals(store: ChainStore, curs: Any, report: Report, broken: set[UUID]) -> None:
    """Each seal's heads still give its root, and each sealed head is still stored."""
    curs.execute(f"SELECT seal_id, aggregates, root FROM {store.seals_table} ORDER BY seal_id")
    for seal in list(curs.fetchall()):
        report.seals += 1
        seal_id = seal["seal_id"]
        merkle = MerkleRoot()
        for row in _pages(store, curs, store.seal_heads_table,
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
        last = _scalar(curs, f"SELECT MAX(originator_version) AS n FROM {store.events_table} "
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
    report.position = _scalar(
        curs, f"SELECT MAX({store.position_column}) AS n FROM {store.events_table}") or 0
    broken = _walk(store, curs, report, progress, on_head)
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
