"""`ledger serve`'s HTTP contract, in process (FastAPI's TestClient) on real stores:
statuses, tokens, body limits, batches, OpenAPI, the access log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import get_args
from uuid import uuid4

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from ledger import FixedClock, Ledger
from ledger.cli import main
from ledger.commands.schemas import PAYLOADS
from ledger.errors import RuleCode
from ledger.service.app import create_app
from ledger.service.status import STATUS
from ledger.store.tokens import digest
from tests.support.helpers import (
    MANUAL,
    approve,
    create_auto_campaign,
    create_campaign,
    dump_store,
    expire_campaign,
    register,
    slot,
    with_envelope,
)
from tests.support.service import Api, bearer, in_process


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger) as api:
        yield api


@pytest.fixture
def campaign(api: Api) -> str:
    return str(api.accept("operator", create_campaign())["aggregate_id"])


# Commands ------------------------------------------------------------------------------------

def test_an_accepted_command_is_200_with_its_position_and_a_resend_replays_it(api: Api) -> None:
    command = create_campaign()
    first = api.accept("operator", command)
    again = api.accept("operator", command)
    assert first["events"] == ["CampaignCreated"]
    assert isinstance(first["position"], int)
    assert again == {**first, "replayed": True}


def test_the_actor_is_the_token_s_whatever_the_body_says(api: Api, ledger: Ledger,
                                                         campaign: str) -> None:
    pretending = register(campaign, actor={"id": "ops-anna", "role": "operator"})
    registration = api.accept("seller", pretending)["aggregate_id"]
    actors = {e.actor["id"] for e in ledger.events_of(registration)}
    assert actors == {"seller-1"}
    # A seller's token cannot create a campaign, even with an operator in the body.
    response = api.send("seller", create_campaign("other-campaign"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_a_seller_token_acts_only_on_that_seller_s_registrations(api: Api, campaign: str) -> None:
    response = api.send("other_seller", register(campaign))  # seller_id is seller-1
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize(("change", "status", "code"), [
    ({"expected_version": 7}, 409, "conflict"),
    ({"command": "teleport"}, 422, "validation_error"),
    ({"payload": {"campaign_id": "Not a slug!"}}, 422, "validation_error"),
])
def test_a_refused_command_carries_its_error_body_and_status(api: Api, campaign: str,
                                                             change: dict[str, object],
                                                             status: int, code: str) -> None:
    command = with_envelope(expire_campaign(campaign), **change)
    response = api.send("operator", command)
    assert response.status_code == status
    assert response.json() == {"ok": False, "command_id": command["command_id"],
                               "error": response.json()["error"]}
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize(("who", "command", "status", "code"), [
    ("operator", create_campaign(), 409, "already_exists"),
    ("operator", expire_campaign(), 409, "campaign_not_ended"),
    ("seller", register(main_category="toys"), 400, "category_not_allowed"),
    ("seller", register(sessions=[slot(-100)]), 400, "session_outside_campaign"),
    ("reviewer", approve(str(uuid4())), 404, "not_found"),
])
def test_rule_codes_map_to_http_statuses(api: Api, campaign: str, who: str,
                                         command: dict[str, object], status: int,
                                         code: str) -> None:
    response = api.send(who, command)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_invalid_json_is_400_with_no_command_id(api: Api) -> None:
    response = api.client.post("/v1/commands", content=b'{"command": ',
                               headers=bearer(api.tokens["operator"]))
    assert response.status_code == 400
    assert response.json()["command_id"] is None
    assert response.json()["error"]["code"] == "invalid_json"


def test_every_rule_code_has_an_http_status() -> None:
    assert set(get_args(RuleCode)) <= set(STATUS)


# Tokens, size limits ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer"},
                                     {"Authorization": "Basic b3BzOnB3"},
                                     {"Authorization": "Bearer lgr_not-a-token"}])
def test_a_missing_or_unknown_token_is_401_and_nothing_is_written(api: Api, ledger: Ledger,
                                                                  headers: dict[str, str]) -> None:
    response = api.client.post("/v1/commands", json=create_campaign(), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert api.get("operator", f"/v1/campaigns/{MANUAL}").status_code == 404


def test_reads_need_a_token_too(api: Api) -> None:
    assert api.client.get("/v1/campaigns").status_code == 401


def test_a_body_over_the_limit_is_413_before_it_is_parsed(api: Api) -> None:
    body = b"[" + b" " * 1_000_000 + b"]"
    for path in ("/v1/commands", "/v1/commands:batch"):
        response = api.client.post(path, content=body, headers=bearer(api.tokens["operator"]))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"


def test_an_unreachable_store_is_503_and_healthz_still_answers() -> None:
    app = create_app("postgresql://postgres@127.0.0.1:1/nowhere")
    with TestClient(app) as client:
        response = client.post("/v1/commands", json=create_campaign(),
                               headers=bearer("lgr_anything"))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").json() == {"status": "up"}


# Batches ---------------------------------------------------------------------------------------

def test_a_batch_returns_one_result_per_command_in_order(api: Api, campaign: str) -> None:
    commands = [create_auto_campaign(), create_campaign(), create_auto_campaign("second-auto")]
    response = api.send("operator", commands)
    assert response.status_code == 200
    results = response.json()
    assert [r["command_id"] for r in results] == [c["command_id"] for c in commands]
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["error"]["code"] == "already_exists"


@pytest.mark.parametrize("body", [{"command": "create_campaign"}, [{}] * 501])
def test_a_batch_is_an_array_of_at_most_500_commands(api: Api, body: object) -> None:
    response = api.client.post("/v1/commands:batch", json=body,
                               headers=bearer(api.tokens["operator"]))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


# The documents ---------------------------------------------------------------------------------

def test_openapi_describes_every_command_body(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    one = document["paths"]["/v1/commands"]["post"]["requestBody"]["content"]
    kinds = one["application/json"]["schema"]["discriminator"]["mapping"]
    assert set(kinds) == set(PAYLOADS)
    batch = document["paths"]["/v1/commands:batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["maxItems"] == 500
    assert "RegisterCommand" in document["components"]["schemas"]


def test_each_request_logs_one_json_line_without_the_token(
    api: Api, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="ledger.access"):
        api.accept("operator", create_campaign())
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ledger.access"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/commands", 200)
    assert (line["command"], line["actor_id"]) == ("create_campaign", "ops-anna")
    assert line["latency_ms"] >= 0
    assert api.tokens["operator"] not in caplog.text


def test_tokens_add_prints_a_token_once_and_stores_only_its_hash(backend: str) -> None:
    result = CliRunner().invoke(main, ["--db", backend, "tokens", "add", "--role", "system",
                                       "--id", "perf-feed"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    stored = dump_store(backend)["ledger_tokens"]
    assert [row[:3] for row in stored] == [(digest(token), "perf-feed", "system")]
    assert token not in repr(dump_store(backend))
