"""A scripted season sent through `ledger send`, its inputs at +07:00, and the read commands
whose output must be the same bytes on every backend (tests of the one machine interface).

Positions are the same on both backends: every command is accepted or refused before it
writes, so PostgreSQL's sequence skips no id.
"""

from __future__ import annotations

import json
import re
from typing import Any

from click.testing import CliRunner, Result

from ledger.cli import main
from tests.support.helpers import Json

CAMPAIGN = "mega-1111"
SELLER = "seller-1"
# Registration ids are derived from campaign and account (uuid5): the same on every store.
REGISTRATION = "4baf0ab6-5818-5ed7-ab5f-0995da8a3a32"
AUTO_REGISTRATION = "dd9f291d-076e-5175-a05c-58dc7291d088"
AFTER = "2026-11-15T00:00:00+07:00"  # the clock for the reads: the campaign has ended

# An instant as the ledger prints one: ISO-8601 to the second, optional fraction, a zone.
INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")

OPS = {"id": "ops-anna", "role": "operator"}
REVIEWER = {"id": "rev-bao", "role": "reviewer"}
SYSTEM = {"id": "system", "role": "system"}


def _command(name: str, actor: Json, payload: Json, command_id: str) -> Json:
    return {"command": name, "command_id": command_id, "actor": actor,
            "expected_version": None, "payload": payload}


def _seller(seller_id: str) -> Json:
    return {"id": seller_id, "role": "seller"}


CAMPAIGN_FIELDS: Json = {
    "campaign_id": CAMPAIGN, "name": "11.11 Mega LIVE Sale", "kind": "live",
    "review_mode": "manual", "registration_opens_at": "2026-10-01T07:00:00+07:00",
    "registration_closes_at": "2026-10-20T07:00:00+07:00",
    "starts_at": "2026-11-10T07:00:00+07:00", "ends_at": "2026-11-13T00:00:00Z",
    "requirements": {"min_account_level": 2, "min_livestream_level": 1,
                     "categories": ["fashion"]},
    "levels": [{"code": "standard", "name": "Standard", "benefits": ["badge"],
                "min_livestream_level": 1}],
    "allow_duplicates": True, "max_sessions": 10}
AUTO_FIELDS: Json = {
    **CAMPAIGN_FIELDS, "campaign_id": "flash-sv", "name": "Flash", "kind": "short_video",
    "review_mode": "auto", "levels": [], "allow_duplicates": False,
    "requirements": {"min_account_level": 3, "min_livestream_level": 2, "categories": []}}


def _window(day: int) -> Json:
    return {"starts_at": f"2026-11-{day}T20:00:00+07:00",
            "ends_at": f"2026-11-{day}T22:00:00+07:00"}


REGISTER: Json = {
    "campaign_id": CAMPAIGN, "seller_id": SELLER, "account_id": "shop-1",
    "main_category": "fashion", "level": "standard",
    "profile": {"account_level": 5, "livestream_level": 5},
    "sessions": [_window(10), _window(11)]}
REGISTER_AUTO: Json = {
    "campaign_id": "flash-sv", "seller_id": "seller-2", "account_id": "shop-2",
    "main_category": "beauty", "profile": {"account_level": 5, "livestream_level": 5},
    "sessions": []}
REPORT: Json = {
    "registration_id": REGISTRATION, "report_id": "r1", "session_id": "s1",
    "period_start": "2026-11-10T20:00:00+07:00", "period_end": "2026-11-10T22:00:00+07:00",
    "currency": "THB", "gmv": "1250.50", "orders": 3, "items_sold": 4, "buyers": 3,
    "views": 100, "refunds": "0"}

# (the clock, the commands sent at it): +07:00 everywhere, a fraction of a second once,
# and one command refused with clock_behind (its details carry two instants).
SCRIPT: list[tuple[str, list[Json]]] = [
    ("2026-10-02T09:00:00+07:00", [
        _command("create_campaign", OPS, CAMPAIGN_FIELDS, "c1"),
        _command("create_campaign", OPS, AUTO_FIELDS, "c2")]),
    ("2026-10-03T10:15:30.250000+07:00", [
        _command("register", _seller(SELLER), REGISTER, "c3"),
        _command("register", _seller("seller-2"), REGISTER_AUTO, "c4")]),
    ("2026-10-04T08:00:00+07:00", [
        _command("approve", REVIEWER, {"registration_id": REGISTRATION, "session_ids": ["s1"],
                                       "note": "ok"}, "c5"),
        _command("reject", REVIEWER, {"registration_id": REGISTRATION, "session_ids": ["s2"],
                                      "reasons": ["other"]}, "c6")]),
    ("2026-10-04T07:00:00+07:00", [
        _command("withdraw", _seller(SELLER), {"registration_id": REGISTRATION}, "c7")]),
    ("2026-11-14T01:00:00+07:00", [
        _command("record_performance", SYSTEM, REPORT, "c8"),
        _command("expire_campaign", OPS, {"campaign_id": CAMPAIGN}, "c9")]),
]

# Every read command that prints data from the store (not the wall clock), as a user runs it.
READS: list[list[str]] = [
    ["show", "campaign", CAMPAIGN], ["show", "registration", REGISTRATION],
    ["events", REGISTRATION, "--json"], ["events", CAMPAIGN],
    ["audit", "history", REGISTRATION, "--json"], ["audit", "history", CAMPAIGN],
    ["audit", "as-of", REGISTRATION, "--at", "2026-10-03T12:00:00+07:00", "--json"],
    ["audit", "as-of", CAMPAIGN, "--version", "1"],
    ["audit", "decisions", "--json"], ["audit", "decisions"],
    ["audit", "decisions", "--format", "csv"],
    ["audit", "findings", "--json"], ["audit", "findings"],
    ["manage", "--seller", SELLER, "--json", "--fresh"], ["manage", "--seller", SELLER],
    ["campaigns", "--json", "--fresh"], ["campaigns"],
    ["performance", "ytd", "--seller", SELLER, "--year", "2026", "--json", "--fresh"],
    ["performance", "campaign", CAMPAIGN, "--json", "--fresh"],
    ["decisions", "--json", "--fresh"], ["decisions"],
    *[["export", table, "--format", "jsonl"] for table in (
        "manage_registrations", "manage_campaigns", "decision_registrations",
        "review_decisions", "ytd_months", "cp_days")],
    ["export", "review_decisions", "--format", "csv"],
]


def cli(url: str, *args: str, now: str = AFTER, input: str | None = None,
        env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--db", url, "--now", now, *args], input=input, env=env)


def build(url: str) -> list[str]:
    """Send SCRIPT into the store at `url`; what `ledger send` printed for each step."""
    printed = []
    for now, commands in SCRIPT:
        sent = cli(url, "send", "-", now=now, input="".join(json.dumps(c) + "\n"
                                                            for c in commands))
        assert sent.exit_code in (0, 1), sent.output
        printed.append(sent.stdout)
    return printed


def instants(text: str) -> list[str]:
    return INSTANT.findall(text)


def parsed(text: str) -> Any:
    """One JSON document, or the objects of JSON Lines (a list)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
