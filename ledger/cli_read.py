"""`ledger projections ...`, the read-model queries and `ledger export`: thin commands."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import click

from ledger.cli import Settings, friendly_errors, main
from ledger.cli_csv import write_csv
from ledger.cli_output import output_file
from ledger.cli_print import json_option
from ledger.projections.manage import REGISTRATION_STATUSES, campaign_list, manage_page
from ledger.projections.registry import READ_MODELS, default_jobs, projector
from ledger.projections.rows import UNREADABLE
from ledger.projections.runner import Projector
from ledger.shapes import cell
from ledger.values import dumps


def _projector(settings: Settings) -> Projector:
    return projector(settings.ledger().app)


def _names(names: Sequence[str]) -> list[str] | None:
    unknown = [n for n in names if n not in READ_MODELS]
    if unknown:
        raise click.BadParameter(f"unknown read model {unknown[0]!r}; one of: "
                                 f"{', '.join(READ_MODELS)}", param_hint="NAME")
    return list(names) or None


class ProgressBar:
    """Events done, then events/s and ETA once a rate is known, on a terminal (stderr);
    silent otherwise."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.first: tuple[int, float] | None = None  # the first report: position, time

    def __call__(self, position: int, target: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        first = self.first = self.first or (position, now)
        width = 30
        filled = int(width * position / target) if target else width
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {position:,}/{target:,} "
                          f"events{speed(first, position, target, now)} ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def speed(first: tuple[int, float], position: int, target: int, now: float) -> str:
    """The rate since the first report, and the time left at it; nothing until then (a
    rate over no time, or over no events, is no rate)."""
    done, elapsed = position - first[0], now - first[1]
    if done <= 0 or elapsed <= 0:
        return ""
    rate = done / elapsed
    return f"  {rate:,.0f}/s  ETA {(target - position) / rate:,.0f}s"


# ledger projections ... -----------------------------------------------------------------------

@main.group()
def projections() -> None:
    """Read models: status, catch up, follow new events, rebuild from the first event."""


@projections.command("status")
@json_option("JSON Lines: one object per read model.")
@click.pass_obj
@friendly_errors
def projections_status(settings: Settings, as_json: bool) -> None:
    """Each read model's position, the store's head, the lag, when it last advanced.

    Example: ledger projections status
    """
    report = _projector(settings).status()
    if as_json:
        settings.printer.lines(report)
        return
    settings.printer.table(report, ["name", "position", "head", "lag", "last_advanced_at",
                                    "skipped_unknown", "rebuild_in_progress"])


@projections.command("catch-up")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@json_option("One JSON document: read_models, events, seconds, position.")
@click.pass_obj
@friendly_errors
def projections_catch_up(settings: Settings, names: tuple[str, ...], as_json: bool) -> None:
    """Apply every event recorded since each read model's position, then exit.

    \b
    Examples:
      ledger projections catch-up manage_campaign
      ledger projections catch-up --json
    """
    chosen = _names(names)
    p = _projector(settings)
    bar = ProgressBar()
    started = time.monotonic()
    done = p.catch_up(chosen, progress=bar)
    bar.close()
    took = time.monotonic() - started
    if as_json:
        settings.printer.document({"read_models": chosen or list(READ_MODELS), "events": done,
                                   "seconds": round(took, 3), "position": p.head()})
        return
    click.echo(f"caught up {done:,} events in {took:.1f}s; position {p.head():,}")


@projections.command("run")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--interval", default=0.2, show_default=True, help="Seconds between polls.")
@json_option("JSON Lines on stdout as it goes: {\"advanced_to\": P} each time the read "
             "models advance, {\"stopped_at\": P} when stopped.")
@click.pass_obj
@friendly_errors
def projections_run(settings: Settings, names: tuple[str, ...], interval: float,
                    as_json: bool) -> None:
    """Keep the read models current until interrupted (Ctrl-C or SIGTERM stops cleanly).

    Each page is written with its position in one transaction, so stopping at any moment
    loses nothing; the next run carries on where this one stopped. Stopped, it prints
    the position reached and exits 0.

    \b
    Examples:
      ledger projections run
      ledger projections run --json | jq .advanced_to
    """
    chosen = _names(names)
    p = _projector(settings)
    click.echo(f"following {settings.ledger().url} (Ctrl-C to stop)", err=True)

    def say(key: str, position: int) -> None:
        if as_json:
            settings.printer.lines([{key: position}])
        else:
            click.echo(f"{key.replace('_', ' ')} position {position:,}", err=True)

    # SIGTERM (a service manager's stop) interrupts exactly as Ctrl-C does: the page being
    # written is one transaction, so it is either whole or rolled back.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        p.run(chosen, interval=interval, on_advance=lambda at: say("advanced_to", at))
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one: no traceback
        reached = min(row["position"] for row in p.status()
                      if chosen is None or row["name"] in chosen)
        say("stopped_at", reached)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@projections.command("rebuild")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--restart", is_flag=True,
              help="Throw away an interrupted rebuild instead of resuming it.")
