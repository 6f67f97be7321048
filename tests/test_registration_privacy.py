"""A seller is never told whether another shop's registration exists: probing a derivable
registration id gets the same bytes before and after someone else registers it, through
`Ledger.send`, `ledger send` and every HTTP path (commands, batch, state, history)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.cli import main
from tests.support.helpers import (
    ACCOUNT,
    MANUAL,
    NOW,
    Json,
    World,
    add_session,
    dump_store,
    duplicate,
    register,
    slot,
    withdraw,
)
from tests.support.service import Api, in_process

PROBED = str(registration_uuid(MANUAL, ACCOUNT))  # seller-1's registration, once it exists
Probe = Callable[[], tuple[Any, ...]]

# What seller-2 sends about seller-1's registration (fixed command ids: each is refused,
# so sending it again is a new command, not a replay).
COMMANDS: dict[str, Json] = {
    "add_session": add_session(PROBED, slot(10), seller_id="seller-2"),
    "duplicate": duplicate(PROBED, "s1", slot(10), seller_id="seller-2"),
    "withdraw": withdraw(PROBED, seller_id="seller-2"),
    "withdraw a session": withdraw(PROBED, ["s1"], seller_id="seller-2"),
    "add_session, expected version": add_session(PROBED, slot(10), seller_id="seller-2",
                                                 expected_version=3),
}


def same_answer_before_and_after_seller_1_registers(world: World, probe: Probe) -> tuple[Any, ...]:
    """The probe's answer while the registration is missing, checked equal to its answer
    once seller-1 has registered it (and the refused probe wrote nothing)."""
    missing = probe()
    world.register(register(MANUAL))
    before = dump_store(world.url)
    assert probe() == missing
    assert dump_store(world.url) == before, "a refused probe wrote to the store"
    return missing


@pytest.mark.parametrize("name", COMMANDS)
def test_a_command_on_another_seller_s_registration_is_refused_exactly_as_a_missing_one(
    world: World, manual_campaign: str, name: str,
) -> None:
    def probe() -> tuple[Any, ...]:
        return (json.dumps(world.ledger.send(COMMANDS[name])),)

    (answer,) = same_answer_before_and_after_seller_1_registers(world, probe)
    assert json.loads(str(answer))["error"] == {
        "code": "not_found", "message": f"registration {PROBED!r} not found", "details": {}}


def test_ledger_send_prints_the_same_line_and_exit_code_for_another_seller_s_registration(
    world: World, manual_campaign: str,
) -> None:
    text = "".join(json.dumps(c) + "\n" for c in COMMANDS.values())

    def probe() -> tuple[Any, ...]:
        result = CliRunner().invoke(main, ["--db", world.url, "--now", NOW.isoformat(),
                                           "send", "-"], input=text)
        return result.exit_code, result.stdout, result.stderr

    exit_code, stdout, _ = same_answer_before_and_after_seller_1_registers(world, probe)
    assert exit_code == 1
    assert {json.loads(line)["error"]["code"] for line in str(stdout).splitlines()} == {
        "not_found"}


@pytest.fixture
def api(ledger: Ledger, backend: str, clock: FixedClock) -> Iterator[Api]:
    with in_process(backend, clock, ledger) as api:
        yield api


PATHS: dict[str, Callable[[Api], Any]] = {
    **{f"POST /v1/commands {name}": (lambda api, c=c: api.send("other_seller", c))
       for name, c in COMMANDS.items()},
    "POST /v1/commands:batch": lambda api: api.send("other_seller", list(COMMANDS.values())),
    "GET state": lambda api: api.get("other_seller", f"/v1/registrations/{PROBED}"),
    "GET history": lambda api: api.get("other_seller", f"/v1/registrations/{PROBED}/history"),
}


@pytest.mark.parametrize("path", PATHS)
def test_every_http_path_answers_another_seller_s_registration_as_a_missing_one(
    world: World, manual_campaign: str, api: Api, path: str,
) -> None:
    def probe() -> tuple[Any, ...]:
        response = PATHS[path](api)
        return response.status_code, response.content

    status, _ = same_answer_before_and_after_seller_1_registers(world, probe)
    assert status == (200 if "batch" in path else 404)


def test_the_owner_and_the_other_roles_still_see_the_registration(
    world: World, manual_campaign: str, api: Api,
) -> None:
    world.register(register(MANUAL))
    for who in ("seller", "reviewer", "operator"):
        response = api.get(who, f"/v1/registrations/{PROBED}")
        assert (response.status_code, response.json()["registration_id"]) == (200, PROBED)
