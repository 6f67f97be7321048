"""Stored events as read models read them: parsed straight from the stored bytes, and only
the fields their handlers read.

The library's mapper (`Mapper.to_domain_event`) parses every event with the standard JSON
decoder and a Python hook called for each object in it, then turns every transcoded value
(times, amounts) into its type: two thirds of a rebuild's time went there. A read model
needs a few fields of each event, so here, per topic, once:

- a topic this version cannot resolve is `unknown` (skipped and counted, as before);
- a class no read model of the run handles is not decoded at all;
- otherwise the bytes are parsed by orjson (a C parser, a well-kept library) and only
  the fields the handlers declare (`@handles(..., reads=(...))`) are converted, with the
  transcoder's own transcodings; a handler that declares nothing gets every field.

The event handed to handlers is an instance of its own class (dispatch and `isinstance`
work as before) whose attributes are those fields, the aggregate's version and, for a
whole event, its id: what the library's mapper would give, less the fields nobody reads.

Anything this path does not take on as it is falls back to the library's mapper, event by
event: an event stored at an older `class_version` (upcasting stays the library's and the
event class's business), a value orjson refuses (an integer over 64 bits, NaN), a
declared field missing. So the rows are the same whichever way an event was decoded.

A *fold* event (every handler of its class is a fold handler, `@handles(..., fold=True)`:
nine events in ten of a season, the performance reports) becomes no object at all: a
tuple, the aggregate id then the declared fields in their declared order (`Decoded.row`),
which fold handlers take a run of at a time. Making an object per report, and calling a
handler per report and read model, was half of a rebuild's time at 1M events (issue 15).
Its fields are read by msgspec where their types allow (`FoldReader`), else as above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, get_type_hints
from uuid import UUID

import msgspec
import orjson
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, StoredEvent
from eventsourcing.utils import resolve_topic
from msgspec.structs import astuple

from ledger.projections.base import FoldRows, ReadModel, fold_row, handler_reads
from ledger.store.application import LedgerApplication
from ledger.store.rows import EventRow, Topics

# The library's transcodings whose data is a string, done without a method call each.
DIRECT: dict[type[Any], Callable[[Any], Any]] = {
    DatetimeAsISO: datetime.fromisoformat, DecimalAsStr: Decimal}


# Fold rows by event class, each with its position (`Decoder.fold_runs`).
FoldRuns = dict[type[Any], list[tuple[int, tuple[Any, ...]]]]


@dataclass(slots=True)
class Decoded:
    """A stored event, decoded once per page for every read model: `event` is None for a
    topic no read model of the run handles, or (`known` False) one this version of the
    ledger does not know."""

    position: int
    event: Any | None
    topic: str
    originator_id: str
    known: bool = True
    # A fold event, decoded as a row for fold handlers (`event` is then None): the
    # aggregate id, then the fields read, in `Kind.fold` order; `cls` its class.
    row: tuple[Any, ...] | None = None
    cls: type[Any] | None = None


@dataclass(frozen=True, slots=True)
class Kind:
    """What is done with one topic's events: its class (None: unknown), whether a read
    model handles it, and the fields to convert (None: all)."""

    cls: type[Any] | None
    handled: bool = False
    fields: tuple[str, ...] | None = None
    version: int = 1
    fold: tuple[str, ...] | None = None  # every handler folds: the fields of its rows
    reader: FoldReader | None = None  # reads those fields straight from the bytes


class Tagged(msgspec.Struct, forbid_unknown_fields=True):
    """A value the library's transcoder wrote as `{"_type_": ..., "_data_": "..."}`: the
    transcoder decodes an object of exactly these two keys (so: no other key)."""

    type_: str = msgspec.field(name="_type_")
    data: str = msgspec.field(name="_data_")


class DatetimeTagged(Tagged, forbid_unknown_fields=True):
    """A time (`DatetimeAsISO`)."""

    type_: Literal["datetime_iso"] = msgspec.field(name="_type_")


class DecimalTagged(Tagged, forbid_unknown_fields=True):
    """An amount (`DecimalAsStr`)."""

    type_: Literal["decimal_str"] = msgspec.field(name="_type_")


TIME = object()  # a step of `FoldReader.of`'s plan: a time, decoded once per text


@dataclass(frozen=True)
class FoldReader:
    """Reads a fold event's fields straight from its bytes with msgspec, a well-kept C
    decoder that parses only the declared fields into a struct (checking each value's
    JSON type, and a transcoded value's `_type_`) and skips the rest: twice as fast as
    orjson's parse of the whole event, which builds every object of it. Times and amounts
    come out as their text and are converted as the library's transcodings convert them.
    Whatever the struct refuses (another JSON type, a bool for an int, an extra key in a
    transcoded value, malformed bytes) goes to the library's mapper, so an accepted value
    is exactly the library's."""

    decoder: msgspec.json.Decoder[Any]
    # Where, in a fold row (the aggregate id first), the times are, and the other converted
    # values with their conversions (of their text): a row is converted where it needs to
    # be only (a loop over every field cost a fifth of the read, measured).
    times: tuple[int, ...]
    converts: tuple[tuple[int, Callable[[str], Any]], ...]

    @classmethod
    def of(cls, decoder: msgspec.json.Decoder[Any], plan: Sequence[Any]) -> FoldReader:
        """`plan`: per field, None (taken as it is), TIME, or the conversion of its text."""
        return cls(decoder, tuple(i + 1 for i, how in enumerate(plan) if how is TIME),
                   tuple((i + 1, how) for i, how in enumerate(plan)
                         if how is not None and how is not TIME))


# The field types the reader takes: as they are, or a transcoded value (its struct, the
# transcoding's name, and what the library's transcoding does to its text).
SUPPORTED: dict[Any, tuple[type[Tagged], str, Callable[[str], Any]] | None] = {
    int: None, str: None, datetime: (DatetimeTagged, "datetime_iso", datetime.fromisoformat),
    Decimal: (DecimalTagged, "decimal_str", Decimal)}


def fold_reader(cls: type[Any], names: Sequence[str],
                convert: dict[str, Callable[[Any], Any]]) -> FoldReader | None:
    """A reader of these fields of `cls`'s events, if each is an int, a string, or a time
    or an amount as the library's transcodings write them; else None (orjson decodes)."""
    try:
        hints = get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: nothing known of it
        return None
    fields: list[tuple[str, Any]] = []
    plan: list[Any] = []
    for name in names:
        hint = hints.get(name)
        if hint not in SUPPORTED:
            return None
        tagged = SUPPORTED[hint]
        if tagged is None:
            fields.append((name, hint))
            plan.append(None)
            continue
        struct, transcoding, decode = tagged
        # (`==`: each look-up of a classmethod such as `fromisoformat` is a new object)
        if convert.get(transcoding) != decode:
            return None  # another transcoding under that name: orjson and its own decode
        fields.append((name, struct))
        plan.append(TIME if struct is DatetimeTagged else decode)
    fields.append(("class_version", int, 1))  # type: ignore[arg-type]
    struct_type = msgspec.defstruct(f"{cls.__name__}Fold", fields)
    return FoldReader.of(msgspec.json.Decoder(struct_type), plan)


class Decoder:
    """Reads pages of stored events and decodes what `models` read of them."""

    def __init__(self, app: LedgerApplication, models: Sequence[ReadModel]) -> None:
        self.app = app
        self.models = models
        self.mapper = app.mapper
        transcoder = self.mapper.transcoder
        names = transcoder.names if isinstance(transcoder, JSONTranscoder) else {}
        self.convert: dict[str, Callable[[Any], Any]] = {
            name: DIRECT.get(type(t), t.decode) for name, t in names.items()}
        # A store whose events are encrypted or compressed, or another transcoder: the
        # library's mapper decodes everything.
        self.fast = (isinstance(transcoder, JSONTranscoder) and self.mapper.cipher is None
                     and self.mapper.compressor is None)
        self.kinds: dict[str, Kind] = {}
        self.times: dict[str, Any] = {}  # times decoded from their text (few distinct)

    def page(self, after: int, limit: int, stop: int, topics: Topics = None
             ) -> list[Decoded]:
        """The events after position `after` up to `stop` (at most `limit`), decoded;
        `topics` filters them by topic in the database (see `select_rows`)."""
        return self.decode_rows(self.app.store.select_rows(after, limit, stop, topics))

    def decode_rows(self, rows: list[EventRow]) -> list[Decoded]:
        """Rows read by `select_rows`, decoded (see `page`)."""
        kinds, decode, fold = self.kinds, self.decode, self.fold
        page = []
        for row in rows:
            kind = kinds.get(row[3]) or self.kind(row[3])
            if kind.fold is not None:
                page.append(Decoded(row[0], None, row[3], row[1], True, fold(kind, row),
                                    kind.cls))
            elif kind.cls is None:
                page.append(Decoded(row[0], None, row[3], row[1], known=False))
            elif not kind.handled:
                page.append(Decoded(row[0], None, row[3], row[1]))
            else:
                page.append(Decoded(row[0], decode(kind, row), row[3], row[1]))
        return page

    def fold_runs(self, after: int, limit: int, stop: int, topics: Topics) -> tuple[
            FoldRuns, int]:
        """Fold events only (`topics` names fold topics: a shared rebuild's helper reads
        its chunks so): each class's rows with their positions, in store order, with no
        `Decoded` made of each; and how many events were read."""
        kinds, fold = self.kinds, self.fold
        runs: FoldRuns = {}
        found = self.app.store.select_rows(after, limit, stop, topics)
        for row in found:
            kind = kinds.get(row[3]) or self.kind(row[3])
            cls = kind.cls
            if kind.fold is None or cls is None:
                raise ValueError(f"not a fold topic for these read models: {row[3]}")
            rows = runs.get(cls)
            if rows is None:
                rows = runs[cls] = []
            rows.append((row[0], fold(kind, row)))
        return runs, len(found)

    def kind(self, topic: str) -> Kind:
        """How events of `topic` are decoded (worked out once per topic)."""
        try:
            cls = resolve_topic(topic)
        except Exception:  # a topic written by a newer version of the ledger
            kind = Kind(None)
        else:
            handlers = [h for m in self.models if (h := m.handler(cls)) is not None]
            reads: list[tuple[str, ...] | None] = [getattr(h, "reads", None) for h in handlers]
            fields = (None if any(r is None for r in reads)
                      else tuple(sorted({f for r in reads if r is not None for f in r})))
            folds = {r for h, r in zip(handlers, reads, strict=True) if getattr(h, "fold", False)}
            if len(folds) > 1:
                raise TypeError(f"the fold handlers of {cls.__name__} read different fields: "
                                f"{sorted(folds, key=str)}")
            fold = (next(iter(folds)) if folds and len(handlers) == sum(
                1 for h in handlers if getattr(h, "fold", False)) else None)
            reader = fold_reader(cls, fold, self.convert) if fold and self.fast else None
            kind = Kind(cls, bool(handlers), fields, getattr(cls, "class_version", 1), fold,
                        reader)
        self.kinds[topic] = kind
        return kind

    def fold(self, kind: Kind, row: EventRow) -> tuple[Any, ...]:
        """A fold event's row: its aggregate id, then the fields its handlers read."""
        names = kind.fold
        assert names is not None
        reader = kind.reader
        if reader is not None:
            try:
                fields = astuple(reader.decoder.decode(row[4]))
            except msgspec.MsgspecError:  # not what the library writes: its mapper decides
                pass
            else:
                if fields[-1] == kind.version:
                    values: list[Any] = [row[1], *fields]
                    values.pop()  # (the class version)
                    for i in reader.times:
                        values[i] = self.time(values[i].data)
                    for i, how in reader.converts:
                        values[i] = how(values[i].data)
                    return tuple(values)
        elif self.fast:
            try:
                state = orjson.loads(row[4])
                if state.get("class_version", 1) == kind.version:
                    return (row[1], *self.fields(state, names).values())
            except Exception:  # anything unusual: the library's mapper, as for any event
                pass
        event = self.mapper.to_domain_event(StoredEvent(UUID(row[1]), row[2], row[3], row[4]))
        return fold_row(event, row[1], names)

    def time(self, text: str) -> Any:
        """A time stored as `text` (`DatetimeAsISO`), decoded once per text: a report's
        period starts on the hour, so a season has few distinct ones."""
        found = self.times.get(text)
        if found is None:
            if len(self.times) > 10_000:
                self.times.clear()
            found = self.times[text] = datetime.fromisoformat(text)
        return found

    def decode(self, kind: Kind, row: EventRow) -> Any:
        """The event of `row`, as much of it as its handlers read."""
        if self.fast:
            try:
                state = orjson.loads(row[4])
                if kind.cls is not None and state.get("class_version", 1) == kind.version:
                    return self._event(kind.cls, kind.fields, state, row)
            except Exception:  # anything unusual: not an object, a bad value, ...
                pass  # the library's mapper decodes it, or raises the error it always did
        return self.mapper.to_domain_event(StoredEvent(UUID(row[1]), row[2], row[3], row[4]))

    def _event(self, cls: type[Any], names: tuple[str, ...] | None, state: dict[str, Any],
               row: EventRow) -> Any:
        if names is None:
            state.pop("class_version", None)
            fields = self.fields(state, state)
            fields["originator_id"] = UUID(row[1])
        else:
            fields = self.fields(state, names)
        fields["originator_version"] = row[2]
        event = object.__new__(cls)  # as the library's mapper makes it
        object.__setattr__(event, "__dict__", fields)
        return event

    def fields(self, state: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        """These top-level fields of `state`, decoded. Most are plain, or a transcoded
        string (a time, an amount): those are done here, without a call each."""
        convert, value = self.convert, self.value
        fields = {}
        for name in names:
            v = state[name]
            kind = type(v)
            if kind is dict:
                data = v.get("_data_")
                if type(data) is str and len(v) == 2 and "_type_" in v:
                    v = convert[v["_type_"]](data)
                else:
                    v = value(v)
            elif kind is list:
                v = value(v)
            fields[name] = v
        return fields

    def value(self, v: Any) -> Any:
        """A stored value as the library's transcoder decodes it (inner objects first)."""
        if type(v) is dict:
            if len(v) == 2 and "_type_" in v and "_data_" in v:
                data = v["_data_"]
                if type(data) is dict or type(data) is list:
                    data = self.value(data)
                return self.convert[v["_type_"]](data)
            return {k: self.value(x) for k, x in v.items()}
        if type(v) is list:
            return [self.value(x) for x in v]
        return v


class Routes:
    """Which handlers of `models` take an event class, worked out once per class; calls
    them with an event, or a fold handler with a run of rows (an event object becomes a
    row for a fold handler: one decoded by the library's mapper, say)."""

    def __init__(self, models: Sequence[ReadModel]) -> None:
        self.models = models
        self.routes: dict[type[Any], list[tuple[Any, ReadModel, tuple[str, ...] | None]]] = {}

    def route(self, cls: type[Any]) -> list[tuple[Any, ReadModel, tuple[str, ...] | None]]:
        found = self.routes.get(cls)
        if found is None:
            found = self.routes[cls] = [
                (handler, model, handler_reads(handler) if getattr(handler, "fold", False)
                 else None)
                for model in self.models if (handler := model.handler(cls)) is not None]
        return found

    def apply(self, event: Any, aid: str) -> None:
        for handler, model, reads in self.route(type(event)):
            if reads is None:
                handler(model, event, aid)
            else:
                handler(model, [fold_row(event, aid, reads)])

    def fold(self, cls: type[Any] | None, rows: FoldRows) -> None:
        """A run of fold rows of class `cls` (decoded as rows: every handler folds)."""
        if rows and cls is not None:
            for handler, model, _ in self.route(cls):
                handler(model, rows)
