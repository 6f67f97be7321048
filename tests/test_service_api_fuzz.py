"""Property-based API test: schemathesis generates requests from `/openapi.json` (bodies
that fit the schema, and bodies that do not), and junk JSON is thrown at the command
endpoints; the service must never answer 5xx.

In process (the ASGI app), on a SQLite store seeded with a campaign and a registration, with
a valid token: the point is the HTTP layer's handling of whatever arrives, not the backend
(the other service tests run on both). Derandomized, with a bounded number of examples, so
a CI run is stable and quick.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from ledger import FixedClock, Ledger
from ledger.service.app import BATCH, COMMANDS, create_app
from tests.support.helpers import NOW, create_campaign, register
from tests.support.service import bearer, issue_tokens

# Per API operation and generation mode; raise it locally for a deeper search.
EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """A client of the app on a seeded SQLite store, and an operator's token (an operator
    may read everything, so reads get past the role checks to the read models)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'ledger.db'}"
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        for command in (create_campaign(), register()):
            assert ledger.send(command)["ok"]
        token = issue_tokens(ledger)["operator"]
    app = create_app(url, clock=FixedClock(NOW), pool_size=2, read_timeout=0.1)
    with TestClient(app) as client:  # runs the lifespan: the service is closed at the end
        yield client, token


@pytest.fixture(scope="module")
def api_schema(store: tuple[TestClient, str]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", store[0].app)


def _operations() -> list[tuple[str, str, GenerationMode]]:
    """(method, path, mode) for every operation of the document (building the app opens no
    store); negative mode only where a body or a query can be made wrong (a string path
    parameter cannot)."""
    found = []
    for path, methods in create_app("sqlite:///unused.db").openapi()["paths"].items():
        for method, operation in methods.items():
            found.append((method.upper(), path, GenerationMode.POSITIVE))
            if "requestBody" in operation or any(
                    p["in"] == "query" for p in operation.get("parameters", [])):
                found.append((method.upper(), path, GenerationMode.NEGATIVE))
    return found


def read_model_behind(response: Any) -> bool:
    """The documented 503 of a read whose ?after= is beyond what the store holds (the
    position may be another process's write, not yet visible: the read waits, then says so)."""
    return bool(response.status_code == 503
                and response.json()["error"]["code"] == "read_model_behind")


@pytest.mark.parametrize(("method", "path", "mode"), _operations())
def test_no_request_the_openapi_document_describes_gets_a_server_error(
    api_schema: Any, store: tuple[TestClient, str], method: str, path: str,
    mode: GenerationMode,
) -> None:
    token = store[1]

    @FUZZ
    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    def no_server_error(case: Any) -> None:
        response = case.call(headers=bearer(token))
        if not read_model_behind(response):
            case.validate_response(response, checks=[not_a_server_error])

    no_server_error()


# Junk JSON, whatever the schema says -----------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
ENVELOPE_KEYS = ("command", "command_id", "actor", "expected_version", "payload")
ENVELOPES = st.dictionaries(st.sampled_from(ENVELOPE_KEYS), JSON_VALUES, max_size=5)


@pytest.mark.parametrize("path", [COMMANDS, BATCH])
@FUZZ
@given(body=JSON_VALUES | ENVELOPES | st.lists(ENVELOPES, max_size=3))
def test_junk_json_sent_as_a_command_is_refused_without_a_server_error(
    store: tuple[TestClient, str], path: str, body: Any,
) -> None:
    client, token = store
    response = client.post(path, content=json.dumps(body), headers=bearer(token))
    assert response.status_code < 500, response.text


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"[" * 10_000, b"1e999999",
                                 b'{"command": "register", "payload": {"gmv": NaN}}'])
@pytest.mark.parametrize("path", [COMMANDS, BATCH])
def test_bytes_that_are_not_json_are_a_400_not_a_server_error(
    store: tuple[TestClient, str], path: str, raw: bytes,
) -> None:
    client, token = store
    response = client.post(path, content=raw, headers=bearer(token))
    assert 400 <= response.status_code < 500, response.text


# Found by fuzzing, kept as regressions -----------------------------------------------------

def test_money_is_declared_a_decimal_string_in_the_openapi_document(
    store: tuple[TestClient, str],
) -> None:
    schemas = store[0].get("/openapi.json").json()["components"]["schemas"]
    for field in ("gmv", "refunds"):
        money = schemas["RecordPerformance"]["properties"][field]
        assert (money["type"], money["pattern"]) == ("string", r"^[0-9]{1,18}(\.[0-9]{1,6})?$")


NUL_READS = ["/v1/campaigns/a%00b", "/v1/campaigns/a%00b/performance",
             "/v1/campaigns/a%00b/history", "/v1/registrations/a%00b",
             "/v1/sellers/a%00b/registrations", "/v1/sellers/a%00b/performance/2026",
             "/v1/sellers/seller-1/registrations?campaign=a%00b",
             "/v1/decisions?reviewer=a%00b", "/v1/decisions?campaign=a%00b"]


@pytest.mark.parametrize("path", NUL_READS)
def test_a_nul_character_in_a_read_s_path_or_query_is_a_422_on_every_backend(
    ledger: Ledger, backend: str, path: str,
) -> None:
    # PostgreSQL text cannot hold NUL: the read-model query used to fail with a 500.
    token = issue_tokens(ledger)["operator"]
    with TestClient(create_app(backend, clock=FixedClock(NOW), pool_size=1)) as client:
        response = client.get(path, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


def test_a_nul_character_in_a_command_is_refused_and_the_read_models_go_on(
    ledger: Ledger, backend: str,
) -> None:
    # PostgreSQL text cannot hold NUL: an event carrying one used to stop the read models.
    token = issue_tokens(ledger)["operator"]
    with TestClient(create_app(backend, clock=FixedClock(NOW), pool_size=1)) as client:
        refused = client.post("/v1/commands", json=create_campaign(name="11.11\x00Sale"),
                              headers=bearer(token))
        response = client.get("/v1/campaigns", params={"fresh": "true"},
                              headers=bearer(token))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"] == [
        {"field": "payload.name", "message": "must not contain the NUL character (U+0000)"}]
    assert response.status_code == 200, response.text
