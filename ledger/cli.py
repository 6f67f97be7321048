"""The `ledger` command: parse arguments, call the Ledger, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any, BinaryIO, TypeVar

import click

from ledger.cli_input import Document, documents
from ledger.cli_output import OutputFailed, checked_stdout, discard_stdout, reader_gone
from ledger.cli_print import TZ_HELP, Printer, json_option, parse_zone
from ledger.clock import Clock, FixedClock, SystemClock, parse_instant
from ledger.errors import InvalidJson, LedgerError, StoreUnavailable, first_line
from ledger.ledger import Ledger, refused
from ledger.shapes import campaign_state, event_record, registration_state
from ledger.store.faults import classify
from ledger.store.urls import DEFAULT_URL

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """Global options, resolved lazily so `--help` never touches the store."""

    def __init__(self, db: str, now: datetime | None, db_given: bool = True,
                 zone: tzinfo | None = None) -> None:
        self.db = db
        self.db_given = db_given  # --db or LEDGER_DATABASE_URL, not the default
        self.now = now
        self.printer = Printer(zone)  # --tz: how every command prints an instant
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
    """Turn our errors into one `Error: ...` line and an exit code, never a traceback.

    Standard output is checked while the command runs (`checked_stdout`): a failed write
    is `cannot write ...`, never mistaken for the store's fault, and exits 2.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with checked_stdout():
                return func(*args, **kwargs)
        except OutputFailed as e:
            discard_stdout()
            _say(f"Error: {e.message()}")
            sys.exit(2)
        except LedgerError as e:
            raise click.ClickException(f"{e.code}: {e.message}") from None
        except StoreUnavailable as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
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


def _say(message: str) -> None:
    """One line on stderr, if stderr can still take it (it may be gone too)."""
    with contextlib.suppress(OSError):
        click.echo(message, err=True)


def parse_time_option(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(value)
    except ValueError as e:
        raise click.BadParameter(f"validation_error: {e}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", envvar="LEDGER_DATABASE_URL", default=DEFAULT_URL, show_default=True,
              help="Event store: sqlite:///FILE or postgresql://USER@HOST:PORT/DB "
                   "(env LEDGER_DATABASE_URL).")
@click.option("--now", envvar="LEDGER_NOW", callback=parse_time_option,
              help="Run as if it were this ISO-8601 time, e.g. 2026-11-11T20:00:00+07:00 "
                   "(env LEDGER_NOW). Default: the system clock.")
@click.option("--tz", envvar="LEDGER_TZ", callback=parse_zone, metavar="ZONE", help=TZ_HELP)
@click.version_option(package_name="ledger")
@click.pass_context
def main(ctx: click.Context, db: str, now: datetime | None, tz: tzinfo | None) -> None:
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
    """
    source = ctx.get_parameter_source("db")
    settings = Settings(db, now, db_given=source is not click.core.ParameterSource.DEFAULT,
                        zone=tz)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


@main.command()
@click.argument("source", type=click.File("rb"), default="-")
@json_option("Accepted for uniformity: the results are always JSON Lines.")
@click.pass_obj
@friendly_errors
def send(settings: Settings, source: BinaryIO, as_json: bool) -> None:
    """Execute commands: JSON Lines (one per line), or pretty-printed JSON commands.

    Reads SOURCE (a file, or - for standard input) a line at a time and prints one JSON
    result per command as soon as it is known, so a program can write a command, read
    its result, then write the next. A refusal also names its input `line`. Exit status:
    0 all accepted, 1 any refused, 2 unusable input (a line that is not JSON, not UTF-8
    or not a valid command), the store unavailable, or the results cannot be written
    (one `Error:` line names the input line it stopped at; sending the same input again
    is safe: what was stored comes back as replays).

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
    for done, document in enumerate(documents(source)):
        if reader_gone(sys.stdout):  # `| head` has read enough: run nothing more
            raise OutputFailed("its reader closed the pipe", "the results",
                               _not_run(document.line, done))
        result = _run(ledger, document, done)
        try:
            settings.printer.lines([result])
        except OutputFailed as e:
            raise e.stopped("the results", _not_printed(document.line)) from None
        if not result["ok"]:
            unusable = result["error"]["code"] in ("invalid_json", "validation_error")
            worst = max(worst, 2 if unusable else 1)
    sys.exit(worst)


def _run(ledger: Ledger, document: Document, done: int) -> dict[str, Any]:
    """The command's result, its input line named if it was refused."""
    try:
        if document.unreadable is not None:
            result = refused(None, InvalidJson(document.unreadable))
        else:
            result = ledger.send(document.text)
    except StoreUnavailable as e:
        # Say where the input stopped: the results printed so far are stored; this
        # line and those after it may not be (resending them all is safe).
        if not done:
            raise
        line = document.line
        raise StoreUnavailable(f"{e} (stopped at line {line}: the {done} result"
                               f"{'s' if done > 1 else ''} printed before it stand; "
                               f"send from line {line} again)") from None
    return result if result["ok"] else {**result, "line": document.line}


def _not_printed(line: int) -> str:
    return (f"stopped at input line {line}: it and the lines before it were run and what "
            f"they wrote is stored, but its result was not printed; no later line was run "
            "(sending the same input again is safe: stored commands come back as replays)")


def _not_run(line: int, done: int) -> str:
    return (f"stopped before input line {line}: {done} command"
            f"{'s were' if done != 1 else ' was'} run and the results written; nothing from "
            f"line {line} on was run")


@main.group()
def show() -> None:
    """Show the current state of a campaign or a registration: one JSON document."""


@show.command("campaign")
@click.argument("campaign_id")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def show_campaign(settings: Settings, campaign_id: str, as_json: bool) -> None:
    """Show a campaign: status (from the clock), windows, requirements, levels, version.

    Example: ledger show campaign 1111-mega-live
    """
    ledger = settings.ledger()
    campaign = ledger.campaign(campaign_id)
    count = len(ledger.app.store.registrations_of(campaign_id))
    settings.printer.document(campaign_state(campaign, ledger.clock.now(), count))


@show.command("registration")
@click.argument("registration_id")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def show_registration(settings: Settings, registration_id: str, as_json: bool) -> None:
    """Show a registration: status, sessions, eligibility, decisions, version.

    Example: ledger show registration 1b4e28ba-2fa1-51d2-883f-0016d3cca427
    """
    registration = settings.ledger().registration(registration_id)
    settings.printer.document(registration_state(registration))


@main.command()
@click.argument("aggregate_id")
@json_option("JSON Lines: one object per event, with its data.")
@click.pass_obj
@friendly_errors
def events(settings: Settings, aggregate_id: str, as_json: bool) -> None:
    """List the stored events of a campaign (by its id) or registration (by its UUID).

    In order, with version, recorded time, type, actor and command_id.

    Example: ledger events 1111-mega-live --json
    """
    for event in settings.ledger().events_of(aggregate_id):
        record = settings.printer.json(event_record(event))
        if as_json:
            settings.printer.lines([record])
        else:
            actor = f"{record['actor']['role']}:{record['actor']['id']}"
            click.echo(f"v{record['version']:<4} {record['recorded_at']}  {record['type']:<20} "
                       f"{actor:<24} {record['command_id']}")


@main.command()
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

    url = settings.db if settings.db_given else DEMO_URL
    summary = run_demo(url, reset=reset, own=not settings.db_given,
                       echo=functools.partial(click.echo, err=as_json))
    if as_json:
        settings.printer.document(summary)


# The read-model commands register themselves on `main`.
from ledger import cli_audit, cli_read, cli_serve  # noqa: E402, F401

