"""`ledger tokens add|list|revoke`: who may call `ledger serve`."""

from __future__ import annotations

import click

from ledger.clock import SystemClock
from ledger.console.options import Settings, friendly_errors, json_option
from ledger.ledger import TokenActor, token_id

ROLES = ("seller", "reviewer", "operator", "system")


@click.group("tokens")
def tokens_group() -> None:
    """Bearer tokens for `ledger serve`: each one speaks for one actor."""


@tokens_group.command("add")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The actor's role.")
@click.option("--id", "actor_id", required=True, help="The actor's id, e.g. rev-alice.")
@click.option("--market", "markets", metavar="CODES", default=None,
              help="Only in these markets of --config, e.g. th,vn (default: every market); "
                   "elsewhere the token is refused as forbidden.")
@json_option("One JSON document: token, id, role, actor_id, markets.")
@click.pass_obj
@friendly_errors
def tokens_add(settings: Settings, role: str, actor_id: str, markets: str | None,
               as_json: bool) -> None:
    """Make a token for an actor and print it once (only its SHA-256 is stored).

    A request with this token acts as this actor: the command's own `actor` is replaced.
    With --config the token is kept in the file's tokens_url, where every server reads.

    \b
    Example:
      TOKEN=$(ledger --db postgresql://postgres@127.0.0.1:5432/ledger \\
              tokens add --role reviewer --id rev-alice)
      ledger tokens add --role system --id perf-feed --json | jq -r .token
      ledger --config markets.toml tokens add --role reviewer --id rev-th --market th
    """
    from pydantic import ValidationError

    from ledger.commands.schemas import Actor

    try:
        Actor.model_validate({"id": actor_id, "role": role})
    except ValidationError as e:
        raise click.BadParameter(str(e.errors()[0]["msg"]), param_hint="--id") from None
    limited = None
    if markets is not None:
        if settings.config is None or settings.db_given:
            raise click.UsageError("--market CODES limits a token to markets of a markets "
                                   "file: give --config FILE (and no --db)")
        limited = tuple(m.code for m in settings.markets().chosen(markets))
    token = settings.token_ledger().issue_token(TokenActor(actor_id, role, limited),
                                                SystemClock().now())
    where = "every market" if limited is None else "markets " + ",".join(limited)
    if as_json:
        settings.printer.document({"token": token, "id": token_id(token), "role": role,
                                   "actor_id": actor_id,
                                   "markets": None if limited is None else list(limited)})
    else:
        click.echo(token)
    scope = f" in {where}" if settings.config and not settings.db_given else ""
    click.echo(f"a token for {role} {actor_id!r}{scope} (id {token_id(token)}): keep it now, "
               "it is not shown again", err=True)


@tokens_group.command("list")
@click.option("--id", "actor_id", default=None, help="Only this actor's tokens.")
@json_option("JSON Lines: one object per token (id, role, actor_id, markets, created_at).")
@click.pass_obj
@friendly_errors
def tokens_list(settings: Settings, actor_id: str | None, as_json: bool) -> None:
    """List the tokens: id, role, actor and when each was made (never the token itself;
    the id, the start of its SHA-256, is what `ledger tokens revoke` takes).

    \b
    Example:
      ledger tokens list --id rev-alice
    """
    rows = [r.as_dict() for r in settings.token_ledger().tokens(actor_id)]
    if as_json:
        settings.printer.lines(rows)
        return
    for row in rows:
        row["markets"] = "all" if row["markets"] is None else ",".join(row["markets"])
    settings.printer.table(rows, ["id", "role", "actor_id", "markets", "created_at"])


@tokens_group.command("revoke")
@click.argument("token_ids", nargs=-1)
@click.option("--id", "actor_id", default=None, help="Revoke every token of this actor.")
@json_option("One JSON document: revoked (how many), ids.")
@click.pass_obj
@friendly_errors
def tokens_revoke(settings: Settings, token_ids: tuple[str, ...], actor_id: str | None,
                  as_json: bool) -> None:
    """Revoke tokens by their ids (from `ledger tokens list`), or all of an actor's.

    A running `ledger serve` stops accepting a revoked token within 60 s: each worker
    trusts a token it has looked up for a minute, so that requests cost no database read.
    Nothing is revoked if any id is unknown.

    \b
    Examples:
      ledger tokens revoke 3f9a1c0b7d2e
      ledger tokens revoke --id rev-alice
    """
    if not token_ids and actor_id is None:
        raise click.UsageError("name the tokens to revoke: TOKEN_ID... (see `ledger tokens "
                               "list`), or --id ACTOR for all of an actor's")
    ledger = settings.token_ledger()
    stored = ledger.tokens()
    unknown = sorted(set(token_ids) - {r.id for r in stored})
    if unknown:
        raise click.ClickException(f"not_found: no token with id {', '.join(unknown)} (see "
                                   "`ledger tokens list`); nothing was revoked")
    chosen = set(token_ids) | {r.id for r in stored if r.actor.id == actor_id}
    if not chosen:
        raise click.ClickException(f"not_found: {actor_id!r} has no tokens; nothing was revoked")
    revoked = ledger.revoke_tokens(sorted(chosen))
    if as_json:
        settings.printer.document({"revoked": revoked, "ids": sorted(chosen)})
        return
    click.echo(f"revoked {revoked} token{'s' if revoked != 1 else ''}: {', '.join(sorted(chosen))}"
               " (running servers refuse them within 60 s)")

