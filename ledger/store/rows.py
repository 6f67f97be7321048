"""The SQL both recorders share (`LedgerRows`): the ledger's own tables beside the events,
the write plan's rows and guards, the hash chains at write time, and the reads of commands,
versions and events that a group commit needs. `ledger.store.recorders` mixes it into the
library's SQLite and PostgreSQL recorders.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import (
    StoredEvent,
)

from ledger.store import hashing, tokens
from ledger.store.plan import (
    CampaignNotExpired,
    CommandRow,
    Guard,
    GuardFailed,
    ReportRow,
    Unchanged,
    WritePlan,
)

GUARD_CHUNK = 500  # ids per look-up (SQLite allows 32,766 parameters)
HEADS = 20_000  # chain heads a recorder remembers from its own commits (`Heads`)
PAGE = 5_000  # events per page of `index_reports`
PROGRESS_EVERY = 500_000  # reports between its progress lines (on stderr, by logging)

logger = logging.getLogger("ledger.store")
# A stored event as read models read it: (position, aggregate id as text with dashes,
# version, topic, state), from `select_rows`.
EventRow = tuple[int, str, int, str, bytes]
# A topic filter for `select_rows`: (topics, True) keeps only them, (topics, False) all
# but them; None keeps every event.
Topics = tuple[Sequence[str], bool] | None


def topic_filter(topics: Topics, mark: str) -> tuple[str, tuple[str, ...]]:
    """The SQL condition (after the position range) and its parameters for `topics`."""
    if topics is None:
        return "", ()
    names, keep = topics
    if not names:
        return ("", ()) if not keep else (" AND 1 = 0", ())
    marks = ", ".join([mark] * len(names))
    return f" AND topic {'IN' if keep else 'NOT IN'} ({marks})", tuple(names)


class _Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., *, prepare: bool | None = ...) -> Any: ...
    def executemany(self, query: Any, params_seq: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> Any: ...


class Heads:
    """The hash of each aggregate's last event as this recorder committed it, so that its
    next write chains to it without reading it back (a query under the write lock, on
    every save). Only committed links are remembered (`remember`, after the commit), and
    a link once committed never changes: the row (id, v) is insert-only, and a write of
    v + 1 that raced another writer fails on the event's key whatever it chained to. At
    most HEADS are kept (all are forgotten when full: they are read again)."""

    def __init__(self) -> None:
        # Keyed by the id's integer: a UUID's own hash is a Python method, an int's is not.
        self._hashes: dict[tuple[int, int], bytes] = {}

    def known(self, wanted: list[tuple[UUID, int]]
              ) -> tuple[dict[UUID, bytes], list[tuple[UUID, int]]]:
        """Of these (id, version) heads: those remembered, and the rest."""
        hashes = self._hashes
        found: dict[UUID, bytes] = {}
        unknown: list[tuple[UUID, int]] = []
        for oid, version in wanted:
            digest = hashes.get((oid.int, version))
            if digest is None:
                unknown.append((oid, version))
            else:
                found[oid] = digest
        return found, unknown

    def remember(self, links: list[hashing.Link]) -> None:
        """A committed write's links: each aggregate's last one is its head now."""
        hashes = self._hashes
        if len(hashes) + len(links) > HEADS:
            hashes.clear()
        for oid, version, digest in links:
            number = oid.int
            hashes.pop((number, version - 1), None)
            hashes[number, version] = digest


class LedgerRows:
    """SQL shared by both backends; `p` is the parameter placeholder, `t` the table prefix."""

    p = "?"
    t = ""
    id_type = "TEXT"
    time_type = "TEXT"
    blob_type = "BLOB"
    big_type = "INTEGER"
    serial_key = "INTEGER PRIMARY KEY"
    position_column = "rowid"
    events_table_name: str
    heads: Heads  # the chain heads this recorder's committed writes left (its __init__)
    load_chunk = 200  # aggregates per query of `events_after`

    def ledger_create_statements(self) -> list[str]:
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t}ledger_commands ("  # CommandRow.values()
            "command_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, "
            f"aggregate_id {self.id_type} NOT NULL, version INTEGER, result TEXT NOT NULL, "
            f"recorded_at {self.time_type} NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.t}ledger_registrations ("
            f"registration_id {self.id_type} PRIMARY KEY, campaign_id TEXT NOT NULL, "
            "account_id TEXT NOT NULL, seller_id TEXT NOT NULL, "
            "UNIQUE (campaign_id, account_id))",
            f"CREATE TABLE IF NOT EXISTS {self.t}ledger_reports ("  # ReportRow
            f"registration_id {self.id_type} NOT NULL, report_id TEXT NOT NULL, "
            "version INTEGER NOT NULL, PRIMARY KEY (registration_id, report_id))",
            *hashing.create_statements(self.t, self.id_type, self.blob_type, self.big_type,
                                       self.time_type, self.serial_key),
            *tokens.create_statements(self.t, self.time_type),
        ]

    def write_plan(self, curs: _Cursor, plan: WritePlan) -> None:
        """The plan's rows, then its guards, all in the events' transaction."""
        p = self.p
        if plan.commands:
            curs.executemany(
                f"INSERT INTO {self.t}ledger_commands VALUES ({p},{p},{p},{p},{p},{p})",
                [c.values() for c in plan.commands],
            )
        if plan.registrations:
            curs.executemany(
                f"INSERT INTO {self.t}ledger_registrations VALUES ({p},{p},{p},{p})",
                [(r.registration_id, r.campaign_id, r.account_id, r.seller_id)
                 for r in plan.registrations],
            )
        if plan.reports:
            curs.executemany(f"INSERT INTO {self.t}ledger_reports VALUES ({p},{p},{p})",
                             [self.report_values(r) for r in plan.reports])
        self.check_guards(curs, plan.guards)

    def report_values(self, row: ReportRow) -> tuple[Any, ...]:
        """A `ledger_reports` row as this backend stores it."""
        return (self.db_id(row.registration_id), row.report_id, row.version)

    def check_guards(self, curs: _Cursor, guards: Sequence[Guard]) -> None:
        """Every guard, under the write lock; a group's many `CampaignNotExpired` (one per
        registration or session) in one look-up per 500 campaigns."""
        campaigns: dict[UUID, str] = {}
        for guard in guards:
            if isinstance(guard, CampaignNotExpired):
                campaigns.setdefault(guard.campaign_id, guard.expired_topic)
            else:
                self._check(curs, guard)
        if len(campaigns) == 1:
            (campaign_id, topic), = campaigns.items()
            self._check(curs, CampaignNotExpired(campaign_id, topic))
        elif campaigns:
            self._check_not_expired(curs, campaigns)

    def _check_not_expired(self, curs: _Cursor, campaigns: dict[UUID, str]) -> None:
        p = self.p
        expired = {self.db_id(cid): topic for cid, topic in campaigns.items()}
        keys = list(expired)
        for start in range(0, len(keys), GUARD_CHUNK):
            chunk = keys[start:start + GUARD_CHUNK]
            curs.execute(
                f"SELECT e.originator_id AS id, e.topic FROM {self.events_table} e "
                f"WHERE e.originator_id IN ({','.join([p] * len(chunk))}) "
                "AND e.originator_version = (SELECT MAX(originator_version) "
                f"FROM {self.events_table} m WHERE m.originator_id = e.originator_id)", chunk)
            for row in curs.fetchall():
                if row["topic"] == expired[row["id"]]:
                    raise GuardFailed("the campaign expired meanwhile")

    def _check(self, curs: _Cursor, guard: Guard) -> None:
        """Expiry against the writers that race it, under the write lock: a registration or
        session written once the campaign's `Expired` is stored; a registration that
        `expire_campaign` read as closed but that was reopened before it committed; a
        `register` committed between an expiry's read and its write."""
        p = self.p
        if isinstance(guard, CampaignNotExpired):
            curs.execute(
                f"SELECT topic FROM {self.events_table} WHERE originator_id={p} "
                "ORDER BY originator_version DESC LIMIT 1", (self.db_id(guard.campaign_id),))
            row = curs.fetchone()
            if row is not None and row["topic"] == guard.expired_topic:
                raise GuardFailed("the campaign expired meanwhile")
        elif isinstance(guard, Unchanged):
            expected = {self.db_id(reg_id): v for reg_id, v in guard.versions.items()}
            keys = list(expected)
            for start in range(0, len(keys), GUARD_CHUNK):
                chunk = keys[start:start + GUARD_CHUNK]
                curs.execute(*self._versions_query(chunk))
                for row in curs.fetchall():
                    if row["v"] is not None and row["v"] != expected[row["id"]]:
                        raise GuardFailed(f"registration {row['id']} changed meanwhile")
        else:
            curs.execute(
                f"SELECT COUNT(*) AS n FROM {self.t}ledger_registrations WHERE campaign_id={p}",
                (guard.campaign_id,),
            )
            found = curs.fetchone()["n"]
            if found != guard.count:
                raise GuardFailed(f"campaign {guard.campaign_id} has {found} registrations, "
                                  f"not {guard.count}")

    def _versions_query(self, keys: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        # Each id's last version read from the end of its key, not every version of it
        # grouped (`MAX ... GROUP BY`, 4x slower on a feed's store): an aggregate costs
        # one index seek however many reports it has. An id with no events: v is NULL.
        return (f"SELECT w.column1 AS id, (SELECT originator_version FROM {self.events_table} "
                "WHERE originator_id = w.column1 ORDER BY originator_version DESC LIMIT 1) AS v "
                f"FROM (VALUES {','.join([f'({self.p})'] * len(keys))}) AS w", tuple(keys))

    def _commands_query(self, command_ids: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        return (f"SELECT * FROM {self.t}ledger_commands "
                f"WHERE command_id IN ({','.join([self.p] * len(command_ids))})",
                tuple(command_ids))

    def versions_of(self, aggregate_ids: Collection[UUID]) -> dict[UUID, int]:
        """The stored version of each of these aggregates (absent: none stored), read
        outside any write: one query per 500 ids."""
        keys = [self.db_id(aggregate_id) for aggregate_id in aggregate_ids]
        found: dict[UUID, int] = {}
        for start in range(0, len(keys), GUARD_CHUNK):
            chunk = tuple(keys[start:start + GUARD_CHUNK])
            for row in self._query(*self._versions_query(chunk)):
                if row["v"] is not None:
                    found[hashing.as_uuid(row["id"])] = int(row["v"])
        return found

    # The hash chains (ledger.store.hashing) ----------------------------------------------

    def write_hashes(self, curs: _Cursor, stored_events: Sequence[StoredEvent], *,
                     bulk: bool = False, written: list[hashing.Link] | None = None) -> None:
        """Chain the batch's events to their aggregates' stored heads: the heads this
        recorder committed itself are remembered (`Heads`), the others read (one query);
        then one insert (`bulk`: by COPY, on PostgreSQL outside the library's pipeline).
        `written`: filled with the links, for the caller to remember once committed."""
        wanted = hashing.previous_links(stored_events)
        previous, unknown = self.heads.known(wanted)
        if unknown:
            previous.update(self._previous_hashes(curs, unknown))
        links = hashing.link(stored_events, previous)
        if links:
            self._insert_hashes(curs, links, bulk=bulk)
        if written is not None:
            written[:] = links

    def _previous_hashes(self, curs: _Cursor, wanted: list[tuple[UUID, int]]
                         ) -> dict[UUID, bytes]:
        found: dict[UUID, bytes] = {}
        # ORs of key equalities, 200 at a time: SQLite answers them from the primary key
        # (a row-value IN over VALUES is a scan of the whole table, on every save).
        for start in range(0, len(wanted), 200):
            part = wanted[start:start + 200]
            curs.execute(
                "SELECT originator_id, hash FROM ledger_event_hashes WHERE "
                + " OR ".join(["(originator_id = ? AND originator_version = ?)"] * len(part)),
                [x for oid, version in part for x in (oid.hex, version)],
            )
            found.update((UUID(row["originator_id"]), row["hash"]) for row in curs.fetchall())
        return found

    def _insert_hashes(self, curs: _Cursor, rows: list[hashing.Link], *,
                       bulk: bool = False) -> None:
        curs.executemany("INSERT INTO ledger_event_hashes VALUES (?,?,?)",
                         [(oid.hex, version, digest) for oid, version, digest in rows])

    @property
    def events_table(self) -> str:
        return self.events_table_name

    @property
    def hashes_table(self) -> str:
        return f"{self.t}ledger_event_hashes"

    @property
    def seals_table(self) -> str:
        return f"{self.t}ledger_seals"

    @property
    def seal_heads_table(self) -> str:
        return f"{self.t}ledger_seal_heads"

    @property
    def seal_signatures_table(self) -> str:
        return f"{self.t}ledger_seal_signatures"

    def db_id(self, originator_id: UUID) -> Any:
        return originator_id.hex

    def db_time(self, moment: datetime) -> Any:
        return moment.isoformat()

    # Reads -------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        raise NotImplementedError

    def find_command(self, command_id: str) -> CommandRow | None:
        rows = self._query(
            f"SELECT * FROM {self.t}ledger_commands WHERE command_id={self.p}", (command_id,)
        )
        return _command_row(rows[0]) if rows else None

    def find_commands(self, command_ids: Collection[str]) -> dict[str, CommandRow]:
        """The stored rows of those of `command_ids` that are stored: one query per 500."""
        found: dict[str, CommandRow] = {}
        ids = list(dict.fromkeys(command_ids))
        for start in range(0, len(ids), GUARD_CHUNK):
            rows = self._query(*self._commands_query(ids[start:start + GUARD_CHUNK]))
            found.update((row["command_id"], _command_row(row)) for row in rows)
        return found

    def events_after(self, after: Mapping[UUID, int]) -> dict[UUID, list[StoredEvent]]:
        """The events of many aggregates, each after a version (its snapshot's, or 0), in
        version order: 200 aggregates a query."""
        found: dict[UUID, list[StoredEvent]] = {oid: [] for oid in after}
        wanted = list(after.items())
        for start in range(0, len(wanted), self.load_chunk):
            sql, params = self._after_query(wanted[start:start + self.load_chunk])
            for row in self._query(sql, params):
                oid = hashing.as_uuid(row["originator_id"])
                found[oid].append(StoredEvent(
                    originator_id=oid, originator_version=row["originator_version"],
                    topic=row["topic"], state=bytes(row["state"])))
        return found

    def _after_query(self, wanted: list[tuple[UUID, int]]) -> tuple[str, tuple[Any, ...]]:
        # ORs of key ranges: SQLite answers each from the primary key.
        return (f"SELECT originator_id, originator_version, topic, state "
                f"FROM {self.events_table} WHERE "
                + " OR ".join(["(originator_id = ? AND originator_version > ?)"] * len(wanted))
                + " ORDER BY originator_id, originator_version",
                tuple(x for oid, version in wanted for x in (oid.hex, version)))

    def index_reports(self, topic: str, report_id_of: Callable[[StoredEvent], str]) -> int:
        """Index the reports of a store written before `ledger_reports` (docs/design.md,
        "Reports seen"): when the table is empty and events of `topic` are stored, a row
        for each, in one transaction under the events' write lock; how many."""
        if self._query(f"SELECT 1 AS x FROM {self.t}ledger_reports LIMIT 1", ()) or not (
                self._query(f"SELECT 1 AS x FROM {self.events_table} WHERE topic = {self.p} "
                            "LIMIT 1", (topic,))):
            return 0
        p, position = self.p, self.position_column
        count = after = 0
        with self.writing() as curs:
            self.lock_events(curs)
            curs.execute(f"SELECT 1 AS x FROM {self.t}ledger_reports LIMIT 1")
            if curs.fetchone() is not None:
                return 0  # another process indexed them first
            logger.warning("indexing the performance reports of a store written by an older "
                           "ledger (once; writers wait until it is done)")
            while True:
                curs.execute(
                    f"SELECT {position} AS position, originator_id, originator_version, state "
                    f"FROM {self.events_table} WHERE {position} > {p} AND topic = {p} "
                    f"ORDER BY {position} LIMIT {PAGE}", (after, topic))
                rows = list(curs.fetchall())
                if not rows:
                    return count
                curs.executemany(
                    f"INSERT INTO {self.t}ledger_reports VALUES ({p},{p},{p}) "
                    "ON CONFLICT DO NOTHING",
                    [(row["originator_id"], report_id_of(StoredEvent(
                        hashing.as_uuid(row["originator_id"]), row["originator_version"],
                        topic, bytes(row["state"]))), row["originator_version"])
                     for row in rows])
                count += len(rows)
                after = rows[-1]["position"]
                if count // PROGRESS_EVERY > (count - len(rows)) // PROGRESS_EVERY:
                    logger.warning("indexed %s performance reports so far", f"{count:,}")

    def lock_events(self, curs: _Cursor) -> None:
        """Take the events' write lock in this transaction (SQLite: its first write)."""
        curs.execute(f"DELETE FROM {self.t}ledger_reports WHERE 1 = 0")

    def writing(self) -> Any:
        raise NotImplementedError

    def reports_seen(self, pairs: Collection[tuple[UUID, str]]) -> set[tuple[UUID, str]]:
        """Those of these (registration, report_id) pairs that `ledger_reports` holds: one
        query per `load_chunk` pairs."""
        wanted = list(dict.fromkeys(pairs))
        found: set[tuple[UUID, str]] = set()
        for start in range(0, len(wanted), self.load_chunk):
            rows = self._query(*self._reports_query(wanted[start:start + self.load_chunk]))
            found.update((hashing.as_uuid(row["registration_id"]), row["report_id"])
                         for row in rows)
        return found

    def _reports_query(self, pairs: list[tuple[UUID, str]]) -> tuple[str, tuple[Any, ...]]:
        # ORs of primary-key equalities: SQLite answers each from the key.
        p = self.p
        return (f"SELECT registration_id, report_id FROM {self.t}ledger_reports WHERE "
                + " OR ".join([f"(registration_id = {p} AND report_id = {p})"] * len(pairs)),
                tuple(x for reg_id, report_id in pairs for x in (self.db_id(reg_id), report_id)))

    def registrations_of(self, campaign_id: str) -> list[str]:
        rows = self._query(
            f"SELECT registration_id FROM {self.t}ledger_registrations WHERE campaign_id={self.p} "
            "ORDER BY registration_id",
            (campaign_id,),
        )
        return [str(row["registration_id"]) for row in rows]


def write_plan_of(kwargs: dict[str, Any]) -> WritePlan | None:
    """The plan `Application.save(..., plan=...)` passed down; nothing else is accepted."""
    plan = kwargs.get("plan")
    if plan is not None and not isinstance(plan, WritePlan):
        raise TypeError(f"plan must be a WritePlan, not {type(plan).__name__}")
    # `tracking`: the library's own; `written`: the recorder's own list, where a save's
    # chain links go (passed on by the library's insert) to be remembered once committed.
    unknown = set(kwargs) - {"plan", "tracking", "written"}
    if unknown:
        raise TypeError(f"unexpected save arguments: {sorted(unknown)}")
    return plan


def _command_row(row: Any) -> CommandRow:
    return CommandRow(
        command_id=row["command_id"], fingerprint=row["fingerprint"],
        aggregate_id=str(row["aggregate_id"]), version=row["version"],
        result=json.loads(row["result"]), recorded_at=_as_datetime(row["recorded_at"]),
    )


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
