"""`ledger serve`: the HTTP service, its limits and its read-model follower."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ledger.console.options import Settings, friendly_errors
from ledger.errors import StoreUnavailable
from ledger.service.protocol import ENV as LIMITS_ENV
from ledger.service.protocol import LimitedProtocol, Limits
from ledger.service.worker_env import (
    CONFIG_ENV,
    FOLLOW_ENV,
    GROUP_MAX,
    GROUP_MAX_ENV,
    GROUP_WAIT_ENV,
    GROUP_WAIT_MS,
    MARKET_ENV,
    METRICS_TOKEN_ENV,
    READ_URL_ENV,
    READY_ENV,
    READY_MAX_LAG,
    TOKENS_URL_ENV,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's: where workers keep values


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes, each with its own pool on the store.")
@click.option("--timeout-keep-alive", type=click.IntRange(1, 3600),
              default=Limits.keep_alive, show_default=True,
              help="Seconds an idle connection is kept open, before and between requests.")
@click.option("--header-timeout", type=click.FloatRange(0.1, 3600),
              default=Limits.header, show_default=True,
              help="Seconds a client has to send a request's headers (from its first byte).")
@click.option("--body-timeout", type=click.FloatRange(0.1, 3600),
              default=Limits.body, show_default=True,
              help="Seconds a client has to send a request's body once its headers are in: "
                   "else 408 and the connection is closed.")
@click.option("--limit-concurrency", type=click.IntRange(1, 100_000),
              default=Limits.concurrency, show_default=True,
              help="Requests each worker handles at once; more are answered 503 "
                   "(code overloaded, Retry-After).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep the read models current from this server (one follower per store "
                   "among all servers and workers). --no-follow: `ledger projections run` "
                   "does it elsewhere.")
@click.option("--ready-max-lag", type=click.IntRange(0, None), default=READY_MAX_LAG,
              show_default=True,
              help="/readyz answers 503 while a read model is more than this many events "
                   "behind the store.")
@click.option("--group-wait-ms", type=click.FloatRange(0, 1000), default=GROUP_WAIT_MS,
              show_default=True,
              help="Milliseconds a single command (POST /v1/commands) waits for others "
                   "arriving at the same worker, to share one transaction with them; "
                   "0: each request is its own transaction.")
@click.option("--group-max", type=click.IntRange(0, 1000), default=GROUP_MAX,
              show_default=True,
              help="Commands in one transaction at most: coalesced requests, and the groups "
                   "a batch is committed in; 0 turns coalescing off (batches then go in "
                   f"groups of {GROUP_MAX}).")
@click.option("--metrics-token", envvar=METRICS_TOKEN_ENV, default=None, metavar="SECRET",
              help="/metrics asks for `Authorization: Bearer SECRET` and answers any "
                   "address (env LEDGER_METRICS_TOKEN, better than the command line). "
                   "Without it /metrics answers loopback clients only.")
@click.pass_obj
@friendly_errors
def serve(settings: Settings, host: str, port: int, workers: int, timeout_keep_alive: int,
          header_timeout: float, body_timeout: float, limit_concurrency: int, follow: bool,
          ready_max_lag: int, group_wait_ms: float, group_max: int,
          metrics_token: str | None) -> None:
    """Serve the command API over HTTP (FastAPI on uvicorn) until interrupted.

    POST /v1/commands (one command) and /v1/commands:batch (up to 500); GET reads
    under /v1; /healthz, /readyz; OpenAPI at /openapi.json, docs at /docs. Every request
    carries `Authorization: Bearer TOKEN` (see `ledger tokens add`): the command's actor is
    the token's. One JSON access-log line per request on stderr. Runs on the system
    clock: --now / LEDGER_NOW is refused.

    \b
    Dashboard: open http://HOST:PORT/dashboard in a browser and sign in with a token; it
    shows the campaign, seller-year and review-queue figures the token may read, and
    follows new commands within a second (no internet needed: its files are in the package).

    \b
    Limits (per worker): a connection idle for --timeout-keep-alive seconds is closed; a
    request whose headers or body do not arrive within --header-timeout / --body-timeout
    is answered 408 and its connection closed; past --limit-concurrency requests at once,
    503.

    \b
    Group commit: single commands that arrive at a worker within --group-wait-ms of each
    other (up to --group-max) are decided together and committed in one transaction; each
    request still gets its own result, exactly as if it had come alone (the response's
    X-Ledger-Group-Size header says how many shared it). A store fault answers 503 to
    that group's requests only; sending them again is safe. A batch is committed in
    groups of --group-max. --group-wait-ms 0 (or --group-max 0): one transaction per
    request.

    \b
    Metrics: GET /metrics in Prometheus' text format (commands by name and outcome,
    latency, group sizes, store faults, connections, each read model's lag), summed over
    every worker. Open to loopback clients, or to anyone sending --metrics-token.

    \b
    Read models: the server keeps them current itself. Every worker of every server on the
    store offers to follow it; one of them, elected by a lock the database (PostgreSQL) or
    the kernel (SQLite) gives back when its holder dies, follows, and another takes over
    within seconds if it dies. --no-follow leaves that to `ledger projections run`.
    /readyz is 503 while a read model is more than --ready-max-lag events behind.

    \b
    \b
    Markets: with --config FILE (and no --market) one server serves every market of the
    file under /v1/markets/CODE/... (the same paths as /v1/...): each market's store and
    read database are opened on first use, and followed by one worker among all servers.
    A market whose store is down answers 503 store_unavailable; the others carry on.
    /readyz lists every market; /v1/markets/CODE/readyz is one market's. With --market
    CODE it serves that one market on /v1/..., as for a single store.

    \b
    Example:
      ledger --db postgresql://postgres@127.0.0.1:5432/ledger serve --port 8080 --workers 4
      ledger --config markets.toml serve --workers 4       # every market of the file
      ledger serve --no-follow --ready-max-lag 5000   # `ledger projections run` elsewhere
      ledger serve --group-wait-ms 5 --group-max 500  # a longer wait, bigger groups
      ledger serve --timeout-keep-alive 5 --header-timeout 10 --body-timeout 30 \\
                   --limit-concurrency 200
      curl -H "Authorization: Bearer $TOKEN" -d @command.json localhost:8080/v1/commands
    """
    if settings.now is not None:
        raise click.UsageError("--now / LEDGER_NOW cannot be used with serve: the service "
                               "records real time (unset LEDGER_NOW)")
    import uvicorn

    check_port_free(host, port)
    if settings.serves_markets():
        url = every_market(settings)
    else:
        url = settings.ledger().url  # fail fast, in one line, if unreachable; creates tables
        market = settings.market()
        os.environ.pop(CONFIG_ENV, None)
        # read by each worker's from_env()
        os.environ["LEDGER_DATABASE_URL"] = market.url if market else settings.db
        os.environ[READ_URL_ENV] = (market.read_url or "") if market else ""
        os.environ[MARKET_ENV] = market.code if market else ""
        os.environ[TOKENS_URL_ENV] = settings.markets().token_store() if market else ""
        if market:
            settings.token_ledger()  # where its tokens are: unreachable is one line, exit 2
    settings.close()
    os.environ[FOLLOW_ENV] = "1" if follow else "0"
    os.environ[READY_ENV] = str(ready_max_lag)
    os.environ[GROUP_WAIT_ENV] = str(group_wait_ms)
    os.environ[GROUP_MAX_ENV] = str(group_max)
    os.environ[LIMITS_ENV] = Limits(timeout_keep_alive, header_timeout, body_timeout,
                                    limit_concurrency).to_env()  # and by its protocol
    if metrics_token:
        os.environ[METRICS_TOKEN_ENV] = metrics_token
    made = metrics_folder(workers)
    click.echo(f"serving {url} on http://{host}:{port} "
               f"with {workers} worker{'s' if workers > 1 else ''} (Ctrl-C to stop)", err=True)
    try:
        uvicorn.run("ledger.service.app:from_env", factory=True, host=host, port=port,
                    workers=workers, access_log=False, log_level="warning",
                    http=LimitedProtocol)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def metrics_folder(workers: int) -> Path | None:
    """Where the workers keep their metrics: PROMETHEUS_MULTIPROC_DIR if set (its value
    files from an earlier run deleted: counters start at zero with the server), else with
    several workers a new temporary folder, returned to be removed at exit. One worker
    without it keeps its values in memory."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):
            old.unlink()
        return None
    if workers == 1:
        return None
    made = Path(tempfile.mkdtemp(prefix="ledger-metrics-"))
    os.environ[MULTIPROC_ENV] = str(made)  # read by each worker when it imports the client
    return made


