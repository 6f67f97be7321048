"""`verify` for the rows written beside the events: command rows and the registrations index.

Neither is hash-chained, but both must agree with the chained events, so an edit shows:

- `ledger_commands`: a replayed command returns its row's result. Each accepted row must
  name exactly the events that carry its command_id (their names, in store order, with
  the row's aggregate and version last), and each command_id an event carries must have
  a row (a deleted row would let the same command run twice). Finding kinds
  `command_altered`, `command_missing`.
- `ledger_registrations`: `expire_campaign` expires the registrations this index lists.
  It must hold one row per `Registered` event, with that event's campaign, account and
  seller. Finding kind `index_altered`.
- `ledger_reports`: `record_performance` takes a report whose (registration, report_id)
  this index holds as sent before. It must hold one row per `PerformanceRecorded` event,
  with that event's version. A deleted row would let the report count twice; an inserted
  one would drop a report never recorded. Finding kind `index_altered`.

The events are read once in store order (only each event's topic and command_id are
looked at); memory grows with commands and registrations, not with events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from ledger.aggregates.base import campaign_uuid
from ledger.audit.findings import Finding
from ledger.store.recorders import LedgerPostgresRecorder, LedgerSQLiteRecorder

Store = LedgerSQLiteRecorder | LedgerPostgresRecorder
PAGE = 5_000
RESULT_KEYS = {"ok", "command_id", "aggregate_id", "version", "events", "replayed"}
INDEX_FIELDS = ("campaign_id", "account_id", "seller_id")


@dataclass
class _Command:
    """What the events say of one command: how many, their names (hashed), the last."""

    count: int = 0
    names: Any = field(default_factory=hashlib.sha256)
    last: tuple[UUID, int] | None = None

    def add(self, name: str, key: tuple[UUID, int]) -> None:
        self.count += 1
        self.names.update(name.encode() + b"\n")
        self.last = key


@dataclass
class _Seen:
    commands: dict[str, _Command] = field(default_factory=dict)
    registrations: dict[UUID, tuple[str, ...]] = field(default_factory=dict)
    reports: dict[tuple[UUID, str], int] = field(default_factory=dict)


def check_rows(store: Store) -> tuple[int, list[Finding]]:
    """(command rows checked, findings), all read in one read transaction."""
    findings: list[Finding] = []
    checked = 0
    with store.snapshot() as curs:
        seen = _read_events(store, curs)
        for row in _paged(curs, f"SELECT * FROM {store.t}ledger_commands", "command_id",
                          store.p):
            checked += 1
            findings.extend(_check_command(row, seen.commands.pop(row["command_id"], None)))
        curs.execute(f"SELECT * FROM {store.t}ledger_registrations ORDER BY registration_id")
        findings.extend(_check_index(list(curs.fetchall()), seen.registrations))
        findings.extend(_check_reports(_paged_reports(store, curs), seen.reports))
    for command_id, command in sorted(seen.commands.items()):
        oid, version = command.last or (None, None)
        findings.append(Finding("command_missing", oid, version, f"command {command_id!r}: "
                                f"{command.count} event(s) carry it but it has no command row "
                                "(deleted): sending it again would run it again"))
    return checked, findings


def _read_events(store: Store, curs: Any) -> _Seen:
    seen = _Seen()
    position = store.position_column
    rows = _paged(curs, f"SELECT {position} AS position, originator_id, originator_version, "
                  f"topic, state FROM {store.events_table}", position, store.p, 0, "position")
    for row in rows:
        try:
            state = json.loads(bytes(row["state"]))
        except (ValueError, TypeError):
            continue  # not JSON any more: the chain check reports the event as altered
        if not isinstance(state, dict):
            continue
        name = row["topic"].rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        key = (_uuid(row["originator_id"]), row["originator_version"])
        command_id = state.get("command_id")
        if isinstance(command_id, str):
            seen.commands.setdefault(command_id, _Command()).add(name, key)
        if name == "Registered" and key[1] == 1:
            seen.registrations[key[0]] = tuple(str(state.get(f)) for f in INDEX_FIELDS)
        elif name == "PerformanceRecorded":
            seen.reports[(key[0], str(state.get("report_id")))] = key[1]
    return seen


def _paged(curs: Any, select: str, key: str, p: str, start: Any = "",
           name: str | None = None) -> Iterator[Any]:
    """`select`'s rows in `key` order (`name` in a row), PAGE at a time (keyset)."""
    after = start
    while True:
        curs.execute(f"{select} WHERE {key} > {p} ORDER BY {key} LIMIT {PAGE}", (after,))
        rows = list(curs.fetchall())
        yield from rows
        if len(rows) < PAGE:
            return
        after = rows[-1][name or key]


