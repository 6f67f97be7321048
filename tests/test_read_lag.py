"""A read model that is behind says so: the CLI's queries on stderr, the service's reads in
headers, and /readyz by answering 503 past its lag threshold. Both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from ledger import FixedClock, Ledger
from ledger.cli import main
from ledger.projections.registry import projector
from tests.support.helpers import MANUAL, SELLER, approve, create_campaign, register
from tests.support.service import Api, in_process
from tests.test_cli import CAMPAIGN, NOW, REGISTER

QUERIES = [  # (arguments, the read model they read)
    (["manage", "--seller", "seller-1", "--json"], "manage_campaign"),
    (["campaigns", "--json"], "manage_campaign"),
    (["performance", "ytd", "--seller", "seller-1", "--year", "2026", "--json"],
     "ytd_performance"),
    (["performance", "campaign", "1111-mega-live", "--json"], "campaign_performance"),
    (["decisions", "--json"], "review_decisions"),
    (["export", "cp_registrations", "--format", "jsonl"], "campaign_performance"),
]
IDS = ["manage", "campaigns", "ytd", "campaign-performance", "decisions", "export"]


def run(url: str, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--db", url, "--now", NOW, *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def sent(backend: str) -> tuple[str, int]:
    """A store with a campaign and a registration whose read models applied nothing yet;
    (its URL, the store's head)."""
    code, out, _ = run(backend, "send", "-",
                       stdin=json.dumps(CAMPAIGN) + "\n" + json.dumps(REGISTER) + "\n")
    assert code == 0, out
    return backend, max(json.loads(line)["position"] for line in out.splitlines())


def parsed(out: str) -> object:
    return json.loads(out) if out.startswith(("[", "{")) else [
        json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(("args", "model"), QUERIES, ids=IDS)
def test_a_query_on_a_read_model_behind_the_store_warns_on_stderr_only(
        sent: tuple[str, int], args: list[str], model: str) -> None:
    url, head = sent
    code, out, err = run(url, *args)
    warning, *rest = err.splitlines()
    assert warning == (
        f"warning: read model {model} is {head:,} events behind the store (at position 0 of "
        f"{head:,}): results may be missing or stale; add --fresh, or keep `ledger projections "
        "run` going")
    if model == "campaign_performance" and args[0] == "performance":
        # A campaign the read model has not seen yet is not_found, after the warning.
        assert (code, out) == (1, "")
        assert rest[0].startswith("Error: not_found: campaign '1111-mega-live' is not in ")
    else:
        assert (code, rest) == (0, [])
        parsed(out)  # stdout is the answer alone: --json stays parseable

    code, fresh_out, err = run(url, *args, "--fresh")
    assert (code, err) == (0, "")  # caught up first: nothing to warn about
    assert parsed(fresh_out) != [] or model == "review_decisions"


@pytest.mark.parametrize(("args", "model"), QUERIES, ids=IDS)
def test_a_query_on_a_read_model_at_the_head_says_nothing_on_stderr(
        sent: tuple[str, int], args: list[str], model: str) -> None:
    url, _ = sent
    assert run(url, "projections", "catch-up")[0] == 0
    code, _, err = run(url, *args)
    assert (code, err) == (0, "")


def test_one_event_behind_is_said_in_the_singular(sent: tuple[str, int]) -> None:
    url, head = sent
    with Ledger.open(url) as ledger:
        projector(ledger.app).catch_up(until=head - 1)
    err = run(url, "campaigns")[2]
    assert err.startswith("warning: read model manage_campaign is 1 event behind the store "
                          f"(at position {head - 1:,} of {head:,})")


# Over HTTP -------------------------------------------------------------------------------------

READS = [
    ("/v1/campaigns", "manage_campaign"),
    (f"/v1/sellers/{SELLER}/registrations", "manage_campaign"),
    (f"/v1/sellers/{SELLER}/performance/2026", "ytd_performance"),
    (f"/v1/campaigns/{MANUAL}/performance", "campaign_performance"),
    ("/v1/decisions", "review_decisions"),
]
HEADERS = ("Ledger-Read-Model", "Ledger-Read-Position", "Ledger-Store-Head", "Ledger-Read-Lag")


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger, ready_max_lag=2) as api:
        yield api


@pytest.fixture
def head(api: Api) -> int:
    """Three commands sent, none applied by the read models yet: the store's head."""
    api.accept("operator", create_campaign())
    registration = str(api.accept("seller", register())["aggregate_id"])
    return int(api.accept("reviewer", approve(registration))["position"])


@pytest.mark.parametrize(("path", "model"), READS)
def test_every_read_model_answer_carries_its_position_and_the_store_s_head(
        api: Api, head: int, path: str, model: str) -> None:
    behind = api.get("reviewer" if "sellers" not in path else "seller", path)
    # A campaign not in the read model yet is not_found: its headers show why.
    assert behind.status_code == (404 if path.endswith("/performance") else 200), behind.text
    assert [behind.headers[h] for h in HEADERS] == [model, "0", str(head), str(head)]
    fresh = api.get("reviewer" if "sellers" not in path else "seller", path, fresh="true")
    assert [fresh.headers[h] for h in HEADERS] == [model, str(head), str(head), "0"]


def test_the_openapi_description_names_the_freshness_headers_of_each_read(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path, _ in READS:
        template = (path.replace(SELLER, "{seller_id}").replace(MANUAL, "{campaign_id}")
                    .replace("2026", "{year}"))
        documented = paths[template]["get"]["responses"]["200"]["headers"]
        assert set(documented) == set(HEADERS), template


def test_readyz_is_503_naming_the_read_models_beyond_the_lag_threshold(
        api: Api, head: int) -> None:
    behind = api.client.get("/readyz")
    assert behind.status_code == 503
    body = behind.json()
    assert (body["status"], body["head"], body["max_lag"]) == ("behind", head, 2)
    assert set(body["lagging"]) == {m["name"] for m in body["read_models"]}
    assert {m["lag"] for m in body["read_models"]} == {head}

    api.get("reviewer", "/v1/decisions", fresh="true")  # review_decisions catches up
    partly = api.client.get("/readyz").json()
    assert "review_decisions" not in partly["lagging"]
    assert "manage_campaign" in partly["lagging"]

    with Ledger.open(api.client.app.state.service.url) as ledger:
        projector(ledger.app).catch_up()
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["lagging"] == []
    assert {(m["position"], m["lag"]) for m in ready.json()["read_models"]} == {(head, 0)}
