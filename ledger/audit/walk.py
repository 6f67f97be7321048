"""Walking every aggregate's hash chain in one pass; each chain's first broken link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from ledger.audit.findings import Finding, Report
from ledger.audit.keyorder import PAGE, ChainStore, Progress, merged, pages, scalar
from ledger.store.hashing import GENESIS, as_bytes, event_hash


class ChainWalk:
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


def walk_chains(store: ChainStore, curs: Any, report: Report, progress: Progress | None,
          on_head: Callable[[UUID, int, bytes], None] | None) -> set[UUID]:
    """Check every chain in one pass; the ids of the aggregates with a finding."""
    total = scalar(curs, f"SELECT COUNT(*) AS n FROM {store.events_table}")
    events = pages(store, curs, store.events_table,
                    "originator_id, originator_version, topic, state")
    hashes = pages(store, curs, store.hashes_table, "originator_id, originator_version, hash")
    broken: set[UUID] = set()
    walk: ChainWalk | None = None

    def close(done: ChainWalk) -> None:
        if done.finding is not None:
            report.findings.append(done.finding)
            broken.add(done.id)
        elif done.head is not None and on_head is not None:
            on_head(done.id, *done.head)

    for originator_id, version, event, stored in merged(events, hashes):
        if walk is None or walk.id != originator_id:
            if walk is not None:
                close(walk)
            walk = ChainWalk(originator_id)
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
