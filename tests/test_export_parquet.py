"""Parquet exports and `ledger sql`, on both backends, over a store with a season in it:
the sums in the files equal the read models' (exact decimals), the event log is exported
incrementally with every event exactly once (also after `kill -9`), the types are right."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from ledger import FixedClock, Ledger
from ledger.cli import main
from ledger.exports.eventlog import STATE, committed_files
from ledger.projections.registry import projector
from tests.conftest import NewUrl
from tests.support.helpers import NOW, create_campaign, record_performance
from tests.support.scenarios import Player, season

MONEY = pa.decimal128(38, 6)
UTC_TIME = pa.timestamp("us", tz="UTC")
Sums = dict[tuple[str, ...], list[Any]]


@pytest.fixture
def played(new_url: NewUrl) -> Iterator[tuple[str, Player]]:
    """A fresh store with a season in it (every command kind, THB and USD reports)."""
    url = new_url()
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        player = season(ledger, ledger.clock)  # type: ignore[arg-type]
        yield url, player


def cli(url: str, *args: str) -> Result:
    result = CliRunner().invoke(main, ["--db", url, *args])
    assert result.exit_code == 0, result.output
    return result


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    return rows


def event_rows(folder: Path) -> list[dict[str, Any]]:
    """Every exported event row, from the files the state covers."""
    return [row for path in committed_files(folder / "events") for row in read_rows(path)]


def summed(rows: list[dict[str, Any]], keys: tuple[str, ...],
           measures: tuple[str, ...] = ("gmv", "refunds", "orders")) -> Sums:
    sums: Sums = defaultdict(lambda: [0] * len(measures))
    for row in rows:
        cell = sums[tuple(row[k] for k in keys)]
        for i, m in enumerate(measures):
            cell[i] += row[m]
    return dict(sums)


def reports(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PerformanceRecorded rows with their seller (from the registration's Registered)."""
    sellers = {r["aggregate_id"]: r["seller_id"] for r in rows if r["event_type"] == "Registered"}
    return [{**r, "seller_id": sellers[r["aggregate_id"]]} for r in rows
            if r["event_type"] == "PerformanceRecorded"]


def test_sums_over_the_parquet_exports_equal_the_read_models(played: tuple[str, Player],
                                                             tmp_path: Path) -> None:
    url, _ = played
    out = tmp_path / "export"
    cli(url, "export", "all", "--format", "parquet", "--output", str(out), "--fresh")
    with Ledger.open(url, pool_size=1) as ledger:
        view = projector(ledger.app).view
        live_days = view.query(f"SELECT * FROM {view.dialect.q('rm_cp_days')}")
        live_sellers = view.query(f"SELECT * FROM {view.dialect.q('rm_cp_sellers')}")
        live_months = view.query(f"SELECT * FROM {view.dialect.q('rm_ytd_months')}")

    def exact(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "gmv": Decimal(r["gmv"]), "refunds": Decimal(r["refunds"])} for r in rows]

    per_campaign = summed(exact(live_days), ("campaign_id", "currency"))
    per_seller = summed(exact(live_sellers), ("campaign_id", "seller_id", "currency"))
    ytd = summed(exact(live_months), ("seller_id", "currency"))
    assert per_campaign
    assert per_seller
    assert ytd
    assert {k[1] for k in per_campaign} == {"THB", "USD"}

    # The read models' own tables, as exported.
    folder = out / "campaign_performance"
    assert summed(read_rows(folder / "cp_days.parquet"), ("campaign_id", "currency")) == \
        per_campaign
    assert summed(read_rows(folder / "cp_sellers.parquet"),
                  ("campaign_id", "seller_id", "currency")) == per_seller
    assert summed(read_rows(out / "ytd_performance" / "ytd_months.parquet"),
                  ("seller_id", "currency")) == ytd
    # The event log, summed report by report.
    performed = reports(event_rows(out))
    assert summed(performed, ("campaign_id", "currency")) == per_campaign
    assert summed(performed, ("campaign_id", "seller_id", "currency")) == per_seller
    assert summed(performed, ("seller_id", "currency")) == ytd