@click.option("--jobs", type=click.IntRange(1, 8), default=None,
              help="Processes to rebuild with, each taking a group of read models "
                   "[default: 2 on a machine with 2 CPUs or more, else 1].")
@click.option("--wait", is_flag=True,
              help="If another rebuild of this store is running, wait for it to end "
                   "(default: stop at once, naming it).")
@json_option("One JSON document: read_models, events, seconds, events_per_second, position.")
@click.pass_obj
@friendly_errors
def projections_rebuild(settings: Settings, names: tuple[str, ...], restart: bool,
                        jobs: int | None, wait: bool, as_json: bool) -> None:
    """Rebuild read models from the first event, then swap them in atomically.

    Readers keep seeing the old tables until the new ones are complete. An interrupted
    rebuild leaves the old tables in place; running it again resumes it. With two CPUs
    the read models are rebuilt by two processes, each reading the store once. One
    rebuild at a time per store: another one running is named in one line (or waited
    for, with --wait).

    Example: ledger projections rebuild ytd_performance
    """
    chosen = _names(names)
    p = _projector(settings)
    bar = ProgressBar()
    started = time.monotonic()
    done = p.rebuild(chosen, restart=restart, progress=bar, jobs=jobs or default_jobs(),
                     wait=wait)
    bar.close()
    took = time.monotonic() - started
    rate = done / took if took else 0
    if as_json:
        settings.printer.document({"read_models": chosen or list(READ_MODELS), "events": done,
                                   "seconds": round(took, 3), "events_per_second": round(rate),
                                   "position": p.head()})
        return
    click.echo(f"rebuilt {', '.join(chosen or READ_MODELS)}: {done:,} events in {took:.1f}s "
               f"({rate:,.0f} events/s); position {p.head():,}")


# Queries ----------------------------------------------------------------------------------------

def query_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--fresh", is_flag=True,
                        help="Catch the read model up first, so a just-sent command shows.")(func)
    return json_option("JSON for programs: JSON Lines (one object per row) for a list, "
                       "one JSON document for a report.")(func)


def _fresh_projector(settings: Settings, name: str, fresh: bool) -> Projector:
    """The projector, `name` caught up first with --fresh; else a warning on stderr if it
    is behind the store (stdout stays the answer alone, so --json stays parseable)."""
    p = _projector(settings)
    if fresh:
        p.catch_up([name])
        return p
    position = p.view.position(name)
    head = p.head()  # after the position: never below it
    if position < head:
        behind = head - position
        click.echo(f"warning: read model {name} is {behind:,} event{'s' if behind > 1 else ''}"
                   f" behind the store (at position {position:,} of {head:,}): results may "
                   "be missing or stale; add --fresh, or keep `ledger projections run` going",
                   err=True)
    return p


def _readable(rows: list[dict[str, Any]], what: str, key: str) -> list[dict[str, Any]]:
    """The rows that could be read. Each one that could not is a warning on stderr (and
    stays in --json output, as `"unreadable": why`); the others are still shown."""
    for row in rows:
        if UNREADABLE in row:
            click.echo(f"warning: {what} {row.get(key)!r} cannot be read from the read model: "
                       f"{row[UNREADABLE]} (`ledger show {what}` replays it from its events)",
                       err=True)
    return [row for row in rows if UNREADABLE not in row]


