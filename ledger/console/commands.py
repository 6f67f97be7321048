"""`ledger send`, `ledger show campaign|registration` and `ledger events`: the write side's
commands and the state replayed from events."""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

import click

from ledger.console.options import Settings, friendly_errors, json_option
from ledger.console.streams import Document, OutputFailed, documents, reader_gone
from ledger.errors import InvalidJson, StoreUnavailable
from ledger.ledger import Ledger, refused


@click.command()
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


@click.group()
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
    settings.printer.document(settings.ledger().campaign_state(campaign_id))


@show.command("registration")
@click.argument("registration_id")
@json_option("Accepted for uniformity: the state is always one JSON document.")
@click.pass_obj
@friendly_errors
def show_registration(settings: Settings, registration_id: str, as_json: bool) -> None:
    """Show a registration: status, sessions, eligibility, decisions, version.

    Example: ledger show registration 1b4e28ba-2fa1-51d2-883f-0016d3cca427
    """
    settings.printer.document(settings.ledger().registration_state(registration_id))


@click.command()
@click.argument("aggregate_id")
@json_option("JSON Lines: one object per event, with its data.")
@click.pass_obj
@friendly_errors
def events(settings: Settings, aggregate_id: str, as_json: bool) -> None:
    """List the stored events of a campaign (by its id) or registration (by its UUID).

    In order, with version, recorded time, type, actor and command_id.

    Example: ledger events 1111-mega-live --json
    """
    for event in settings.ledger().event_records(aggregate_id):
        record = settings.printer.json(event)
        if as_json:
            settings.printer.lines([record])
        else:
            actor = f"{record['actor']['role']}:{record['actor']['id']}"
            click.echo(f"v{record['version']:<4} {record['recorded_at']}  {record['type']:<20} "
                       f"{actor:<24} {record['command_id']}")