def test_ledger_sql_answers_over_the_exports(played: tuple[str, Player],
                                             tmp_path: Path) -> None:
    url, _ = played
    out = tmp_path / "export"
    cli(url, "export", "all", "--format", "parquet", "--output", str(out), "--fresh")
    query = ("SELECT campaign, currency, sum(gmv) AS gmv, sum(orders) AS orders, "
             "count(*) AS reports FROM events WHERE event_type = 'PerformanceRecorded' "
             "GROUP BY ALL ORDER BY ALL")
    answer = cli(url, "sql", query, "--export-dir", str(out), "--json")
    from_events = [json.loads(line) for line in answer.stdout.splitlines()]
    answer = cli(url, "sql", "SELECT campaign_id AS campaign, currency, sum(gmv) AS gmv, "
                 "sum(orders) AS orders, sum(reports) AS reports FROM campaign_performance."
                 "cp_days GROUP BY ALL ORDER BY ALL", "--export-dir", str(out), "--json")
    from_read_model = [json.loads(line) for line in answer.stdout.splitlines()]
    assert from_events == from_read_model
    assert len(from_events) >= 4
    assert all(Decimal(row["gmv"]) > 0 for row in from_events)
    table = cli(url, "sql", "SELECT count(*) AS n FROM events", "--export-dir", str(out))
    with Ledger.open(url, pool_size=1) as ledger:
        head = ledger.app.recorder.max_notification_id()
    assert table.stdout.split() == ["n", str(head)]


def test_exported_columns_have_exact_types(played: tuple[str, Player], tmp_path: Path) -> None:
    url, _ = played
    out = tmp_path / "export"
    cli(url, "export", "all", "--format", "parquet", "--output", str(out), "--fresh")
    events = pq.read_schema(committed_files(out / "events")[0])
    assert events.field("gmv").type == MONEY
    assert events.field("refunds").type == MONEY
    assert events.field("recorded_at").type == UTC_TIME
    assert events.field("period_start").type == UTC_TIME
    assert events.field("aggregate_id").type == pa.string()
    assert events.field("session_ids").type == pa.list_(pa.string())
    days = pq.read_schema(out / "campaign_performance" / "cp_days.parquet")
    assert days.field("gmv").type == MONEY
    assert days.metadata[b"ledger.read_model"] == b"campaign_performance"
    decisions = pq.read_schema(out / "review_decisions" / "review_decisions.parquet")
    assert decisions.field("decided_at").type == UTC_TIME
    # The values themselves: exact, and instants kept as instants.
    rows = reports(event_rows(out))
    with Ledger.open(url, pool_size=1) as ledger:
        first = rows[0]
        stored = next(e for e in ledger.events_of(first["aggregate_id"])
                      if e.originator_version == first["version"])
    assert first["gmv"] == stored.gmv
    assert first["refunds"] == stored.refunds
    assert first["period_start"] == stored.period_start
    assert first["recorded_at"] == stored.timestamp
    assert first["recorded_at"].utcoffset() is not None


def test_events_are_exported_incrementally_each_exactly_once(
        played: tuple[str, Player], tmp_path: Path) -> None:
    url, player = played
    out = tmp_path / "export"
    first = cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    assert "exported (positions 1 to" in first.stderr
    again = cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    assert "nothing new since position" in again.stderr
    files = committed_files(out / "events")
    for round_ in range(2):
        sent = more_commands(player, round_)
        assert sent > 0
        cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    assert len(committed_files(out / "events")) > len(files)
    assert_exactly_once(url, out)
    campaigns = {p.parent.name for p in committed_files(out / "events")}
    assert "campaign=extra-0" in campaigns
    assert "campaign=c0" in campaigns


def more_commands(player: Player, round_: int) -> int:
    """A new campaign and more performance reports: events in new and old partitions."""
    ledger = player.ledger
    accepted = int(ledger.send(create_campaign(f"extra-{round_}"))["ok"])
    for n, reg_id in enumerate(list(player.registrations)[:6]):
        result = ledger.send(record_performance(reg_id, report_id=f"more-{round_}-{n}",
                                                gmv=f"{n}.25"))
        accepted += bool(result["ok"])
    return accepted


def assert_exactly_once(url: str, out: Path) -> None:
    with Ledger.open(url, pool_size=1) as ledger:
        head = ledger.app.recorder.max_notification_id()
    positions = sorted(row["position"] for row in event_rows(out))
    assert positions == list(range(1, (head or 0) + 1))
    state = json.loads((out / "events" / "market=default" / STATE).read_text())
    assert state["position"] == head
    leftovers = [p for p in (out / "events").rglob("*")
                 if p.is_file() and p.suffix not in (".parquet", ".json") and p.name != ".lock"]
    assert leftovers == []
    assert set((out / "events").rglob("*.parquet")) == set(committed_files(out / "events"))


def test_a_killed_export_loses_nothing_and_repeats_nothing(played: tuple[str, Player],
                                                          tmp_path: Path) -> None:
    url, _ = played
    out = tmp_path / "export"
    state = out / "events" / "market=default" / STATE
    rng = random.Random(17)
    killed_midway = 0
    for _ in range(4):
        before = json.loads(state.read_text())["position"] if state.exists() else 0
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "--db", url, "export", "events", "--format",
             "parquet", "--output", str(out), "--commit-every", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if state.exists() and json.loads(state.read_text())["position"] > before:
                break  # it has committed once: kill it somewhere in what follows
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.15))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed_midway += 1
        process.wait(timeout=30)
    assert killed_midway >= 2, "the export finished before it could be killed"
    # Between a kill and the next run, readers of the state's files see each event once.
    positions = [row["position"] for row in event_rows(out)]
    assert len(positions) == len(set(positions))
    cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    assert_exactly_once(url, out)