@main.command()
@click.option("--seller", required=True, help="The seller's id.")
@click.option("--status", type=click.Choice(REGISTRATION_STATUSES), help="Only this status.")
@click.option("--campaign", help="Only this campaign id.")
@query_options
@click.pass_obj
@friendly_errors
def manage(settings: Settings, seller: str, status: str | None, campaign: str | None,
           as_json: bool, fresh: bool) -> None:
    """The seller's Manage Campaign page: registrations, sessions, actions open now.

    Example: ledger manage --seller seller-07 --status expired
    """
    p = _fresh_projector(settings, "manage_campaign", fresh)
    rows = manage_page(p.view, seller, settings.ledger().clock.now(), status=status,
                       campaign_id=campaign)
    readable = _readable(rows, "registration", "registration_id")
    if as_json:
        settings.printer.lines(rows)
        return
    for row in readable:
        row["sessions"] = [f"{s['session_id']}:{s['status']}" for s in row["sessions"]]
    settings.printer.table(readable, ["campaign_name", "account_id", "status", "sessions",
                                      "last_decision", "actions", "registration_id"])


@main.command()
@click.option("--open", "open_only", is_flag=True, help="Only campaigns open for registration.")
@query_options
@click.pass_obj
@friendly_errors
def campaigns(settings: Settings, open_only: bool, as_json: bool, fresh: bool) -> None:
    """The campaigns, with their status now (optionally only those open for registration).

    Example: ledger campaigns --open
    """
    p = _fresh_projector(settings, "manage_campaign", fresh)
    rows = campaign_list(p.view, settings.ledger().clock.now(), open_only=open_only)
    readable = _readable(rows, "campaign", "campaign_id")
    if as_json:
        settings.printer.lines(rows)
        return
    settings.printer.table(readable, ["campaign_id", "name", "kind", "review_mode", "status",
                                      "registration_closes_at", "starts_at", "ends_at"])


@main.group()
def performance() -> None:
    """Sales performance: a seller's year to date, or one campaign's."""


MONEY_COLUMNS = ["currency", "gmv", "refunds", "orders", "items_sold", "buyers", "views",
                 "reports"]


@performance.command("ytd")
@click.option("--seller", required=True, help="The seller's id.")
@click.option("--year", required=True, type=click.IntRange(2000, 2100), help="Calendar year.")
@query_options
@click.pass_obj
@friendly_errors
def performance_ytd(settings: Settings, seller: str, year: int, as_json: bool,
                    fresh: bool) -> None:
    """A seller's year: totals per currency, campaigns joined, per month, per campaign.

    Example: ledger performance ytd --seller seller-07 --year 2026
    """
    from ledger.projections.ytd import ytd_report

    report = ytd_report(_fresh_projector(settings, "ytd_performance", fresh).view, seller, year)
    if as_json:
        settings.printer.document(report)
        return
    click.echo(f"{seller}, {year}: {report['campaigns_joined']} campaigns joined\n")
    _tables(settings, (report["totals"], MONEY_COLUMNS),
            (report["months"], ["month", *MONEY_COLUMNS]),
            (report["campaigns"], ["campaign_name", *MONEY_COLUMNS]))


def _tables(settings: Settings, *parts: tuple[list[dict[str, Any]], list[str]]) -> None:
    """Tables one after another, a blank line between them."""
    for n, (rows, columns) in enumerate(parts):
        if n:
            click.echo()
        settings.printer.table(rows, columns)


