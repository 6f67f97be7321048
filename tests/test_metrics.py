"""`/metrics`: after commands through the real service, the scrape (parsed with
prometheus_client's own parser) counts them by name and outcome, times them, and shows
each read model's lag; with `ledger serve --workers 2` the counts are summed over both
workers. Who may scrape: the metrics token, else loopback only."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger import FixedClock, Ledger
from ledger.projections.registry import projector
from tests.support.helpers import (
    NOW,
    approve,
    create_campaign,
    new_command_id,
    register,
    with_envelope,
)
from tests.support.service import Api, add_token, bearer, in_process, serving

TOKEN = "scrape-secret"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, tokens_from=ledger, metrics_token=TOKEN) as running:
        yield running


def scrape(api: Api) -> Samples:
    response = api.client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def test_metrics_count_commands_by_name_and_outcome(api: Api, ledger: Ledger) -> None:
    before = scrape(api)
    campaign = api.accept("operator", create_campaign())
    created = api.send("operator", create_campaign())  # the same campaign: refused
    assert created.json()["error"]["code"] == "already_exists"
    reg = api.accept("seller", register(str(campaign["aggregate_id"])))
    command = approve(str(reg["aggregate_id"]))
    api.accept("reviewer", command)
    assert api.accept("reviewer", command)["replayed"] is True
    api.send("seller", {"command": "no_such_thing"})
    api.send("seller", {"command": ["not", "a", "name"]})
    api.send("operator", [with_envelope(create_campaign("batch-1"), command_id=new_command_id()),
                          create_campaign("batch-2")])
    after = scrape(api)

    def commands(command: str, outcome: str, code: str = "") -> float:
        return delta(before, after, "ledger_commands_total", command=command, outcome=outcome,
                     code=code)

    assert commands("create_campaign", "accepted") == 3
    assert commands("create_campaign", "refused", "already_exists") == 1
    assert commands("register", "accepted") == 1
    assert commands("approve", "accepted") == 1
    assert commands("approve", "replayed") == 1
    assert commands("unknown", "refused", "validation_error") == 2
    assert delta(before, after, "ledger_command_duration_seconds_count",
                 command="create_campaign") == 4
    assert delta(before, after, "ledger_command_duration_seconds_sum",
                 command="approve") > 0
    # Read models: this service does not follow, so they are behind by what was written.
    status = {row["name"]: row for row in projector(ledger.app).status()}
    head = ledger.app.recorder.max_notification_id()
    assert value(after, "ledger_store_head", market="default") == head
    for name, row in status.items():
        assert value(after, "ledger_read_model_lag_events", read_model=name,
                     market="default") == row["lag"]
    assert value(after, "ledger_read_model_lag_events", read_model="manage_campaign",
                 market="default") > 0
    assert value(after, "ledger_store_up", market="default") == 1
    assert value(after, "ledger_http_requests_in_flight") >= 1  # this scrape


def test_metrics_need_the_metrics_token_not_an_actors(api: Api) -> None:
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=bearer("wrong")).status_code == 401
    refused = api.client.get("/metrics", headers=bearer(api.tokens["operator"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"


def test_without_a_token_metrics_answer_loopback_only(ledger: Ledger, backend: str,
                                                       clock: FixedClock) -> None:
    with in_process(backend, clock) as running:
        refused = running.client.get("/metrics")  # TestClient's peer is not loopback
    assert refused.status_code == 403
    assert "--metrics-token" in refused.json()["error"]["message"]


def test_the_group_size_histogram_counts_what_group_commit_reports() -> None:
    from ledger.metrics import observe_group, render

    before = samples(render().decode())
    for size in (1, 3, 40):
        observe_group(size)
    after = samples(render().decode())
    assert delta(before, after, "ledger_command_group_size_count") == 3
    assert delta(before, after, "ledger_command_group_size_sum") == 44
    assert delta(before, after, "ledger_command_group_size_bucket", le="4.0") == 2


def http_send(base: str, token: str, command: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{base}/v1/commands", json=command, headers=bearer(token),
                          timeout=30)
    body: dict[str, Any] = response.json()
    return body


def workers_with_counts(folder: Path) -> set[str]:
    """The processes that have counted a command (their counter files)."""
    return {p.stem.split("_")[-1] for p in folder.glob("counter_*.db")}


def test_metrics_of_a_real_server_with_two_workers_sum_both(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    operator = add_token(backend, "operator", "ops-anna")
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"from an earlier run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    with serving(backend, tmp_path / "serve.log", "--workers", "2") as server:
        assert not (folder / "counter_999999.db").exists()  # cleaned at start
        sent = 0
        with ThreadPoolExecutor(8) as pool:  # at once, until both workers have taken some
            while sent < 400 and len(workers_with_counts(folder)) < 2:
                burst = [create_campaign(f"live-{sent + n}") for n in range(16)]
                results = list(pool.map(lambda c: http_send(server.base, operator, c), burst))
                assert all(r["ok"] for r in results)
                sent += len(burst)
        assert len(workers_with_counts(folder)) == 2, "one worker took every command"
        again = http_send(server.base, operator, create_campaign("live-0"))
        assert again["error"]["code"] == "already_exists"
        for _ in range(10):  # a scrape answered by either worker says the same
            response = httpx.get(f"{server.base}/metrics", timeout=30)
            assert response.status_code == 200
            found = samples(response.text)
            assert value(found, "ledger_commands_total", command="create_campaign",
                         outcome="accepted", code="") == sent
            assert value(found, "ledger_commands_total", command="create_campaign",
                         outcome="refused", code="already_exists") == 1
            assert value(found, "ledger_command_duration_seconds_count",
                         command="create_campaign") == sent + 1
        assert value(found, "ledger_store_head", market="default") >= sent


def test_store_faults_are_counted_by_cause(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability.test_outage import write_locked

    monkeypatch.setenv("LEDGER_SQLITE_BUSY_TIMEOUT", "1")
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger, \
            in_process(url, ledger.clock, tokens_from=ledger, metrics_token=TOKEN) as api:
        before = scrape(api)
        with write_locked(path):
            answer = api.send("operator", create_campaign())
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "store_unavailable"
        after = scrape(api)
    assert delta(before, after, "ledger_store_faults_total", cause="locked") >= 1
    assert delta(before, after, "ledger_commands_total", command="create_campaign",
                 outcome="refused", code="store_unavailable") == 1
