"""Service test helpers: a client on a real store with a token per role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient

from ledger import Ledger
from ledger.store import tokens
from ledger.store.tokens import TokenActor
from tests.helpers import NOW, OPERATOR, REVIEWER, SELLER, SYSTEM, Json

ACTORS: dict[str, Json] = {
    "operator": OPERATOR, "reviewer": REVIEWER, "system": SYSTEM,
    "seller": {"id": SELLER, "role": "seller"},
    "other_seller": {"id": "seller-2", "role": "seller"},
}


def issue_tokens(ledger: Ledger) -> dict[str, str]:
    """A token for each of ACTORS, by key."""
    return {key: tokens.issue(ledger.app.store, TokenActor(a["id"], a["role"]), NOW)
            for key, a in ACTORS.items()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """A TestClient and the tokens of every actor: `api.send("seller", command)`."""

    client: TestClient
    tokens: dict[str, str]

    def send(self, who: str, command: Json | list[Json]) -> Any:
        path = "/v1/commands:batch" if isinstance(command, list) else "/v1/commands"
        return self.client.post(path, json=command, headers=bearer(self.tokens[who]))

    def get(self, who: str, path: str, **params: Any) -> Any:
        return self.client.get(path, params=params or None, headers=bearer(self.tokens[who]))

    def accept(self, who: str, command: Json) -> Json:
        response = self.send(who, command)
        assert response.status_code == 200, response.text
        body: Json = response.json()
        assert body["ok"] is True
        return body
