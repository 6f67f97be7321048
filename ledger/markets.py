"""Markets: one ledger across many stores, named in a TOML file (DOMAIN.md "Markets").

```toml
tokens_url = "postgresql://ledger@db-tokens:5432/ledger"  # where service tokens live
[markets.th]
url = "postgresql://ledger@db-th:5432/ledger"        # events
read_url = "postgresql://ledger@db-th-ro:5432/rm"    # optional: read models elsewhere
[markets.vn]
url = "postgresql://ledger@db-vn:5432/ledger"
```

`load(path)` reads it with the standard library's `tomllib` and checks it whole: a file
that is missing or not TOML, an unknown key, a code that is not a short lowercase name, a
market without `url`, or a URL the store cannot take is one line (`ConfigError`), before
anything connects anywhere. `Markets.market(code)` picks one, naming the known ones when
the code is not among them.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.errors import StoreUnavailable
from ledger.store.urls import parse_url

CONFIG_ENV = "LEDGER_CONFIG"
MARKET_ENV = "LEDGER_MARKET"
CODE = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # a path segment: /v1/markets/{code}/...
MARKET_KEYS = frozenset({"url", "read_url"})
TOP_KEYS = frozenset({"markets", "tokens_url"})


class ConfigError(Exception):
    """The markets file cannot be used as written (the message says where and why)."""


@dataclass(frozen=True)
class Market:
    """One market: where its events are, and where its read models are kept."""

    code: str
    url: str
    read_url: str | None = None

    @property
    def reads_url(self) -> str:
        """The database of the market's read models (its event store unless `read_url`)."""
        return self.read_url or self.url


@dataclass(frozen=True)
class Markets:
    """Every market of a deployment, in the file's order, and where tokens are kept."""

    path: str
    markets: dict[str, Market]
    tokens_url: str | None = None

    @property
    def codes(self) -> list[str]:
        return list(self.markets)

    def market(self, code: str) -> Market:
        """The market `code`; a ConfigError listing the known codes if there is none."""
        found = self.markets.get(code.strip().lower())
        if found is None:
            raise ConfigError(f"unknown market {code!r} in {self.path}; known: "
                              f"{', '.join(self.codes)}")
        return found

    def chosen(self, codes: str | None) -> list[Market]:
        """The markets a comma-separated list names (`th,vn`); all of them when None."""
        if codes is None:
            return list(self.markets.values())
        wanted = [c.strip() for c in codes.split(",") if c.strip()]
        if not wanted:
            raise ConfigError(f"name at least one market; known: {', '.join(self.codes)}")
        return [self.market(c) for c in dict.fromkeys(wanted)]

    def token_store(self) -> str:
        """Where the service's tokens are kept: `tokens_url`, or the one market's store.

        With several markets there is no good default (any market's store would make every
        market's requests depend on that one server), so the file must say."""
        if self.tokens_url:
            return self.tokens_url
        if len(self.markets) == 1:
            return next(iter(self.markets.values())).url
        raise ConfigError(f"{self.path} names {len(self.markets)} markets but no tokens_url: "
                          "add tokens_url = \"postgresql://...\" at the top (the one database "
                          "every server reads tokens from)")


def load(path: str) -> Markets:
    """Read and check the markets file at `path` (see the module's docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no markets file {path} (--config / {CONFIG_ENV})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read markets file {path}: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return parse(path, data)


def parse(path: str, data: dict[str, Any]) -> Markets:
    """Check a markets file's TOML document; the `Markets` it names."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (allowed at the top: "
                          f"{', '.join(sorted(TOP_KEYS))})")
    table = data.get("markets")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path} names no markets: add a [markets.CODE] table with url = ...")
    markets = {code: _market(path, code, entry) for code, entry in table.items()}
    _distinct(path, markets)
    tokens_url = data.get("tokens_url")
    if tokens_url is not None:
        tokens_url = _url(path, "tokens_url", tokens_url)
    return Markets(path, markets, tokens_url)


def _market(path: str, code: str, entry: Any) -> Market:
    where = f"{path}: [markets.{code}]"
    if not CODE.fullmatch(code):
        raise ConfigError(f"{path}: market code {code!r} is not a lowercase name (a letter, "
                          "then letters, digits, - or _; at most 32), e.g. th")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table with url = ...")
    unknown = sorted(set(entry) - MARKET_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: url, read_url)")
    if "url" not in entry:
        raise ConfigError(f"{where} has no url: the database of its events")
    read_url = entry.get("read_url")
    return Market(code, _url(where, "url", entry["url"]),
                  None if read_url is None else _url(where, "read_url", read_url))


def _distinct(path: str, markets: dict[str, Market]) -> None:
    """Two markets in one database (or schema) would mix their events, or their read
    models' tables and positions (the names are the same in every market): refused."""
    seen: dict[str, str] = {}
    for market in markets.values():
        places = {_place(market.url): "url"}
        places.setdefault(_place(market.reads_url), "read_url")
        for place, key in places.items():
            if place in seen:
                raise ConfigError(f"{path}: [markets.{market.code}] {key} is the database "
                                  f"(and schema) of {seen[place]}: give each market its own "
                                  "database, or its own ?schema=")
            seen[place] = f"[markets.{market.code}] {key}"


def _place(url: str) -> str:
    """Where a URL's tables are: the backend, host, port, database and schema."""
    store = parse_url(url)
    if store.backend == "sqlite":
        return f"sqlite:{Path(store.path).resolve()}"
    return f"postgres:{store.host}:{store.port}/{store.dbname}?{store.schema or 'public'}"


def _url(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a database URL in quotes")
    try:
        parse_url(value)
    except StoreUnavailable as e:
        raise ConfigError(f"{where}: {key}: {e}") from None
    return value.strip()
