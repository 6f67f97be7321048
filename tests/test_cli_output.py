"""What the CLI writes: CSV that a spreadsheet cannot run, and output it cannot write
(a full disk, a closed pipe) told as what it is, in one line, never as the store's fault."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.cli import main
from tests.support.helpers import AUTO, NOW, World, approve, register, register_auto

FORMULAS = ["=HYPERLINK(\"https://evil.example\",\"win\")", "+1+2", "-1+cmd|' /C calc'!A0",
            "@SUM(A1:A9)", "\tfashion", "\rfashion"]


def cli(world: World, *args: str) -> Any:
    return CliRunner().invoke(main, ["--db", world.url, "--now", NOW.isoformat(), *args])


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


@pytest.fixture
def hostile(world: World, manual_campaign: str, auto_campaign: str) -> World:
    """Sellers whose category (auto campaign: any allowed) or decision note starts a formula."""
    for n, formula in enumerate(FORMULAS):
        world.register(register_auto(AUTO, seller_id=f"cat-{n}", account_id=f"shop-cat-{n}",
                                     main_category=formula))
        registration = world.register(register(seller_id=f"note-{n}", account_id=f"shop-n-{n}"))
        world.accept(approve(registration, note=formula))
    assert cli(world, "projections", "catch-up").exit_code == 0
    return world


def test_csv_export_puts_a_quote_before_each_cell_a_spreadsheet_would_run(hostile: World):
    result = cli(hostile, "export", "manage_registrations", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = csv_rows(result.stdout_bytes)
    categories = {r["seller_id"]: r["main_category"] for r in rows}
    notes = {r["seller_id"]: r["last_note"] for r in rows}
    for n, formula in enumerate(FORMULAS):
        assert categories[f"cat-{n}"] == "'" + formula
        assert notes[f"note-{n}"] == "'" + formula
        assert categories[f"note-{n}"] == "fashion"  # anything else is left as it is


def test_audit_decisions_csv_neutralises_notes_the_same_way(hostile: World):
    result = cli(hostile, "audit", "decisions", "--format", "csv")
    assert result.exit_code == 0, result.output
    notes = {r["seller_id"]: r["note"] for r in csv_rows(result.stdout_bytes)}
    assert {notes[f"note-{n}"] for n in range(len(FORMULAS))} == {"'" + f for f in FORMULAS}
    assert notes["cat-0"] == ""  # the system's approval has no note


def test_json_lines_exports_stay_verbatim(hostile: World):
    result = cli(hostile, "export", "manage_registrations", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout_bytes.decode().split("\n") if line]
    categories = {r["seller_id"]: r["main_category"] for r in rows}
    assert [categories[f"cat-{n}"] for n in range(len(FORMULAS))] == FORMULAS


def test_an_export_to_a_full_disk_is_one_line_naming_the_file(world: World, manual_campaign):
    # --fresh: a read model behind the store would add its warning line.
    result = cli(world, "export", "manage_campaigns", "--fresh", "--out", "/dev/full")
    assert result.exit_code == 2
    assert result.output == ("Error: cannot write to /dev/full (No space left on device): "
                             "the file is incomplete\n")


def ledger_process(world: World, *args: str, stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", "--db", world.url, *args],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)


def test_a_query_printing_to_a_full_disk_does_not_blame_the_store(world: World, manual_campaign):
    with open("/dev/full", "wb") as full:
        result = ledger_process(world, "campaigns", "--json", "--fresh", stdout=full.fileno())
    assert result.returncode == 2
    assert result.stderr == "Error: cannot write the output (No space left on device)\n"


def test_an_export_whose_reader_closed_the_pipe_stops_with_one_line(world: World,
                                                                    manual_campaign):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first row
    try:
        result = ledger_process(world, "export", "manage_campaigns", "--fresh",
                                stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 2
    assert result.stderr == "Error: cannot write the output (its reader closed the pipe)\n"
