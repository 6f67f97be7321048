"""Test helpers: the campaign timeline, command builders, and a dump of every store table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit
from uuid import uuid4

import psycopg
from psycopg import sql

from ledger import FixedClock, Ledger

Json = dict[str, Any]
Build = Callable[[str], Json]  # registration id -> command

# The timeline of the realistic campaigns (registration window, then the LIVE period).
BANGKOK = timezone(timedelta(hours=7))
REG_OPENS = datetime(2026, 10, 1, tzinfo=UTC)
REG_CLOSES = datetime(2026, 10, 20, tzinfo=UTC)
STARTS = datetime(2026, 11, 10, tzinfo=UTC)
ENDS = datetime(2026, 11, 13, tzinfo=UTC)
NOW = datetime(2026, 10, 5, 9, 30, tzinfo=UTC)  # registration is open

MANUAL = "mega-1111-live"
AUTO = "flash-short-video"

OPERATOR: Json = {"id": "ops-anna", "role": "operator"}
REVIEWER: Json = {"id": "rev-bao", "role": "reviewer"}
SYSTEM: Json = {"id": "system", "role": "system"}
SELLER = "seller-1"
ACCOUNT = "shop-1"


def seller(seller_id: str = SELLER) -> Json:
    return {"id": seller_id, "role": "seller"}


def json_lines(text: str) -> list[Json]:
    """A listing as the CLI prints it with --json: one JSON object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def iso(moment: datetime) -> str:
    return moment.isoformat()


def hours(n: float) -> timedelta:
    return timedelta(hours=n)


def slot(start_hour: float, length: float = 1) -> Json:
    """A LIVE session window starting `start_hour` hours after the campaign starts."""
    starts_at = STARTS + hours(start_hour)
    return {"starts_at": iso(starts_at), "ends_at": iso(starts_at + hours(length))}


def new_command_id() -> str:
    return f"cmd-{uuid4().hex[:16]}"


def command(name: str, actor: Json, payload: Json, *, expected_version: int | None = None,
            command_id: str | None = None) -> Json:
    return {
        "command": name,
        "command_id": command_id or new_command_id(),
        "actor": actor,
        "expected_version": expected_version,
        "payload": payload,
    }


def with_payload(cmd: Json, **fields: Any) -> Json:
    cmd["payload"].update(fields)
    return cmd


def with_envelope(cmd: Json, **fields: Any) -> Json:
    cmd.update(fields)
    return cmd


def _some(**fields: Any) -> Json:
    """The given fields without the ones left as None (absent from the payload)."""
    return {key: value for key, value in fields.items() if value is not None}


# Campaigns ---------------------------------------------------------------------------------

def campaign_fields(campaign_id: str = MANUAL) -> Json:
    """A realistic manual LIVE campaign: requirements, two levels, duplicates allowed."""
    return {
        "campaign_id": campaign_id,
        "name": "11.11 Mega LIVE Sale",
        "kind": "live",
        "review_mode": "manual",
        "registration_opens_at": iso(REG_OPENS.astimezone(BANGKOK)),
        "registration_closes_at": iso(REG_CLOSES.astimezone(BANGKOK)),
        "starts_at": iso(STARTS.astimezone(BANGKOK)),
        "ends_at": iso(ENDS),
        "requirements": {"min_account_level": 2, "min_livestream_level": 1,
                         "categories": ["fashion", "beauty"]},
        "levels": [
            {"code": "standard", "name": "Standard", "benefits": ["campaign badge"],
             "min_livestream_level": 1},
            {"code": "star", "name": "Star seller", "benefits": ["homepage banner", "vouchers"],
             "min_livestream_level": 4},
        ],
        "allow_duplicates": True,
        "max_sessions": 100,
    }


def auto_campaign_fields(campaign_id: str = AUTO) -> Json:
    """A short-video campaign the system decides at once, from the seller's profile."""
    fields = campaign_fields(campaign_id)
    fields.update(name="Flash short-video week", kind="short_video", review_mode="auto",
                  levels=[], allow_duplicates=False,
                  requirements={"min_account_level": 3, "min_livestream_level": 2,
                                "categories": []})
    return fields


def create_campaign(campaign_id: str = MANUAL, *, actor: Json = OPERATOR,
                    expected_version: int | None = None, **overrides: Any) -> Json:
    payload = {**campaign_fields(campaign_id), **overrides}
    return command("create_campaign", actor, payload, expected_version=expected_version)


def live_calendar(now: datetime | None = None, *, live_days: int = 1) -> Json:
    """The calendar of a campaign open for registration now, for code on the real clock
    (a service, a dashboard): registration from a day ago to a day ahead, LIVE from two
    days ahead for `live_days` days."""
    now = now or datetime.now(UTC)
    day = timedelta(days=1)
    return {"registration_opens_at": iso(now - day), "registration_closes_at": iso(now + day),
            "starts_at": iso(now + 2 * day), "ends_at": iso(now + (2 + live_days) * day)}


def create_auto_campaign(campaign_id: str = AUTO, **overrides: Any) -> Json:
    return command("create_campaign", OPERATOR, {**auto_campaign_fields(campaign_id), **overrides})


def expire_campaign(campaign_id: str = MANUAL, *, actor: Json = OPERATOR,
                    expected_version: int | None = None) -> Json:
    return command("expire_campaign", actor, {"campaign_id": campaign_id},
                   expected_version=expected_version)


# Registrations -----------------------------------------------------------------------------

