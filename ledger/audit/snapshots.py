"""`verify` for snapshots: every stored snapshot re-derived from the chained events.

A load trusts a snapshot whose hash row matches and whose identity agrees with the first
event (`ledger.store.snapshots`), but without LEDGER_SEAL_KEY anyone who can write the
database can recompute that row. So `verify` replays each snapshotted aggregate from
version 1, once, and compares the snapshot the library would take at each snapshot's
version with the stored one. Any difference, or a missing or wrong hash row, is a
`snapshot_altered` finding. With the key, a snapshot equal to its events whose row is
unkeyed (taken before the key was set) is counted, not a finding: loads replay instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import StoredEvent

from ledger.audit.findings import Finding
from ledger.store.application import LedgerApplication, project
from ledger.store.hashing import as_bytes
from ledger.store.snapshots import UNKEYED, CheckedSnapshots, mismatch

KIND = "snapshot_altered"


@dataclass
class SnapshotsChecked:
    """What checking the snapshots found: how many, how many unkeyed, which are wrong."""
    checked: int = 0
    unkeyed: int = 0  # equal to their events, hashed before LEDGER_SEAL_KEY was set
    findings: list[Finding] = field(default_factory=list)


def check_snapshots(app: LedgerApplication, key: bytes | None) -> SnapshotsChecked:
    """Every snapshot against its events, one snapshotted aggregate in memory at a time."""
    done = SnapshotsChecked()
    recorder = _recorder(app)
    if recorder is None:
        return done
    for originator_id in recorder.snapshotted():
        rows = recorder.rows_of(originator_id)
        done.checked += len(rows)
        for found in _check_aggregate(app, originator_id, rows, key):
            if isinstance(found, Finding):
                done.findings.append(found)
            else:
                done.unkeyed += 1
    return done


def _recorder(app: LedgerApplication) -> CheckedSnapshots | None:
    recorder = app.snapshots.recorder if app.snapshots is not None else None
    return recorder if isinstance(recorder, CheckedSnapshots) else None


def _check_aggregate(app: LedgerApplication, originator_id: UUID, rows: list[Any],
                     key: bytes | None) -> Iterator[Finding | str]:
    wanted = {row["originator_version"]: row for row in rows}
    aggregate: Any = None
    for event in app.events.get(originator_id):
        aggregate = project(aggregate, [event])
        row = wanted.pop(event.originator_version, None)
        if row is not None:
            detail = _compare(app, row, aggregate, key)
            if detail == UNKEYED:
                yield UNKEYED
            elif detail is not None:
                yield Finding(KIND, originator_id, event.originator_version, detail)
    for version in sorted(wanted):
        yield Finding(KIND, originator_id, version, f"a snapshot at version {version}, but no "
                      "event of that version is stored: it was inserted or its events deleted")


def _compare(app: LedgerApplication, row: Any, aggregate: Any, key: bytes | None
             ) -> str | None:
    """Why the stored snapshot is not the one the events give, or None (UNKEYED: it is,
    but its hash row was made without the key)."""
    reason = mismatch(row, key)
    try:
        stored = app.mapper.to_domain_event(StoredEvent(
            originator_id=aggregate.id, originator_version=row["originator_version"],
            topic=row["topic"], state=as_bytes(row["state"])))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return f"the stored snapshot cannot be decoded ({type(e).__name__}): it was changed"
    replayed = type(aggregate).Snapshot.take(aggregate) if hasattr(
        type(aggregate), "Snapshot") else Snapshot.take(aggregate)
    try:
        state = upcast(getattr(stored, "state", None), type(aggregate))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return f"the stored snapshot cannot be upcast ({type(e).__name__}): it was changed"
    fields = _differing(state, replayed.state)
    if getattr(stored, "topic", None) != replayed.topic:
        fields = ["topic", *fields]
    if fields:
        listed = ", ".join(fields[:5]) + (", ..." if len(fields) > 5 else "")
        use = ("its hash row was rewritten to match, so loads still use it: delete the "
               "snapshot and loads replay the events" if reason is None
               else "loads do not use it (they replay the events)")
        return (f"the stored snapshot differs from the events replayed to version "
                f"{row['originator_version']} (fields: {listed}); {use}")
    if reason == UNKEYED:
        return UNKEYED
    if reason is not None:
        return (f"the snapshot matches its events, but {reason}: loads replay the events "
                "instead of using it")
    return None


def upcast(state: Any, cls: type[Any]) -> Any:
    """A stored snapshot's state as the aggregate's class now takes it: taken by an older
    class version, upcast as the library does when it loads one (`Snapshot.mutate`), so
    that a snapshot taken before a change of the state's shape (Registration v2: a count
    of reports, not their ids) still equals its events."""
    if not isinstance(state, dict):
        return state
    state = dict(state)
    version, target = state.pop("class_version", 1), getattr(cls, "class_version", 1)
    while version < target:
        getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
        version += 1
    if target > 1:
        state["class_version"] = target
    return state


def _differing(stored: Any, replayed: dict[str, Any]) -> list[str]:
    if not isinstance(stored, dict):
        return ["state"]
    keys = sorted(set(stored) | set(replayed))
    return [key.lstrip("_") for key in keys if stored.get(key) != replayed.get(key)]