@performance.command("campaign")
@click.argument("campaign_id")
@query_options
@click.pass_obj
@friendly_errors
def performance_campaign(settings: Settings, campaign_id: str, as_json: bool,
                         fresh: bool) -> None:
    """A campaign: totals, per day, per seller, registrations by status, approval rate.

    Example: ledger performance campaign 1111-mega-live
    """
    from ledger.projections.campaign_performance import campaign_performance_report

    report = campaign_performance_report(
        _fresh_projector(settings, "campaign_performance", fresh).view, campaign_id)
    if as_json:
        settings.printer.document(report)
        return
    regs, approval = report["registrations"], report["approval"]
    click.echo(f"{report.get('name', campaign_id)}: {regs['total']} registrations "
               f"({cell(regs['by_status'])}); approval rate {approval['approval_rate']} "
               f"({approval['approved']} of {approval['decided']} decided)\n")
    _tables(settings, (report["totals"], MONEY_COLUMNS),
            (report["days"], ["day", *MONEY_COLUMNS]),
            (report["sellers"], ["seller_id", *MONEY_COLUMNS]))


@main.command()
@click.option("--reviewer", help="Only this reviewer's decisions (`system`: automatic ones).")
@click.option("--campaign", help="Only this campaign id.")
@click.option("--overrides", is_flag=True, help="Only approvals that overrode failed criteria.")
@query_options
@click.pass_obj
@friendly_errors
def decisions(settings: Settings, reviewer: str | None, campaign: str | None, overrides: bool,
              as_json: bool, fresh: bool) -> None:
    """Review decisions, oldest first: who decided what, on which facts, how fast.

    Example: ledger decisions --campaign 1111-mega-live --overrides
    """
    from ledger.projections.decisions import decisions_report

    rows = decisions_report(_fresh_projector(settings, "review_decisions", fresh).view,
                            reviewer, campaign, overrides)
    if as_json:
        settings.printer.lines(rows)
        return
    settings.printer.table(rows, ["decided_at", "campaign_id", "seller_id", "decision",
                                  "session_ids", "reviewer_id", "reasons", "override_reason",
                                  "seconds_to_decide"])


# Export ---------------------------------------------------------------------------------------

def _export_tables() -> dict[str, Any]:
    return {t.name: t for model in READ_MODELS.values() for t in model.tables}


@main.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="csv (the default) or jsonl: JSON Lines, one object per row.")
@json_option("The same as --format jsonl: one JSON object per row.")
@click.option("--out", default="-", metavar="FILE",
              help="File to write (default: standard output).")
@click.option("--fresh", is_flag=True, help="Catch the table's read model up first.")
@click.pass_obj
@friendly_errors
def export(settings: Settings, name: str, fmt: str | None, as_json: bool, out: str,
           fresh: bool) -> None:
    """Export a read-model table (e.g. manage_registrations) as CSV or JSON Lines.

    Money stays exact (decimal strings); times are instants as every command prints
    them (UTC with Z, or --tz); nested values are JSON. In CSV a cell that begins with =,
    +, -, @, a tab or a carriage return gets a ' in front, so a spreadsheet shows it as
    text instead of running it; JSON Lines are verbatim.

    \b
    Examples:
      ledger export ytd_months --format csv --out ytd.csv
      ledger export review_decisions --json | jq .decided_at
    """
    if as_json and fmt == "csv":
        raise click.UsageError("--json is --format jsonl: give one of them, not --format csv")
    fmt = "jsonl" if as_json else fmt or "csv"
    tables = _export_tables()
    key = name.removeprefix("rm_")
    if key not in tables:
        raise click.BadParameter(f"unknown table {name!r}; one of: {', '.join(tables)}",
                                 param_hint="NAME")
    spec = tables[key]
    owner = next(m.name for m in READ_MODELS.values() if spec in m.tables)
    view = _fresh_projector(settings, owner, fresh).view
    printer = settings.printer
    rows = (printer.json(view.decode_row(spec, row)) for row in view.query(
        f"SELECT * FROM {view.dialect.q('rm_' + key)} ORDER BY "
        + ", ".join(f'"{k}"' for k in spec.keys)))
    with output_file(out) as stream:
        if fmt == "jsonl":
            for row in rows:
                stream.write(dumps(row, zone=printer.zone) + "\n")
        else:
            write_csv(stream, rows, spec.all_columns, zone=printer.zone)


from ledger import cli_verify  # noqa: E402, F401  (projections verify)