def every_market(settings: Settings) -> str:
    """Check the markets file and the tokens' store, say which markets answer now (one
    that does not will answer 503 until it does; it does not stop the others), and hand
    the file to the workers. What to print after "serving"."""
    config = settings.markets()
    config.token_store()  # a file of several markets must say where tokens are
    settings.token_ledger()  # unreachable: one line, exit 2 (no request could be served)
    for code in config.codes:
        market = settings.for_market(code)
        try:
            market.ledger()  # creates its tables, and its read models' on read_url
        except StoreUnavailable as e:
            click.echo(f"warning: market {code}: {e} (its requests get 503 until it answers)",
                       err=True)
        finally:
            market.close()
    os.environ[CONFIG_ENV] = str(Path(config.path).resolve())
    return f"markets {', '.join(config.codes)} of {config.path} (under /v1/markets/CODE/)"


def check_port_free(host: str, port: int) -> None:
    """Bind the address once, as uvicorn will, so a busy port is one line (exit 2) before
    "serving on ...", not uvicorn's log after it."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind((host, port))
    except OSError as e:
        reason = "is in use (another server?)" if e.errno == errno.EADDRINUSE else (
            f"cannot be listened on: {e.strerror or e}")
        click.echo(f"Error: {host}:{port} {reason}; choose another with --host/--port",
                   err=True)
        sys.exit(2)
