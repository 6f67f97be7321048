"""`ledger audit ...`: replay history, state as of a moment, decisions, tamper evidence."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from ledger.audit.decisions import Filters
from ledger.console.audit_chain import audit_seal, audit_seals, audit_verify
from ledger.console.options import Settings, friendly_errors, json_option, parse_time_option
from ledger.console.printing import write_csv
from ledger.shapes import cell


@click.group()
def audit() -> None:
    """Audit from the event store itself (never from read models that may lag)."""


HISTORY_COLUMNS = ["version", "recorded_at", "type", "actor", "command_id", "changes"]


def _changes(data: dict[str, Any]) -> str:
    """The fields an event sets, on one line: nested values as compact JSON."""
    return " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else cell(v)}"
        for k, v in data.items())


@audit.command("history")
@click.argument("aggregate_id", metavar="ID")
@json_option("JSON Lines: one object per event.")
@click.pass_obj
@friendly_errors
def audit_history(settings: Settings, aggregate_id: str, as_json: bool) -> None:
    """Every event of a campaign (by its id) or registration (by its UUID), in order.

    Each with its version, recorded time, type, actor, command_id and the fields it set.

    \b
    Examples:
      ledger audit history 1111-mega-live
      ledger audit history 1b4e28ba-2fa1-51d2-883f-0016d3cca427 --json
    """
    records = settings.ledger().history(aggregate_id)
    if as_json:
        settings.printer.lines(records)
        return
    rows = [{**record, "actor": f"{record['actor']['role']}:{record['actor']['id']}",
             "changes": _changes(record["data"])}
            for record in map(settings.printer.json, records)]
    settings.printer.table(rows, HISTORY_COLUMNS)


@audit.command("as-of")
@click.argument("aggregate_id", metavar="ID")
@click.option("--at", "at", callback=parse_time_option, metavar="ISO-8601",
              help="The state after every event recorded at or before this time.")
@click.option("--version", "version", type=click.IntRange(min=1),
              help="The state after this version (1 = the first event).")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def audit_as_of(settings: Settings, aggregate_id: str, at: datetime | None,
                version: int | None, as_json: bool) -> None:
    """A campaign's or registration's state as it was then, replayed from its events.

    The same JSON as `ledger show`; which version it is goes to stderr. A campaign's
    status is the one it had at that time, not now.

    \b
    Examples:
      ledger audit as-of 1b4e28ba-2fa1-51d2-883f-0016d3cca427 --at 2026-10-06T12:00:00+07:00
      ledger audit as-of 1111-mega-live --version 1
    """
    if (at is None) == (version is None):
        raise click.UsageError("give exactly one of --at and --version")
    found = settings.ledger().as_of(aggregate_id, at=at, version=version)
    printer = settings.printer
    click.echo(f"{aggregate_id} as of {printer.instant(at) if at else f'version {version}'}: "
               f"version {found.version} of {found.last_version}, recorded "
               f"{printer.instant(found.recorded_at)}", err=True)
    printer.document(found.state)


# Decisions and findings -----------------------------------------------------------------------

DECISION_COLUMNS = ["decided_at", "campaign_id", "seller_id", "decision", "session_ids",
                    "reviewer_id", "failed_criteria", "reasons", "override_reason",
                    "seconds_to_decide"]
FINDING_COLUMNS = ["finding", "decided_at", "campaign_id", "registration_id", "decision",
                   "session_ids", "reviewer_id", "evidence"]


def _filters(func: Any) -> Any:
    options = [
        click.option("--reviewer", help="Only this reviewer's decisions (`system`: automatic)."),
        click.option("--campaign", help="Only this campaign id."),
        click.option("--since", callback=parse_time_option, metavar="ISO-8601",
                     help="Only decisions made at or after this time."),
        click.option("--until", callback=parse_time_option, metavar="ISO-8601",
                     help="Only decisions made before this time."),
        click.option("--overrides", is_flag=True,
                     help="Only approvals that overrode failed criteria."),
        click.option("--auto", is_flag=True, help="Only the system's automatic decisions."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@audit.command("decisions")
@_filters
@json_option("JSON Lines: one object per decision.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]), default=None,
              help="table (the default), or csv: one row per decision, nested values as "
                   "JSON, a ' in front of a cell that a spreadsheet would run as a formula.")
@click.pass_obj
@friendly_errors
def audit_decisions(settings: Settings, reviewer: str | None, campaign: str | None,
                    since: datetime | None, until: datetime | None, overrides: bool,
                    auto: bool, as_json: bool, fmt: str | None) -> None:
    """Every approval and rejection, with the facts it was made on, oldest first.

    The seller's profile and eligibility as recorded at registration, the campaign's
    requirements then, the sessions decided (with their windows), reasons or override
    reason, and the time to decide: replayed from the event store, not a read model.

    \b
    Examples:
      ledger audit decisions --campaign 1111-mega-live --overrides
      ledger audit decisions --reviewer rev-bao --since 2026-10-01T00:00:00Z --format csv
    """
    if as_json and fmt is not None:
        raise click.UsageError(f"--json and --format {fmt} are two outputs: give one of them")
    rows = settings.ledger().decisions(Filters(reviewer, campaign, since, until, overrides, auto))
    if as_json:
        settings.printer.lines(rows)
    elif fmt == "csv":
        write_csv(sys.stdout, rows, zone=settings.printer.zone)
    else:
        settings.printer.table(rows, DECISION_COLUMNS)


@audit.command("findings")
@_filters
@json_option("JSON Lines: one object per finding.")
@click.pass_obj
@friendly_errors
def audit_findings(settings: Settings, reviewer: str | None, campaign: str | None,
                   since: datetime | None, until: datetime | None, overrides: bool,
                   auto: bool, as_json: bool) -> None:
    """Decisions (and events) an auditor should look at, each with its evidence.

    Approvals that overrode failed criteria; decisions on sessions that had already
    started; decisions made after the campaign ended; rejections with no reason code
    other than `other`; reviewers deciding their own registrations. Then events recorded
    earlier than the version before them (`time_went_backwards`, in stores written before
    the ledger refused a clock that is behind): `audit as-of --at` is wrong about those
    aggregates. --reviewer, --overrides and --auto select decisions only.

    \b
    Examples:
      ledger audit findings
      ledger audit findings --campaign 1111-mega-live --json
    """
    rows = settings.ledger().findings(Filters(reviewer, campaign, since, until, overrides, auto))
    if as_json:
        settings.printer.lines(rows)
        return
    settings.printer.table([{**row, "evidence": _changes(row["evidence"])}
                            for row in map(settings.printer.json, rows)], FINDING_COLUMNS)


for command in (audit_verify, audit_seal, audit_seals):
    audit.add_command(command)
