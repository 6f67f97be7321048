"""`ledger demo`: a scripted season through the command API, summarised."""

from __future__ import annotations

import functools

import click

from ledger.console.options import Settings, friendly_errors, json_option


@click.command()
@click.option("--reset", is_flag=True,
              help="If the store (--db) holds events, delete them first: its SQLite file, "
                   "or the ledger's own tables in the PostgreSQL schema.")
@json_option("The season's summary as one JSON document (store, events, commands, "
             "campaigns); the running commentary goes to stderr.")
@click.pass_obj
@friendly_errors
def demo(settings: Settings, reset: bool, as_json: bool) -> None:
    """Run a scripted season of campaigns through the command API and summarise it.

    Several campaigns (manual and auto review, LIVE and short video), dozens of sellers,
    reviews with approvals, rejections and an override, withdrawals, duplicates, expiry
    at campaign end, and performance reports across a calendar year.

    Without --db it writes into its own file, ./ledger-demo.db (replaced on each run);
    never into ./ledger.db. A store given with --db (or LEDGER_DATABASE_URL) that holds
    events is refused unless --reset.

    \b
    Example:
      ledger demo
      ledger --db sqlite:///ledger-demo.db show campaign 1111-mega-live
    """
    from ledger.demo import DEMO_URL, run_demo

    market = settings.market()
    url = market.url if market else settings.db if settings.db_given else DEMO_URL
    summary = run_demo(url, reset=reset, own=not (settings.db_given or market),
                       echo=functools.partial(click.echo, err=as_json),
                       read_url=market.read_url if market else None)
    if as_json:
        settings.printer.document(summary)
