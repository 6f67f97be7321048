"""Service tokens: a bearer token names an actor; only the token's SHA-256 is stored.

`ledger tokens add --role reviewer --id alice` makes one (`issue`); the service looks the
actor up from the token a request carries (`find`). The table is created with the other
ledger tables (`LedgerRows.ledger_create_statements`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

PREFIX = "lgr_"  # makes a leaked token easy to recognise (and to grep for in logs)


@dataclass(frozen=True)
class TokenActor:
    """Who a token speaks for: DOMAIN.md's actor `{"id", "role"}`."""

    id: str
    role: str

    def as_actor(self) -> dict[str, str]:
        return {"id": self.id, "role": self.role}


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
    ]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(store: _Store, actor: TokenActor, at: datetime) -> str:
    """Store a new token for `actor` (its hash only) and return the token itself."""
    token = PREFIX + secrets.token_urlsafe(32)
    p = store.p
    with store.writing() as curs:
        curs.execute(f"INSERT INTO {store.t}ledger_tokens VALUES ({p},{p},{p},{p})",
                     (digest(token), actor.id, actor.role, store.db_time(at)))
    return token


def find(store: _Store, token: str) -> TokenActor | None:
    """The actor a token speaks for, or None when no such token was issued."""
    rows = store._query(
        f"SELECT actor_id, role FROM {store.t}ledger_tokens WHERE token_sha256={store.p}",
        (digest(token),))
    return TokenActor(rows[0]["actor_id"], rows[0]["role"]) if rows else None