def profile(account_level: int = 5, livestream_level: int = 5) -> Json:
    return {"account_level": account_level, "livestream_level": livestream_level}


def register(campaign_id: str = MANUAL, *, seller_id: str = SELLER, account_id: str = ACCOUNT,
             main_category: str = "fashion", level: str | None = "standard",
             sessions: list[Json] | None = None, profile_: Json | None = None,
             actor: Json | None = None, **overrides: Any) -> Json:
    payload = _some(campaign_id=campaign_id, seller_id=seller_id, account_id=account_id,
                    main_category=main_category, level=level, profile=profile_ or profile(),
                    sessions=[slot(0), slot(2)] if sessions is None else sessions)
    return command("register", actor or seller(seller_id), {**payload, **overrides})


def register_auto(campaign_id: str = AUTO, **kwargs: Any) -> Json:
    return register(campaign_id, level=None, sessions=[], **kwargs)


def add_session(registration_id: str, window: Json, *, seller_id: str = SELLER,
                expected_version: int | None = None) -> Json:
    return command("add_session", seller(seller_id),
                   {"registration_id": registration_id, **window},
                   expected_version=expected_version)


def duplicate(registration_id: str, session_id: str, window: Json, *,
              seller_id: str = SELLER) -> Json:
    return command("duplicate", seller(seller_id),
                   {"registration_id": registration_id, "session_id": session_id, **window})


def withdraw(registration_id: str, session_ids: list[str] | None = None, *,
             seller_id: str = SELLER, reason: str | None = "schedule changed") -> Json:
    return command("withdraw", seller(seller_id), _some(
        registration_id=registration_id, session_ids=session_ids, reason=reason))


def approve(registration_id: str, session_ids: list[str] | None = None, *,
            override_reason: str | None = None, note: str | None = None,
            actor: Json = REVIEWER, expected_version: int | None = None) -> Json:
    return command("approve", actor, _some(
        registration_id=registration_id, session_ids=session_ids, note=note,
        override_reason=override_reason), expected_version=expected_version)


def reject(registration_id: str, session_ids: list[str] | None = None, *,
           reasons: list[str] | None = None, note: str | None = None,
           actor: Json = REVIEWER) -> Json:
    return command("reject", actor, _some(
        registration_id=registration_id, session_ids=session_ids, note=note,
        reasons=["policy_violation"] if reasons is None else reasons))


def record_performance(registration_id: str, *, report_id: str = "report-1",
                       period: tuple[datetime, datetime] = (STARTS, STARTS + hours(2)),
                       actor: Json = SYSTEM, **overrides: Any) -> Json:
    payload = {
        "registration_id": registration_id,
        "report_id": report_id,
        "period_start": iso(period[0]),
        "period_end": iso(period[1]),
        "currency": "THB",
        "gmv": "125000.50",
        "orders": 412,
        "items_sold": 530,
        "buyers": 390,
        "views": 18200,
        "refunds": "1520.00",
    }
    return command("record_performance", actor, {**payload, **overrides})


# The store ---------------------------------------------------------------------------------

Dump = dict[str, list[tuple[Any, ...]]]


def dump_store(url: str) -> Dump:
    """Every row of every table of the store (events, snapshots, commands, index), sorted."""
    if url.startswith("sqlite:"):
        return _dump_sqlite(url.removeprefix("sqlite:///"))
    return _dump_postgres(url)


def _dump_sqlite(path: str) -> Dump:
    with closing(sqlite3.connect(path)) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
                for t in tables}


def _dump_postgres(url: str) -> Dump:
    parts = urlsplit(url)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(urlunsplit(parts._replace(query=""))) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema=%s "
            "ORDER BY table_name", (schema,))]
        return {t: sorted(conn.execute(sql.SQL("SELECT * FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(t))).fetchall(), key=repr)
                for t in tables}


def event_tables(url: str) -> tuple[str, str]:
    """The names of the events and snapshots tables on this backend."""
    if url.startswith("sqlite:"):
        return "stored_events", "stored_snapshots"
    return "ledger_events", "ledger_snapshots"


@dataclass
class World:
    """A ledger on a real store, its clock, and assertions about what a command did."""

    ledger: Ledger
    url: str
    clock: FixedClock

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)

    def dump(self) -> Dump:
        return dump_store(self.url)

    def accept(self, cmd: Json | str | bytes) -> Json:
        result = self.ledger.send(cmd)
        assert result["ok"] is True, result
        assert result["replayed"] is False, result
        return result

    def refuse(self, cmd: Json | str | bytes, code: str) -> Json:
        """Send `cmd`, expect refusal with `code`, and that the store is exactly as it was."""
        before = dump_store(self.url)
        result = self.ledger.send(cmd)
        assert result["ok"] is False, result
        assert result["error"]["code"] == code, result
        assert set(result) == {"ok", "command_id", "error"}
        assert set(result["error"]) == {"code", "message", "details"}
        assert dump_store(self.url) == before, "a refused command wrote to the store"
        return result

    def register(self, cmd: Json | None = None) -> str:
        """Register (the default manual registration) and return the registration id."""
        return str(self.accept(cmd or register())["aggregate_id"])

    def event_names(self, public_id: str) -> list[str]:
        return [type(e).__name__ for e in self.ledger.events_of(public_id)]

    def session_statuses(self, registration_id: str) -> dict[str, str]:
        reg = self.ledger.registration(registration_id)
        return {sid: s.status for sid, s in reg.sessions.items()}
