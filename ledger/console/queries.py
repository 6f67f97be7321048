"""The read-model queries: `ledger manage`, `campaigns`, `performance ytd|campaign`,
`decisions`; and how a query says its read model is behind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ledger.console.options import Settings, friendly_errors, json_option
from ledger.projections.manage import REGISTRATION_STATUSES, campaign_list, manage_page
from ledger.projections.rows import UNREADABLE
from ledger.projections.runner import Projector
from ledger.shapes import cell


def query_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every read-model query takes: `--fresh` and `--json`."""
    func = click.option("--fresh", is_flag=True,
                        help="Catch the read model up first, so a just-sent command shows.")(func)
    return json_option("JSON for programs: JSON Lines (one object per row) for a list, "
                       "one JSON document for a report.")(func)


def fresh_projector(settings: Settings, name: str, fresh: bool) -> Projector:
    """The projector, `name` caught up first with --fresh; else a warning on stderr if it
    is behind the store (stdout stays the answer alone, so --json stays parseable)."""
    p = settings.projector()
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


@click.command()
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
    p = fresh_projector(settings, "manage_campaign", fresh)
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


@click.command()
@click.option("--open", "open_only", is_flag=True, help="Only campaigns open for registration.")
@query_options
@click.pass_obj
@friendly_errors
def campaigns(settings: Settings, open_only: bool, as_json: bool, fresh: bool) -> None:
    """The campaigns, with their status now (optionally only those open for registration).

    Example: ledger campaigns --open
    """
    p = fresh_projector(settings, "manage_campaign", fresh)
    rows = campaign_list(p.view, settings.ledger().clock.now(), open_only=open_only)
    readable = _readable(rows, "campaign", "campaign_id")
    if as_json:
        settings.printer.lines(rows)
        return
    settings.printer.table(readable, ["campaign_id", "name", "kind", "review_mode", "status",
                                      "registration_closes_at", "starts_at", "ends_at"])


@click.group()
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

    report = ytd_report(fresh_projector(settings, "ytd_performance", fresh).view, seller, year)
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
        fresh_projector(settings, "campaign_performance", fresh).view, campaign_id)
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


@click.command()
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

    rows = decisions_report(fresh_projector(settings, "review_decisions", fresh).view,
                            reviewer, campaign, overrides)
    if as_json:
        settings.printer.lines(rows)
        return
    settings.printer.table(rows, ["decided_at", "campaign_id", "seller_id", "decision",
                                  "session_ids", "reviewer_id", "reasons", "override_reason",
                                  "seconds_to_decide"])
