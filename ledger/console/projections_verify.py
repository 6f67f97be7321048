"""`ledger projections verify`: are the read models what the events say they are?"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ledger.console.options import Settings, friendly_errors, json_option, read_model_names
from ledger.console.printing import Progress
from ledger.projections.compare import TableDiff
from ledger.projections.verify import Verdict, VerifyFailed, verify
from ledger.values import jsonable

WIDTH = 60  # characters of a value shown in a changed row (JSON ones get long)


@click.command("verify")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--limit", type=click.IntRange(0, None), default=10, show_default=True,
              help="Differing rows shown per table (all are counted).")
@json_option("One JSON document: match, head, and each read model's tables and rows.")
@click.pass_obj
@friendly_errors
def projections_verify(settings: Settings, names: tuple[str, ...], limit: int,
                       as_json: bool) -> None:
    """Rebuild read models aside and compare them row by row with the live tables.

    Each read model is rebuilt into tables of its own (rm_*__verify, dropped at the end)
    up to the position the live one has reached, and compared with it: rows missing,
    extra, or changed (money with its scale: 10.50 is not 10.5). The live tables, their
    positions, a running follower and a rebuild are left alone. A read model behind the
    store's head is compared at its own position (catch it up first to include the rest).
    Exit 0 when all match, 1 when a row differs, 2 when verifying could not be done.

    Example: ledger projections verify manage_campaign --limit 5
    """
    chosen = read_model_names(names)
    p = settings.projector()
    try:
        with Progress() as bar:
            verdicts = verify(p, chosen, limit=limit, progress=bar)
    except VerifyFailed as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(2)
    head = p.head()
    if as_json:
        settings.printer.document(report(verdicts, head))
    else:
        for verdict in verdicts:
            click.echo(describe(verdict, limit))
        click.echo(summary(verdicts, head))
    if any(v.differences for v in verdicts):
        sys.exit(1)


def report(verdicts: list[Verdict], head: int) -> dict[str, Any]:
    """The verdicts as one JSON document (`--json`)."""
    return {"match": not any(v.differences for v in verdicts), "head": head,
            "read_models": [{
                "name": v.name, "position": v.position, "match": not v.differences,
                "differences": v.differences,
                "tables": [{"table": f"rm_{t.table}", "missing": t.missing, "extra": t.extra,
                            "changed": t.changed, "rows": t.rows} for t in v.tables],
            } for v in verdicts]}


def describe(verdict: Verdict, limit: int) -> str:
    """One read model's verdict for people: matches, or its differing keys (at most `limit`)."""
    if not verdict.differences:
        return f"{verdict.name}: matches (position {verdict.position:,})"
    rows = "1 row differs" if verdict.differences == 1 else f"{verdict.differences:,} rows differ"
    lines = [f"{verdict.name}: {rows} (position {verdict.position:,})"]
    for diff in verdict.tables:
        if diff.count:
            lines += _table_lines(diff)
    return "\n".join(lines)


def _table_lines(diff: TableDiff) -> list[str]:
    counts = ", ".join(f"{getattr(diff, kind):,} {kind}" for kind in
                       ("missing", "extra", "changed") if getattr(diff, kind))
    lines = [f"  rm_{diff.table}: {counts}"]
    for row in diff.rows:
        key = " ".join(f"{k}={v}" for k, v in row["key"].items())
        what = "; ".join(f"{column}: live {_short(pair['live'])}, rebuilt "
                         f"{_short(pair['rebuilt'])}"
                         for column, pair in row.get("columns", {}).items())
        lines.append(f"    {row['kind']:<8} {key}" + (f"  {what}" if what else ""))
    if diff.count > len(diff.rows):
        lines.append(f"    ... and {diff.count - len(diff.rows):,} more (--limit)")
    return lines


def _short(value: Any) -> str:
    text = json.dumps(jsonable(value), ensure_ascii=False)
    return text if len(text) <= WIDTH else text[:WIDTH - 3] + "..."


def summary(verdicts: list[Verdict], head: int) -> str:
    """The closing line: what matched or differed, at which positions, against the head."""
    positions = sorted({v.position for v in verdicts})
    at = (f"position {positions[0]:,}" if len(positions) == 1 else "positions " + ", ".join(
        f"{v.name} {v.position:,}" for v in verdicts))
    if positions and positions[0] < head:
        at += (f"; the store's head is {head:,}: events after a read model's position are "
               "not in it yet, so not verified (catch up first to include them)")
    differing = sum(1 for v in verdicts if v.differences)
    if differing:
        names = " ".join(v.name for v in verdicts if v.differences)
        return (f"{differing} of {len(verdicts)} read models differ ({at}); "
                f"`ledger projections rebuild {names}` rebuilds them from the events")
    return f"all {len(verdicts)} read models match ({at})"
