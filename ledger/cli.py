"""The `ledger` command: the root group and its global options; every command group
lives in `ledger.console` and is registered here."""

from __future__ import annotations

from datetime import datetime, tzinfo

import click

from ledger.console import (
    audit,
    commands,
    demo,
    export,
    projections,
    queries,
    serve,
    sql,
    tokens,
)
from ledger.console.options import TZ_HELP, Settings, parse_time_option, parse_zone
from ledger.ledger import DEFAULT_URL


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="LEDGER_DATABASE_URL", default=DEFAULT_URL, show_default=True,
              help="Event store: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
                   "(env LEDGER_DATABASE_URL).")
@click.option("--now", envvar="LEDGER_NOW", callback=parse_time_option,
              help="Run as if it were this ISO-8601 time, e.g. 2026-11-11T20:00:00+07:00 "
                   "(env LEDGER_NOW). Default: the system clock.")
@click.option("--tz", envvar="LEDGER_TZ", callback=parse_zone, metavar="ZONE", help=TZ_HELP)
@click.option("--config", envvar="LEDGER_CONFIG", metavar="FILE",
              help="Markets file (TOML: [markets.CODE] url = ..., read_url = ...) "
                   "(env LEDGER_CONFIG).")
@click.option("--market", envvar="LEDGER_MARKET", metavar="CODE",
              help="The market of --config to work on, e.g. th (env LEDGER_MARKET). "
                   "Not with --db.")
@click.version_option(package_name="ledger")
@click.pass_context
def main(ctx: click.Context, db: str, now: datetime | None, tz: tzinfo | None,
         config: str | None, market: str | None) -> None:
    """An event-sourced ledger for marketplace livestream campaigns.

    Every fact (a campaign created, a seller registered, a session approved, sales
    recorded) is an immutable event in the store; state is replayed from events.

    Every command that prints data takes --json: one JSON document for a single
    object, JSON Lines (one object per line) for a listing. Instants print in UTC with
    Z on every backend, or in the zone --tz names.

    \b
    Examples:
      ledger demo                              # a scripted season into ./ledger-demo.db
      echo '{"command": ...}' | ledger send -  # execute commands (JSON Lines)
      ledger show campaign 1111-mega-live
      ledger --tz Asia/Bangkok events 1111-mega-live --json
      ledger --db postgresql://postgres@127.0.0.1:5432/ledger events 1111-mega-live
      ledger --config markets.toml --market th campaigns --open
      ledger --config markets.toml export manage_registrations --all-markets
    """
    source = ctx.get_parameter_source("db")
    settings = Settings(db, now, db_given=source is not click.core.ParameterSource.DEFAULT,
                        zone=tz, config=config, market=market)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


for command in (commands.send, commands.show, commands.events, queries.manage,
                queries.campaigns, queries.performance, queries.decisions,
                projections.projections, export.export, sql.sql, audit.audit, serve.serve,
                tokens.tokens_group, demo.demo):
    main.add_command(command)
