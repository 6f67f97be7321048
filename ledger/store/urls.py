"""Database URLs (`sqlite:///path`, `postgresql://user@host:port/db?...`) to library settings.

A PostgreSQL URL goes to psycopg whole (host lists, `sslmode`, `options`, `passfile`,
`connect_timeout`, `application_name`, ...: everything libpq knows); only the ledger's own
`schema` parameter is taken out of it first, since libpq would refuse it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledger.errors import StoreUnavailable, first_line

DEFAULT_URL = "sqlite:///ledger.db"


@dataclass(frozen=True)
class StoreUrl:
    """A store's URL, parsed: the backend and where it is."""
    backend: str  # "sqlite" | "postgres"
    path: str = ""  # sqlite file
    host: str = ""  # the first of a host list, for messages
    port: str = "5432"
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = ""
    dsn: str = ""  # PostgreSQL: the URL as libpq takes it, without `schema`

    @property
    def display(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        schema = f"?schema={self.schema}" if self.schema else ""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}{schema}"

    def conninfo(self) -> str:
        """Every connection parameter of the URL (the password too), for psycopg."""
        return self.dsn


def parse_url(url: str) -> StoreUrl:
    """Read a database URL; a malformed one is a one-line StoreUnavailable."""
    parts = urlsplit(url.strip())
    if parts.scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute/path.db, as in SQLAlchemy.
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if parts.netloc or not path:
            raise StoreUnavailable(f"bad SQLite URL {url!r}: use sqlite:///path/to/file.db")
        return StoreUrl("sqlite", path=path)
    if parts.scheme in ("postgresql", "postgres"):
        return _postgres(url, parts._replace(scheme="postgresql"))
    raise StoreUnavailable(
        f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://USER@HOST:PORT/DB"
    )


def _postgres(url: str, parts: SplitResult) -> StoreUrl:
    # The rest of the query goes to libpq as written (its own percent-decoding).
    pairs = [pair for pair in parts.query.split("&") if pair]
    ours = [pair for pair in pairs if pair.split("=", 1)[0] == "schema"]
    schema = unquote(ours[-1].split("=", 1)[-1]) if ours else ""
    rest = "&".join(pair for pair in pairs if pair not in ours)
    dsn = f"postgresql://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as e:
        raise StoreUnavailable(f"bad PostgreSQL URL {url!r}: {first_line(e)}") from None
    if not params.get("dbname"):
        raise StoreUnavailable(f"bad PostgreSQL URL {url!r}: name the database after the /")
    # As before the URL was handed over whole: no host means 127.0.0.1 (not libpq's
    # socket), no user means $USER (or postgres), unless libpq's own variables say.
    if not params.get("host") and not params.get("hostaddr") and "PGHOST" not in os.environ:
        params["host"] = "127.0.0.1"
    if not params.get("user") and "PGUSER" not in os.environ:
        params["user"] = os.environ.get("USER", "postgres")
    return StoreUrl(
        "postgres",
        host=str(params.get("host") or params.get("hostaddr") or "").split(",")[0],
        port=str(params.get("port") or "5432").split(",")[0],
        user=str(params.get("user") or ""),
        password=str(params.get("password") or ""),
        dbname=str(params["dbname"]),
        schema=schema,
        dsn=make_conninfo(**{k: str(v) for k, v in params.items()}),
    )


def check_reachable(store: StoreUrl, timeout: float = 5.0) -> None:
    """Fail fast with one line naming the host, instead of the library's long retries."""
    if store.backend == "sqlite":
        folder = Path(store.path).resolve().parent
        if not folder.is_dir():
            raise StoreUnavailable(
                f"store unavailable: cannot open SQLite file {store.path}: no folder {folder}")
        return
    # The URL's own connect_timeout wins; else ours, so a dead host fails in seconds.
    dsn = store.dsn
    if "connect_timeout" not in conninfo_to_dict(dsn):
        dsn = make_conninfo(dsn, connect_timeout=max(1, int(timeout)))
    try:
        with psycopg.connect(dsn):
            pass
    except psycopg.OperationalError as e:
        raise StoreUnavailable(
            f"store unavailable: cannot reach PostgreSQL at {store.host}:{store.port} "
            f"(database {store.dbname!r}): "
            f"{first_line(e)}"
        ) from None
