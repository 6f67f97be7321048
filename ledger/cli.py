"""The `ledger` command: parse arguments, call the Ledger, print. Nothing else lives here."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TextIO, TypeVar

import click

from ledger.clock import Clock, FixedClock, SystemClock, parse_instant
from ledger.errors import LedgerError, StoreUnavailable, first_line
from ledger.ledger import Ledger
from ledger.store.faults import classify
from ledger.store.urls import DEFAULT_URL
from ledger.views import campaign_state, dumps, event_record, registration_state

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """Global options, resolved lazily so `--help` never touches the store."""

    def __init__(self, db: str, now: datetime | None, db_given: bool = True) -> None:
        self.db = db
        self.db_given = db_given  # --db or LEDGER_DATABASE_URL, not the default
        self.now = now
        self._ledger: Ledger | None = None

    def clock(self) -> Clock:
        return FixedClock(self.now) if self.now is not None else SystemClock()

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.open(self.db, clock=self.clock(), pool_size=2)
            for notice in self._ledger.notices:
                click.echo(notice, err=True)
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def friendly_errors(func: F) -> F:
    """Turn our errors into one `Error: ...` line and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LedgerError as e:
            raise click.ClickException(f"{e.code}: {e.message}") from None
        except StoreUnavailable as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:
            fault = classify(e)
            if fault is not None:  # a read that met a store fault: say which, exit 2
                click.echo(f"Error: store unavailable: {fault.describe()}", err=True)
                sys.exit(2)
            if os.environ.get("LEDGER_DEBUG"):
                raise
            click.echo(f"Error: {type(e).__name__}: {first_line(e)} "
                       "(set LEDGER_DEBUG=1 for the traceback)", err=True)
            sys.exit(3)

    return wrapper  # type: ignore[return-value]


def parse_time_option(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="LEDGER_DATABASE_URL", default=DEFAULT_URL, show_default=True,
              help="Event store: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
                   "(env LEDGER_DATABASE_URL).")
@click.option("--now", envvar="LEDGER_NOW", callback=parse_time_option,
              help="Run as if it were this ISO-8601 time, e.g. 2026-11-11T20:00:00+07:00 "
                   "(env LEDGER_NOW). Default: the system clock.")
@click.version_option(package_name="ledger")
@click.pass_context
def main(ctx: click.Context, db: str, now: datetime | None) -> None:
    """An event-sourced ledger for marketplace livestream campaigns.

    Every fact (a campaign created, a seller registered, a session approved, sales
    recorded) is an immutable event in the store; state is replayed from events.

    \b
    Examples:
      ledger demo                              # a scripted season into ./ledger-demo.db
      echo '{"command": ...}' | ledger send -  # execute commands (JSON Lines)
      ledger show campaign 1111-mega-live
      ledger --db postgresql://postgres@127.0.0.1:5432/ledger events 1111-mega-live
    """
    source = ctx.get_parameter_source("db")
    settings = Settings(db, now, db_given=source is not click.core.ParameterSource.DEFAULT)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


def _documents(stream: TextIO) -> Iterator[tuple[int, str]]:
    """One JSON document (possibly pretty-printed) or JSON Lines, as (line number, text)."""
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        return
    if "\n" in stripped and stripped.startswith("{") and stripped.endswith("}"):
        import json

        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            yield 1, stripped
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


@main.command()
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@click.pass_obj
@friendly_errors
def send(settings: Settings, source: TextIO) -> None:
    """Execute commands: one JSON command, or JSON Lines (one per line).

    Reads SOURCE (a file, or - for standard input) and prints one JSON result per
    command; a refusal also names its input `line`. Exit status: 0 all accepted, 1 any
    refused, 2 unusable input (a line that is not JSON or not a valid command) or the
    store unavailable (one `Error:` line names the line it stopped at; the results
    printed before it are stored, and sending the same commands again is safe).

    \b
    Example:
      echo '{"command": "expire_campaign", "command_id": "exp-1111",
             "actor": {"id": "ops-1", "role": "operator"},
             "payload": {"campaign_id": "1111-mega-live"}}' | ledger send -
    """
    try:
        ledger = settings.ledger()
    except StoreUnavailable as e:
        raise StoreUnavailable(f"{e}; no command was run, sending them again is safe") from None
    worst = 0
    for done, (line, document) in enumerate(_documents(source)):
        try:
            result = ledger.send(document)
        except StoreUnavailable as e:
            # Say where the input stopped: the results printed so far are stored; this
            # line and those after it may not be (resending them all is safe).
            if not done:
                raise
            raise StoreUnavailable(f"{e} (stopped at line {line}: the {done} result"
                                   f"{'s' if done > 1 else ''} printed before it stand; "
                                   f"send from line {line} again)") from None
        if not result["ok"]:
            result = {**result, "line": line}
        click.echo(dumps(result))
        if not result["ok"]:
            unusable = result["error"]["code"] in ("invalid_json", "validation_error")
            worst = max(worst, 2 if unusable else 1)
    sys.exit(worst)


@main.group()
def show() -> None:
    """Show the current state of a campaign or a registration, as JSON."""


@show.command("campaign")
@click.argument("campaign_id")
@click.pass_obj
@friendly_errors
def show_campaign(settings: Settings, campaign_id: str) -> None:
    """Show a campaign: status (from the clock), windows, requirements, levels, version.

    Example: ledger show campaign 1111-mega-live
    """
    ledger = settings.ledger()
    campaign = ledger.campaign(campaign_id)
    count = len(ledger.app.store.registrations_of(campaign_id))
    click.echo(dumps(campaign_state(campaign, ledger.clock.now(), count), indent=2))


@show.command("registration")
@click.argument("registration_id")
@click.pass_obj
@friendly_errors
def show_registration(settings: Settings, registration_id: str) -> None:
    """Show a registration: status, sessions, eligibility, decisions, version.

    Example: ledger show registration 1b4e28ba-2fa1-51d2-883f-0016d3cca427
    """
    click.echo(dumps(registration_state(settings.ledger().registration(registration_id)),
                     indent=2))


@main.command()
@click.argument("aggregate_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
@click.pass_obj
@friendly_errors
def events(settings: Settings, aggregate_id: str, as_json: bool) -> None:
    """List the stored events of a campaign (by its id) or registration (by its UUID).

    In order, with version, recorded time, type, actor and command_id.

    Example: ledger events 1111-mega-live --json
    """
    for event in settings.ledger().events_of(aggregate_id):
        record = event_record(event)
        if as_json:
            click.echo(dumps(record))
        else:
            actor = f"{record['actor']['role']}:{record['actor']['id']}"
            click.echo(f"v{record['version']:<4} {record['recorded_at']}  {record['type']:<20} "
                       f"{actor:<24} {record['command_id']}")


@main.command()
@click.option("--reset", is_flag=True,
              help="If the store (--db) holds events, delete them first: its SQLite file, "
                   "or the ledger's own tables in the PostgreSQL schema.")
@click.pass_obj
@friendly_errors
def demo(settings: Settings, reset: bool) -> None:
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

    url = settings.db if settings.db_given else DEMO_URL
    run_demo(url, reset=reset, own=not settings.db_given, echo=click.echo)


# The read-model commands register themselves on `main`.
from ledger import cli_audit, cli_read, cli_serve  # noqa: E402, F401

