"""`ledger serve`'s GET endpoints: read models after a write (`?after=`, `?fresh=`), state
and history from the event store, and who may read what."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ledger import FixedClock, Ledger
from ledger.service.state import Service
from tests.support.helpers import MANUAL, SELLER, approve, create_campaign, register
from tests.support.service import Api, in_process


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger, read_timeout=0.5) as api:
        yield api


@pytest.fixture
def approved(api: Api) -> tuple[str, int]:
    """(a registration of seller-1, approved; the approval's store position)."""
    api.accept("operator", create_campaign())
    registration = str(api.accept("seller", register())["aggregate_id"])
    return registration, int(api.accept("reviewer", approve(registration))["position"])


def test_a_read_after_a_write_s_position_sees_the_write(api: Api,
                                                        approved: tuple[str, int]) -> None:
    registration, position = approved
    page = api.get("seller", f"/v1/sellers/{SELLER}/registrations", after=position).json()
    assert [(r["registration_id"], r["status"]) for r in page] == [(registration, "approved")]
    decisions = api.get("reviewer", "/v1/decisions", fresh="true").json()
    assert [d["decision"] for d in decisions] == ["approved"]


@pytest.mark.parametrize(("path", "model_key"), [
    ("/v1/campaigns", None),
    (f"/v1/campaigns/{MANUAL}/performance", "registrations"),
    (f"/v1/sellers/{SELLER}/performance/2026", "campaigns_joined"),
])
def test_every_read_model_answers_fresh(api: Api, approved: tuple[str, int], path: str,
                                        model_key: str | None) -> None:
    response = api.get("operator", path, fresh="true")
    assert response.status_code == 200, response.text
    body = response.json()
    if model_key is None:
        assert [c["campaign_id"] for c in body] == [MANUAL]
    else:
        assert model_key in body


def test_state_and_history_come_from_the_event_store(api: Api,
                                                     approved: tuple[str, int]) -> None:
    registration, _ = approved
    state = api.get("seller", f"/v1/registrations/{registration}").json()
    assert (state["status"], state["version"]) == ("approved", 4)
    history = api.get("seller", f"/v1/registrations/{registration}/history").json()
    assert [e["type"] for e in history][-1] == "Approved"
    assert api.get("reviewer", f"/v1/campaigns/{MANUAL}").json()["registrations"] == 1
    assert api.get("reviewer", f"/v1/campaigns/{MANUAL}/history").json()[0]["version"] == 1


def test_a_position_beyond_the_store_s_head_is_refused_at_once(
        api: Api, approved: tuple[str, int]) -> None:
    _, head = approved
    started = time.monotonic()
    response = api.get("operator", "/v1/campaigns", after=head + 1)
    assert time.monotonic() - started < 0.4  # the read timeout is 0.5 s: it did not wait
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "validation_error",
        "message": f"after: position {head + 1} is beyond the store's last position {head}: "
                   "pass the `position` of an accepted command",
        "details": [{"field": "after", "message": response.json()["error"]["details"][0][
            "message"]}]}
    assert api.get("operator", "/v1/campaigns", after=head).status_code == 200


def test_a_read_model_that_cannot_reach_the_position_in_time_is_503(
        api: Api, approved: tuple[str, int]) -> None:
    _, head = approved
    service: Service = api.client.app.state.service
    with service._catching_up:  # another request is catching up, and does not finish
        response = api.get("operator", "/v1/campaigns", after=head)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "read_model_behind"
    assert error["details"]["lag"] == head - error["details"]["position"] > 0


@pytest.mark.parametrize("path", [
    "/v1/sellers/seller-1/registrations", "/v1/decisions", f"/v1/campaigns/{MANUAL}/history",
])
def test_a_seller_reads_only_their_own(api: Api, approved: tuple[str, int], path: str) -> None:
    response = api.get("other_seller", path)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "forbidden")
    registration, _ = approved
    # Another seller's registration is not found, as a missing one (test_registration_privacy).
    assert api.get("other_seller", f"/v1/registrations/{registration}").status_code == 404


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/registrations/not-a-uuid", 404),
    ("/v1/campaigns/no-such-campaign", 404),
    ("/v1/sellers/seller-1/performance/1800", 422),
    ("/v1/sellers/seller-1/registrations?status=lost", 422),
])
def test_bad_read_requests_get_the_error_body(api: Api, path: str, status: int) -> None:
    response = api.get("operator", path)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_readyz_reports_each_read_model_s_lag(api: Api, approved: tuple[str, int]) -> None:
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert {m["name"] for m in ready["read_models"]} >= {"manage_campaign", "review_decisions"}
    assert all(m["lag"] == ready["head"] - m["position"] for m in ready["read_models"])