def _paged_reports(store: Store, curs: Any) -> Iterator[Any]:
    """`ledger_reports` in key order, PAGE rows at a time (keyset on both key columns)."""
    p, after = store.p, None
    while True:
        where = ("" if after is None else
                 f" WHERE registration_id > {p} OR (registration_id = {p} AND report_id > {p})")
        curs.execute(f"SELECT * FROM {store.t}ledger_reports{where} "
                     f"ORDER BY registration_id, report_id LIMIT {PAGE}",
                     () if after is None else (after[0], after[0], after[1]))
        rows = list(curs.fetchall())
        yield from rows
        if len(rows) < PAGE:
            return
        after = (rows[-1]["registration_id"], rows[-1]["report_id"])


def _check_reports(rows: Iterator[Any], expected: dict[tuple[UUID, str], int]
                   ) -> Iterator[Finding]:
    for row in rows:
        oid, report_id = _uuid(row["registration_id"]), str(row["report_id"])
        version = expected.pop((oid, report_id), None)
        if version is None:
            yield Finding("index_altered", oid, row["version"], f"a report row for report "
                          f"{report_id!r}, which no PerformanceRecorded of this registration "
                          "carries: it was inserted (the report would be taken as sent "
                          "before, and never counted)")
        elif version != row["version"]:
            yield Finding("index_altered", oid, version, f"the report row of {report_id!r} "
                          f"names version {row['version']}, its event is version {version}")
    for (oid, report_id), version in sorted(expected.items(), key=lambda i: (str(i[0][0]),
                                                                            i[0][1])):
        yield Finding("index_altered", oid, version, f"report {report_id!r} has no report row "
                      "(deleted): sent again, it would count twice")


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(value)


def _check_command(row: Any, events: _Command | None) -> Iterator[Finding]:
    oid, version = UUID(str(row["aggregate_id"])), row["version"]
    problem = _result_problem(row, oid, events)
    if problem is not None:
        yield Finding("command_altered", oid, version, f"command {row['command_id']!r}: "
                      f"{problem}; a replay of it returns that row's result")


def _result_problem(row: Any, oid: UUID, events: _Command | None) -> str | None:
    try:
        result = json.loads(row["result"])
    except ValueError:
        return "its stored result is not JSON"
    if not isinstance(result, dict) or set(result) != RESULT_KEYS:
        return "its stored result is not an accepted command's result"
    named = result["events"] if isinstance(result["events"], list) else None
    if (result["ok"] is not True or result["replayed"] is not False
            or result["command_id"] != row["command_id"] or result["version"] != row["version"]
            or named is None or not _names_aggregate(result["aggregate_id"], oid)):
        return "its stored result disagrees with its row (ok, id, aggregate or version)"
    if not named:
        return None if events is None else f"it names no event, but {events.count} carry it"
    if events is None:
        return f"it names {len(named)} event(s), but no stored event carries it"
    digest = hashlib.sha256(b"".join(str(n).encode() + b"\n" for n in named))
    if events.count != len(named) or events.names.digest() != digest.digest():
        return f"it names events {named}, which differ from the {events.count} stored"
    if events.last != (oid, row["version"]):
        return "its aggregate and version are not those of its last stored event"
    return None


def _names_aggregate(public_id: Any, oid: UUID) -> bool:
    if not isinstance(public_id, str):
        return False
    try:
        return UUID(public_id) == oid
    except ValueError:
        return campaign_uuid(public_id) == oid


def _check_index(rows: list[Any], expected: dict[UUID, tuple[str, ...]]
                 ) -> Iterator[Finding]:
    for row in rows:
        oid = UUID(str(row["registration_id"]))
        stored = tuple(str(row[f]) for f in INDEX_FIELDS)
        wanted = expected.pop(oid, None)
        if wanted is None:
            yield Finding("index_altered", oid, None, "an index row for a registration that "
                          "has no Registered event: it was inserted")
        elif stored != wanted:
            fields = [f for f, a, b in zip(INDEX_FIELDS, stored, wanted, strict=True) if a != b]
            yield Finding("index_altered", oid, 1, f"its index row's {', '.join(fields)} "
                          "differ from its Registered event: expire_campaign would read it "
                          "wrong")
    for oid in sorted(expected):
        yield Finding("index_altered", oid, 1, "no index row (deleted): expire_campaign would "
                      "not expire this registration")
