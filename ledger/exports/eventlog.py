"""`ledger export events --format parquet`: the event log as Parquet files, partitioned
hive-style (`market=M/year=Y/campaign=C/`) and incremental.

Each market folder holds `_ledger_export.json`, the last position exported. A run reads
the events after it, in pages, and *commits* every `commit_every` events and at the end:
each partition it touched gets one file `part-<after>-<upto>.parquet` (the positions
(after, upto] it holds), renamed into place once complete; then the state file is
rewritten with `upto`. So a data file is listed in no state until all of the commit's
files are in place, and a run that dies (even `kill -9`) leaves at most files whose
`after` is at or beyond the state's position: the next run deletes them first and
exports those events again. Nothing is lost and nothing is exported twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.audit.history import Source
from ledger.exports.events import SCHEMA, EventRows, Row
from ledger.exports.files import TMP, only_writer, settle, sync_folder, write_json

STATE = "_ledger_export.json"
PART = re.compile(r"part-(\d{12})-(\d{12})\.parquet")
PAGE = 1_000  # events read and decoded at a time
BUFFERED = 10_000  # rows held in memory before they are written as row groups
COMMIT_EVERY = 100_000  # events between commits (files renamed, state written)
DEFAULT_MARKET = "default"

Progress = Callable[[int, int], None]


class Diverged(RuntimeError):
    """The folder's state is ahead of the store: it holds another store's events."""


@dataclass
class Summary:
    """What a run did: the positions it covered, the rows and files it wrote."""

    market: str
    after: int
    position: int
    rows: int = 0
    files: list[Path] = field(default_factory=list)


def market_folder(folder: Path, market: str) -> Path:
    """Where one market's partitions and state live."""
    return folder / f"market={market}"


def read_state(market_dir: Path) -> int:
    """The last position exported into `market_dir` (0: nothing yet)."""
    path = market_dir / STATE
    if not path.exists():
        return 0
    return int(json.loads(path.read_text(encoding="utf-8"))["position"])


def committed_files(folder: Path) -> list[Path]:
    """The data files every market's state covers: what a reader should read (files of
    a run that died after renaming them but before its state was written are left out)."""
    found = []
    for market_dir in sorted(folder.glob("market=*")):
        position = read_state(market_dir)
        for path in sorted(market_dir.rglob("part-*.parquet")):
            match = PART.fullmatch(path.name)
            if match and int(match[1]) < position:
                found.append(path)
    return found


def remove_leftovers(market_dir: Path, position: int) -> int:
    """Delete what a run that died left: temporary files, and files of commits whose
    state was never written (their `after` is at or beyond the state's position)."""
    removed = 0
    for path in market_dir.rglob("*"):
        match = PART.fullmatch(path.name)
        if path.name.endswith(TMP) or (match and int(match[1]) >= position):
            path.unlink()
            removed += 1
    return removed


class Partitions:
    """Rows buffered per partition, written as row groups into one temporary file per
    partition, and renamed into place at `commit`."""

    def __init__(self, market_dir: Path) -> None:
        self.market_dir = market_dir
        self.buffers: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self.writers: dict[tuple[int, str], tuple[pq.ParquetWriter, Path]] = {}
        self.buffered = 0

    def add(self, row: Row) -> None:
        self.buffers.setdefault((row.year, row.campaign), []).append(row.values)
        self.buffered += 1
        if self.buffered >= BUFFERED:
            self.flush()

    def flush(self) -> None:
        """Write every buffer as a row group of its partition's temporary file."""
        for key, rows in self.buffers.items():
            if key not in self.writers:
                folder = self.market_dir / f"year={key[0]}" / f"campaign={key[1]}"
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f"part{TMP}"
                self.writers[key] = (pq.ParquetWriter(tmp, SCHEMA), tmp)
            self.writers[key][0].write_table(pa.Table.from_pylist(rows, schema=SCHEMA))
        self.buffers.clear()
        self.buffered = 0

    def commit(self, after: int, upto: int) -> list[Path]:
        """Close every file and rename it to `part-<after>-<upto>.parquet`."""
        self.flush()
        done = []
        for writer, tmp in self.writers.values():
            writer.close()
            path = tmp.with_name(f"part-{after:012d}-{upto:012d}.parquet")
            settle(tmp, path)
            done.append(path)
        self.writers.clear()
        # New partition folders: their entries in the year and market folders, durable too.
        for folder in {p.parent.parent for p in done} | {self.market_dir}:
            sync_folder(folder)
        return done

    def abandon(self) -> None:
        for writer, tmp in self.writers.values():
            writer.close()
            tmp.unlink(missing_ok=True)
        self.writers.clear()


def export_events(source: Source, folder: Path, market: str = DEFAULT_MARKET, *,
                  page: int = PAGE, commit_every: int = COMMIT_EVERY,
                  progress: Progress | None = None) -> Summary:
    """Export the events recorded since the last export into `folder` (see the module's
    docstring); up to the store's head as read at the start."""
    market_dir = market_folder(folder, market)
    with only_writer(market_dir):
        position = read_state(market_dir)
        remove_leftovers(market_dir, position)
        head = source.app.recorder.max_notification_id() or 0
        if head < position:
            raise Diverged(f"{market_dir} holds events up to position {position:,} but the "
                           f"store's last position is {head:,}: it was exported from another "
                           "store (or this one was reset); export into a new folder")
        summary = Summary(market, position, position)
        reader, parts = EventRows(source), Partitions(market_dir)
        since_commit = 0
        try:
            for rows in reader.pages(position, head, page):
                for row in rows:
                    parts.add(row)
                    summary.rows += 1
                    summary.position = row.values["position"]
                    since_commit += 1
                    if since_commit >= commit_every:
                        _commit(parts, market_dir, summary, summary.position)
                        since_commit = 0
                if progress is not None:
                    progress(summary.position, head)
            if summary.position > read_state(market_dir):
                _commit(parts, market_dir, summary, summary.position)
        except BaseException:
            parts.abandon()
            raise
    return summary


def _commit(parts: Partitions, market_dir: Path, summary: Summary, upto: int) -> None:
    after = read_state(market_dir)
    summary.files += parts.commit(after, upto)
    write_json(market_dir / STATE, {
        "position": upto, "market": summary.market,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "the last store position exported here; `ledger export events --format "
                "parquet` continues after it"})