def test_parquet_without_pyarrow_names_the_extra_to_install(tmp_path: Path) -> None:
    blocked = ("import sys; sys.modules['pyarrow'] = None; sys.argv[0] = 'ledger'; "
               "from ledger.cli import main; main()")
    done = subprocess.run(
        [sys.executable, "-c", blocked, "--db", f"sqlite:///{tmp_path / 'x.db'}", "export",
         "all", "--format", "parquet", "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("Error: --format parquet needs pyarrow, which is not "
                                   "installed: pip install 'ledger[parquet]'")
    assert not (tmp_path / "out").exists()


def test_sql_without_exports_says_what_to_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sql", "SELECT 1", "--export-dir",
                                       str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "ledger export all --format parquet" in result.stderr
    assert "Traceback" not in result.output


def test_one_table_into_a_file_and_unknown_names_refused(played: tuple[str, Player],
                                                         tmp_path: Path) -> None:
    url, _ = played
    target = tmp_path / "sellers.parquet"
    cli(url, "export", "cp_sellers", "--format", "parquet", "--output", str(target), "--fresh")
    assert pq.read_schema(target).field("gmv").type == MONEY
    assert len(read_rows(target)) > 0
    refused = CliRunner().invoke(main, ["--db", url, "export", "nope", "--format", "parquet",
                                        "--output", str(tmp_path)])
    assert refused.exit_code == 2
    assert "unknown export 'nope'" in refused.stderr
    several = CliRunner().invoke(main, ["--db", url, "export", "campaign_performance",
                                        "--format", "parquet", "--output", str(target)])
    assert several.exit_code == 2
    assert "holds one table" in several.stderr


def test_a_second_export_into_the_same_folder_is_refused_in_one_line(
        played: tuple[str, Player], tmp_path: Path) -> None:
    import fcntl

    url, _ = played
    out = tmp_path / "export"
    market = out / "events" / "market=default"
    market.mkdir(parents=True)
    with open(market / ".lock", "a+") as held:  # as a running export holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = CliRunner().invoke(main, ["--db", url, "export", "events", "--format",
                                         "parquet", "--output", str(out)])
    assert busy.exit_code == 2
    assert busy.stderr.strip() == (f"Error: another export is writing into {market}; wait "
                                   "for it to finish")
    assert not (market / STATE).exists()
    cli(url, "export", "events", "--format", "parquet", "--output", str(out))  # free again
    assert_exactly_once(url, out)


def test_an_export_folder_ahead_of_the_store_is_refused(played: tuple[str, Player],
                                                        new_url: NewUrl, tmp_path: Path) -> None:
    url, _ = played
    out = tmp_path / "export"
    cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    other = new_url()  # an empty store (as after `ledger demo --reset`)
    refused = CliRunner().invoke(main, ["--db", other, "export", "events", "--format",
                                        "parquet", "--output", str(out)])
    assert refused.exit_code == 2
    assert "export into a new folder" in refused.stderr
    assert_exactly_once(url, out)  # untouched


def test_sql_without_duckdb_names_the_extra_to_install(tmp_path: Path) -> None:
    blocked = ("import sys; sys.modules['duckdb'] = None; sys.argv[0] = 'ledger'; "
               "from ledger.cli import main; main()")
    done = subprocess.run([sys.executable, "-c", blocked, "sql", "SELECT 1", "--export-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("Error: ledger sql needs duckdb, which is not installed: "
                                   "pip install 'ledger[analytics]'")


def test_an_event_of_a_type_this_version_does_not_know_is_exported_in_other(
        played: tuple[str, Player], tmp_path: Path) -> None:
    from eventsourcing.persistence import StoredEvent

    url, player = played
    reg_id = next(iter(player.registrations))
    with Ledger.open(url, pool_size=1) as ledger:
        last = ledger.app.recorder.select_events(UUID(reg_id), desc=True, limit=1)[0]
        ledger.app.recorder.insert_events([StoredEvent(
            last.originator_id, last.originator_version + 1,
            "ledger.aggregates.registration_events:RefundedLater", last.state)])
    out = tmp_path / "export"
    cli(url, "export", "events", "--format", "parquet", "--output", str(out))
    rows = [r for r in event_rows(out) if r["event_type"] == "RefundedLater"]
    assert len(rows) == 1
    assert rows[0]["aggregate_id"] == reg_id
    assert rows[0]["campaign_id"] is not None
    assert rows[0]["recorded_at"].utcoffset() is not None
    assert json.loads(rows[0]["other"])  # its fields, as JSON
    assert_exactly_once(url, out)
