"""`ledger tokens list` and `ledger tokens revoke`, and what a revoked token gets from the
service, on both backends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from ledger import FixedClock, Ledger
from ledger.cli import main
from ledger.service import state
from ledger.store.tokens import token_id
from tests.support.helpers import create_campaign, dump_store, json_lines
from tests.support.service import add_token, bearer, in_process


def tokens(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", url, "tokens", *args])


@pytest.fixture
def issued(backend: str) -> dict[str, str]:
    """Two tokens of one reviewer, one of the performance feed."""
    return {"alice-1": add_token(backend, "reviewer", "rev-alice"),
            "alice-2": add_token(backend, "reviewer", "rev-alice"),
            "feed": add_token(backend, "system", "perf-feed")}


def listed(url: str, *args: str) -> list[dict[str, str]]:
    result = tokens(url, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, str]] = json_lines(result.stdout)
    return rows


@pytest.fixture
def client(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[TestClient]:
    with in_process(backend, clock, pool_size=1) as api:
        yield api.client


def status(client: TestClient, token: str) -> int:
    code: int = client.get("/v1/campaigns", headers=bearer(token)).status_code
    return code


def test_tokens_list_shows_ids_actors_and_roles_never_the_tokens(
    backend: str, issued: dict[str, str]
) -> None:
    rows = listed(backend)
    assert sorted((r["id"], r["actor_id"], r["role"]) for r in rows) == sorted(
        (token_id(t), "perf-feed" if k == "feed" else "rev-alice",
         "system" if k == "feed" else "reviewer") for k, t in issued.items())
    assert all(r["created_at"] for r in rows)
    assert [r["actor_id"] for r in listed(backend, "--id", "rev-alice")] == ["rev-alice"] * 2
    text = tokens(backend, "list")
    assert text.exit_code == 0
    assert text.stdout.splitlines()[0].split() == [
        "id", "role", "actor_id", "markets", "created_at"]
    assert not any(t in text.stdout for t in issued.values())
    assert token_id(issued["feed"]) in text.stdout


def test_tokens_add_names_the_id_to_revoke_it_by(backend: str) -> None:
    result = tokens(backend, "add", "--role", "operator", "--id", "ops-1")
    assert result.exit_code == 0, result.output
    assert f"(id {token_id(result.stdout.strip())})" in result.stderr


def test_a_revoked_token_is_refused_and_the_others_still_work(
    backend: str, issued: dict[str, str], client: TestClient
) -> None:
    result = tokens(backend, "revoke", token_id(issued["alice-1"]))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"revoked 1 token: {token_id(issued['alice-1'])}")

    assert status(client, issued["alice-1"]) == 401
    assert status(client, issued["alice-2"]) == 200
    assert status(client, issued["feed"]) == 200
    assert {r["id"] for r in listed(backend)} == {token_id(issued["alice-2"]),
                                                  token_id(issued["feed"])}


def test_revoking_an_actor_revokes_all_of_its_tokens(
    backend: str, issued: dict[str, str], client: TestClient
) -> None:
    result = tokens(backend, "revoke", "--id", "rev-alice")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("revoked 2 tokens: ")

    assert [status(client, issued[k]) for k in ("alice-1", "alice-2", "feed")] == [401, 401, 200]
    assert [r["actor_id"] for r in listed(backend)] == ["perf-feed"]


@pytest.mark.parametrize("args", [["ffffffffffff"], ["<known>", "ffffffffffff"],
                                  ["--id", "rev-nobody"]])
def test_revoking_an_unknown_token_or_actor_is_an_error_and_revokes_nothing(
    backend: str, issued: dict[str, str], args: list[str]
) -> None:
    before = dump_store(backend)["ledger_tokens"]
    args = [token_id(issued["feed"]) if a == "<known>" else a for a in args]
    result = tokens(backend, "revoke", *args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: not_found: ")
    assert "nothing was revoked" in result.output
    assert dump_store(backend)["ledger_tokens"] == before


def test_revoke_without_a_token_or_an_actor_is_a_usage_error(backend: str) -> None:
    result = tokens(backend, "revoke")
    assert result.exit_code == 2
    assert "TOKEN_ID" in result.output


def test_a_running_service_refuses_a_revoked_token_once_its_trust_runs_out(
    backend: str, ledger: Ledger, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker trusts a token it has looked up for TOKEN_TTL (60 s, shortened here)."""
    monkeypatch.setattr(state, "TOKEN_TTL", 0.5)
    token = add_token(backend, "operator", "ops-1")
    assert status(client, token) == 200  # looked up, and trusted for a while
    assert tokens(backend, "revoke", token_id(token)).exit_code == 0
    time.sleep(0.6)
    response = client.post("/v1/commands", json=create_campaign(), headers=bearer(token))
    assert response.status_code == 401
    assert dump_store(backend)["ledger_commands"] == []
