"""Service tokens: a bearer token names an actor; only the token's SHA-256 is stored.

`ledger tokens add --role reviewer --id alice` makes one (`issue`); the service looks the
actor up from the token a request carries (`find`); `ledger tokens list` and `ledger tokens
revoke` show and delete them (`listed`, `revoke`), by their id: the first `ID_LENGTH` hex
digits of the hash. The tables are created with the other ledger tables
(`LedgerRows.ledger_create_statements`).

A token may be limited to some markets (`tokens add --market th,vn`): one row per market
in `ledger_token_markets`; a token without rows there is good in every market. (A table of
its own rather than a column, so that stores made before markets need no migration.)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

PREFIX = "lgr_"  # makes a leaked token easy to recognise (and to grep for in logs)
ID_LENGTH = 12  # hex digits of a token's SHA-256 that name it in `tokens list` / `revoke`


@dataclass(frozen=True)
class TokenActor:
    """Who a token speaks for: DOMAIN.md's actor `{"id", "role"}`."""

    id: str
    role: str
    markets: tuple[str, ...] | None = None  # the markets it is good in; None: every one

    def as_actor(self) -> dict[str, str]:
        return {"id": self.id, "role": self.role}

    def allows(self, market: str | None) -> bool:
        """Whether the token may be used on `market` (None: a single-store deployment)."""
        return market is None or self.markets is None or market in self.markets


@dataclass(frozen=True)
class TokenRow:
    """A stored token, as `ledger tokens list` shows it (never the token itself)."""

    id: str
    actor: TokenActor
    created_at: str

    def as_dict(self) -> dict[str, Any]:
        """The row as `tokens list --json` prints it (`markets` null: every market)."""
        markets = self.actor.markets
        return {"id": self.id, "actor_id": self.actor.id, "role": self.actor.role,
                "markets": None if markets is None else list(markets),
                "created_at": self.created_at}


class _Store(Protocol):
    p: str
    t: str

    def writing(self) -> Any: ...
    def db_time(self, moment: datetime) -> Any: ...
    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]: ...


def create_statements(t: str, time_type: str) -> list[str]:
    """The tokens table, in the dialect of a recorder (`t` is its table prefix)."""
    return [
        f"CREATE TABLE IF NOT EXISTS {t}ledger_tokens (token_sha256 TEXT PRIMARY KEY, "
        f"actor_id TEXT NOT NULL, role TEXT NOT NULL, created_at {time_type} NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t}ledger_token_markets (token_sha256 TEXT NOT NULL, "
        "market TEXT NOT NULL, PRIMARY KEY (token_sha256, market))",
    ]


def digest(token: str) -> str:
    """A token's SHA-256 digest (hex): what the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(token: str) -> str:
    """The id that names a token in `tokens list` and `tokens revoke`."""
    return digest(token)[:ID_LENGTH]


def issue(store: _Store, actor: TokenActor, at: datetime) -> str:
    """Store a new token for `actor` (its hash only) and return the token itself."""
    token = PREFIX + secrets.token_urlsafe(32)
    p = store.p
    with store.writing() as curs:  # the token and its markets in one transaction
        curs.execute(f"INSERT INTO {store.t}ledger_tokens VALUES ({p},{p},{p},{p})",
                     (digest(token), actor.id, actor.role, store.db_time(at)))
        for market in actor.markets or ():
            curs.execute(f"INSERT INTO {store.t}ledger_token_markets VALUES ({p},{p})",
                         (digest(token), market))
    return token


def find(store: _Store, token: str) -> TokenActor | None:
    """The actor a token speaks for, or None when no such token was issued."""
    rows = store._query(
        f"SELECT actor_id, role FROM {store.t}ledger_tokens WHERE token_sha256={store.p}",
        (digest(token),))
    if not rows:
        return None
    markets = store._query(f"SELECT market FROM {store.t}ledger_token_markets "
                           f"WHERE token_sha256={store.p} ORDER BY market", (digest(token),))
    return TokenActor(rows[0]["actor_id"], rows[0]["role"],
                      tuple(r["market"] for r in markets) or None)


def _markets_of(store: _Store) -> dict[str, tuple[str, ...]]:
    """Each limited token's markets, by the token's hash."""
    found: dict[str, list[str]] = {}
    rows = store._query(f"SELECT token_sha256, market FROM {store.t}ledger_token_markets "
                        "ORDER BY market", ())
    for row in rows:
        found.setdefault(row["token_sha256"], []).append(row["market"])
    return {h: tuple(m) for h, m in found.items()}


def listed(store: _Store, actor_id: str | None = None) -> list[TokenRow]:
    """Every stored token (or an actor's), oldest first."""
    where, params = (f" WHERE actor_id={store.p}", (actor_id,)) if actor_id else ("", ())
    rows = store._query(f"SELECT token_sha256, actor_id, role, created_at FROM "
                        f"{store.t}ledger_tokens{where} ORDER BY created_at, token_sha256",
                        params)
    markets = _markets_of(store)
    return [TokenRow(r["token_sha256"][:ID_LENGTH], TokenActor(
        r["actor_id"], r["role"], markets.get(r["token_sha256"])), _iso(r["created_at"]))
        for r in rows]


def revoke(store: _Store, ids: list[str]) -> int:
    """Delete the tokens with these ids (from `listed`); how many were deleted."""
    bad = [i for i in ids if len(i) != ID_LENGTH or not set(i) <= set("0123456789abcdef")]
    if bad:
        raise ValueError(f"not token ids: {bad}")
    p = store.p
    deleted = 0
    with store.writing() as curs:
        for wanted in ids:
            match = f"FROM {store.t}ledger_tokens WHERE token_sha256 LIKE {p}"
            curs.execute(f"SELECT COUNT(*) AS n {match}", (wanted + "%",))
            deleted += int(curs.fetchone()["n"])
            curs.execute(f"DELETE {match}", (wanted + "%",))
            curs.execute(f"DELETE FROM {store.t}ledger_token_markets WHERE token_sha256 "
                         f"LIKE {p}", (wanted + "%",))
    return deleted


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
