"""Row-by-row comparison of a read model's live tables with tables rebuilt aside.

SQL finds the candidates by primary key (rows missing, extra, or with any column
different as stored); Python then compares each candidate column by column in a canonical
form of its kind, so that only real differences are reported: money by its exact decimal
text (scale included: 10.50 is not 10.5), JSON by its value (key order is no difference),
times by instant and offset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from ledger.projections.tables import Dialect, Table


@dataclass
class TableDiff:
    """What differs in one table: counts, and the first `limit` differing rows."""

    table: str
    missing: int = 0  # rows the rebuild has and the live table lacks
    extra: int = 0  # rows the live table has and the rebuild does not
    changed: int = 0  # rows in both whose columns differ
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.missing + self.extra + self.changed


def canonical(kind: str, value: Any) -> Any:
    """A stored value in the form two values of this kind compare by. A value that is not
    of its kind (edited by hand) stays as it is, so it differs from any proper one."""
    if value is None:
        return None
    if kind == "money":
        try:
            return str(value if isinstance(value, Decimal) else Decimal(value))
        except (InvalidOperation, TypeError, ValueError):
            return value
    if kind == "json" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if kind == "time":
        moment = value
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                return value
        # The same instant is the same value, whatever offset its text was stored with.
        return moment.astimezone(UTC).isoformat() if isinstance(moment, datetime) else value
    return value


class Comparison:
    """The statements that compare table `table` (live) with its aside copy."""

    def __init__(self, dialect: Dialect, table: Table, live: str, aside: str) -> None:
        self.d, self.table = dialect, table
        self.live, self.aside = dialect.q(live), dialect.q(aside)
        self.on = " AND ".join(f'a."{k}" = l."{k}"' for k in table.keys)

    def _one_sided(self, have: str, lack: str) -> str:
        """Rows of `have` whose key `lack` does not hold (a NULL key, which only a hand
        edit on SQLite can make, matches nothing)."""
        on = " AND ".join(f'h."{k}" = k."{k}"' for k in self.table.keys)
        return (f"SELECT h.* FROM {have} AS h LEFT JOIN {lack} AS k ON {on} "
                f'WHERE k."{self.table.keys[0]}" IS NULL')

    def _keys(self, alias: str) -> str:
        return ", ".join(f'{alias}."{k}"' for k in self.table.keys)

    def _stored(self, alias: str, column: str) -> str:
        # NUMERIC's text keeps its scale; its `=` would call 10.50 and 10.5 equal.
        cast = "::text" if self.d.backend == "postgres" and self.table.kind(
            column) == "money" else ""
        return f'{alias}."{column}"{cast}'

    def run(self, c: Any, limit: int) -> TableDiff:
        diff = TableDiff(self.table.name)
        for kind, have, lack in (("missing", self.aside, self.live),
                                 ("extra", self.live, self.aside)):
            c.execute(f"SELECT COUNT(*) AS n FROM ({self._one_sided(have, lack)}) AS m")
            count = int(c.fetchone()["n"])
            setattr(diff, kind, count)
            if count and len(diff.rows) < limit:
                c.execute(f"{self._one_sided(have, lack)} ORDER BY {self._keys('h')} "
                          f"LIMIT {limit - len(diff.rows)}")
                diff.rows += [self._row(kind, dict(row)) for row in c.fetchall()]
        self._changed(c, diff, limit)
        return diff

    def _changed(self, c: Any, diff: TableDiff, limit: int) -> None:
        measures = self.table.measures
        if not measures:
            return
        same = "IS NOT" if self.d.backend == "sqlite" else "IS DISTINCT FROM"
        differs = " OR ".join(f"{self._stored('a', m)} {same} {self._stored('l', m)}"
                              for m in measures)
        select = ", ".join([*(f'a."{k}"' for k in self.table.keys),
                            *(f'a."{m}" AS "a.{m}", l."{m}" AS "l.{m}"' for m in measures)])
        c.execute(f"SELECT {select} FROM {self.aside} AS a JOIN {self.live} AS l "
                  f"ON {self.on} WHERE {differs} ORDER BY {self._keys('a')}")
        for row in c.fetchall():
            columns = {}
            for m in measures:
                rebuilt = canonical(self.table.kind(m), row[f"a.{m}"])
                live = canonical(self.table.kind(m), row[f"l.{m}"])
                if rebuilt != live or type(rebuilt) is not type(live):
                    columns[m] = {"live": live, "rebuilt": rebuilt}
            if columns:  # else a difference of form only (JSON key order, say)
                diff.changed += 1
                if len(diff.rows) < limit:
                    diff.rows.append({"kind": "changed", "key": self._key(row),
                                      "columns": columns})

    def _key(self, row: Any) -> dict[str, Any]:
        return {k: row[k] for k in self.table.keys}

    def _row(self, kind: str, row: dict[str, Any]) -> dict[str, Any]:
        values = {c: canonical(self.table.kind(c), row.get(c)) for c in self.table.measures}
        return {"kind": kind, "key": self._key(row), "row": values}
