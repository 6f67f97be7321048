"""Database URLs (`sqlite:///path`, `postgresql://user@host:port/db`) to library settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg

from ledger.errors import StoreUnavailable, first_line

DEFAULT_URL = "sqlite:///ledger.db"


@dataclass(frozen=True)
class StoreUrl:
    backend: str  # "sqlite" | "postgres"
    path: str = ""  # sqlite file
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    dbname: str = ""
    schema: str = ""

    @property
    def display(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        schema = f"?schema={self.schema}" if self.schema else ""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}{schema}"

    def conninfo(self) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password or None,
            dbname=self.dbname,
        )


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
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise StoreUnavailable(f"bad PostgreSQL URL {url!r}: name the database after the /")
        query = parse_qs(parts.query)
        return StoreUrl(
            "postgres",
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or os.environ.get("USER", "postgres")),
            password=unquote(parts.password or ""),
            dbname=dbname,
            schema=query.get("schema", [""])[0],
        )
    raise StoreUnavailable(
        f"unsupported database URL {url!r}: use sqlite:///FILE or postgresql://USER@HOST:PORT/DB"
    )


def check_reachable(store: StoreUrl, timeout: float = 5.0) -> None:
    """Fail fast with one line naming the host, instead of the library's long retries."""
    if store.backend == "sqlite":
        folder = Path(store.path).resolve().parent
        if not folder.is_dir():
            raise StoreUnavailable(
                f"store unavailable: cannot open SQLite file {store.path}: no folder {folder}")
        return
    try:
        with psycopg.connect(store.conninfo(), connect_timeout=max(1, int(timeout))):
            pass
    except psycopg.OperationalError as e:
        raise StoreUnavailable(
            f"store unavailable: cannot reach PostgreSQL at {store.host}:{store.port} "
            f"(database {store.dbname!r}): "
            f"{first_line(e)}"
        ) from None
