"""Disk full and read-only databases (issue 6).

SQLite on a tiny tmpfs filled up, a writer whose file-size limit (RLIMIT_FSIZE) is
reached, SQLite on a file system remounted read-only; PostgreSQL in read-only mode
(`default_transaction_read_only`, as a standby is) and out of space (its database in a
tablespace on a tiny tmpfs). Each gives one line naming the cause, nothing is
half-written (the hash chains verify, every command row has its events, the store is
exactly as before the failing command), and once space or write access returns the same
command (same command_id) goes through.

The mounts need root (CI runs as root); without it those cases skip and say so.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest
from psycopg import sql

from ledger import FixedClock, Ledger
from ledger.aggregates.base import registration_uuid
from ledger.errors import GroupUnavailable, NotFound, StoreUnavailable
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.reliability.test_crash_writes import assert_whole
from tests.reliability.test_outage import registration
from tests.support.helpers import NOW, Json, create_campaign, dump_store
from tests.support.servers import servers

CAMPAIGN = "outage-live"  # the campaign `registration()` registers for
SAFE = "sending the same command_id again is safe"
SEND_SAFE = "no command was run, sending them again is safe"  # `ledger send`: a whole input


# Mounts ------------------------------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (skip if this user may not mount)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if run("umount", str(where)).returncode != 0:
            run("umount", "-l", str(where))
        with suppress(OSError):
            where.rmdir()


def remount(where: Path, options: str) -> None:
    done = run("mount", "-o", f"remount,{options}", str(where))
    assert done.returncode == 0, done.stderr


def fill(folder: Path, leave: int) -> Path:
    """A filler file taking all but `leave` bytes of the file system."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def cli(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(),
                           *args], input=stdin, capture_output=True, text=True, timeout=120)


def one_line(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("Error: store unavailable: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_read_only(url: str, cmd: Json, send: Callable[[], object]) -> None:
    """The command is refused in process and by `ledger send`, in one line saying the
    database is read-only."""
    with pytest.raises(StoreUnavailable) as raised:
        send()
    message = str(raised.value)
    assert message.startswith("store unavailable: the database is read-only"), message
    sent = cli(url, "send", "-", stdin=json.dumps(cmd))
    assert sent.returncode == 2, sent.stderr
    one_line(sent.stderr, "read-only")


def send_until_refused(ledger: Ledger, url: str, prefix: str, limit: int = 5000, *,
                       dump: bool = True) -> tuple[Json, str, Any]:
    """Send registrations until the store refuses one: (that command, the error, the dump
    of the store just before it, if `dump`)."""
    for n in range(limit):
        cmd = registration(n, prefix)
        before = dump_store(url) if dump else None
        try:
            result = ledger.send(cmd)
        except StoreUnavailable as e:
            return cmd, str(e), before
        assert result["ok"], result
    pytest.fail(f"{limit} commands and the store never filled up")


def assert_clean(url: str) -> None:
    """Hash chains verify, every command row has its events (and no event lacks one)."""
    verified = cli(url, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert_whole(url, ledger)


# SQLite ------------------------------------------------------------------------------------------

def test_sqlite_disk_full_then_freed(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "2m") as folder:
        url = f"sqlite:///{folder / 'ledger.db'}"
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            assert ledger.send(create_campaign(CAMPAIGN))["ok"]
            filler = fill(folder, 96 * 1024)
            cmd, message, before = send_until_refused(ledger, url, "full")
            assert message.startswith("store unavailable: the disk is full"), message
            assert SAFE in message
            assert dump_store(url) == before, "the failed command left something behind"
            sent = cli(url, "send", "-", stdin=json.dumps(cmd))
            assert sent.returncode == 2, sent.stderr
            one_line(sent.stderr, "disk is full", SEND_SAFE)
            assert dump_store(url) == before
            shown = cli(url, "show", "campaign", CAMPAIGN)  # reads still work
            assert shown.returncode == 0, shown.stderr

            filler.unlink()
            result = ledger.send(cmd)  # the same Ledger, the same command_id
            assert result["ok"], result
            assert result["replayed"] is False
        assert_clean(url)


def _limited_writer(limit: int) -> None:
    """In the child: a file-size limit, and a write past it fails (EFBIG), not a signal."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_sqlite_writer_past_its_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
        assert ledger.send(create_campaign(CAMPAIGN))["ok"]
    commands = [registration(n, "fsize") for n in range(400)]
    limit = path.stat().st_size + 64 * 1024
    writer = subprocess.run(  # groups of 10: several are stored before the disk fills
        [sys.executable, "-m", "ledger", "--db", url, "--now", NOW.isoformat(), "send",
         "--group-size", "10", "-"],
        input="".join(json.dumps(c) + "\n" for c in commands), capture_output=True, text=True,
        timeout=120, preexec_fn=lambda: _limited_writer(limit))
    assert writer.returncode == 2, writer.stderr
    line = one_line(writer.stderr, "disk is full", "stopped at line")
    printed = [json.loads(r) for r in writer.stdout.splitlines()]
    assert printed
    assert all(r["ok"] for r in printed)
    assert f"stopped at line {len(printed) + 1}:" in line
    assert_clean(url)
    # Without the limit, the same commands: the printed ones replay, the others go through.
    again = cli(url, "send", "-", stdin="".join(json.dumps(c) + "\n" for c in commands))
    assert again.returncode == 0, again.stderr
    resent = [json.loads(r) for r in again.stdout.splitlines()]
    assert [r["replayed"] for r in resent[:len(printed)]] == [True] * len(printed)
    assert not any(r["replayed"] for r in resent[len(printed):])
    assert_clean(url)


def test_sqlite_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "16m") as folder:
        url = f"sqlite:///{folder / 'ledger.db'}"
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            assert ledger.send(create_campaign(CAMPAIGN))["ok"]
            assert ledger.send(registration(0, "ro"))["ok"]
        # (A file system with files open for writing cannot be remounted read-only.)
        before = dump_store(url)
        cmd = registration(1, "ro")
        remount(folder, "ro")
        try:
            def send() -> None:
                with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
                    ledger.send(cmd)

            assert_read_only(url, cmd, send)
            # Reads work: the file is opened read-only, without a -shm beside it.
            shown = cli(url, "show", "campaign", CAMPAIGN)
            assert shown.returncode == 0, shown.stderr
        finally:
            remount(folder, "rw")
        assert dump_store(url) == before
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            result = ledger.send(cmd)
            assert result["ok"], result
            assert result["replayed"] is False
        assert_clean(url)


# PostgreSQL --------------------------------------------------------------------------------------

Admin = psycopg.Connection[tuple[Any, ...]]


def _admin() -> Admin:
    if SKIP_POSTGRES:
        pytest.skip("LEDGER_TEST_SKIP_POSTGRES=1")
    return psycopg.connect(POSTGRES_URL, autocommit=True)


def _url(name: str, server: str = POSTGRES_URL) -> str:
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}", query="schema=public"))


def terminate(admin: Admin, name: str) -> None:
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


@contextmanager
def database(admin: Admin, tablespace: str | None = None) -> Iterator[str]:
    name = f"ledger_faults_{uuid4().hex[:10]}"
    admin.execute(sql.SQL("CREATE DATABASE {} {}").format(
        sql.Identifier(name),
        sql.SQL("TABLESPACE {}").format(sql.Identifier(tablespace)) if tablespace
        else sql.SQL("")))
    try:
        yield name
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only")
                      .format(sql.Identifier(name)))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                      .format(sql.Identifier(name)))


def read_only(admin: Admin, name: str, on: bool) -> None:
    admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
        sql.Identifier(name), sql.SQL("on" if on else "off")))
    terminate(admin, name)  # the setting holds for new connections


@pytest.mark.postgres
def test_postgres_read_only_then_writable() -> None:
    with _admin() as admin, database(admin) as name:
        url = _url(name)
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            assert ledger.send(create_campaign(CAMPAIGN))["ok"]
            before = dump_store(url)
            read_only(admin, name, True)
            try:
                cmd = registration(0, "pgro")
                assert_read_only(url, cmd, lambda: ledger.send(cmd))
                shown = cli(url, "show", "campaign", CAMPAIGN)  # a standby still reads
                assert shown.returncode == 0, shown.stderr
                assert dump_store(url) == before
            finally:
                read_only(admin, name, False)
            result = ledger.send(cmd)
            assert result["ok"], result
            assert result["replayed"] is False
        assert_clean(url)


@pytest.mark.postgres
def test_postgres_tablespace_full_then_freed(tmp_path: Path) -> None:
    """On a PostgreSQL server of the test's own: while a tablespace is full, the server's
    checkpoints fail, and with them every DROP DATABASE (which asks for one) of the tests
    running beside this one on a shared server."""
    if SKIP_POSTGRES:
        pytest.skip("LEDGER_TEST_SKIP_POSTGRES=1")
    # Under /tmp itself: the postgres user cannot enter pytest's private folders.
    with servers(1, "full") as (server,), \
            psycopg.connect(server.url(), autocommit=True) as admin, \
            tmpfs(Path(f"/tmp/ledger-pgspace-{uuid4().hex[:8]}"), "12m") as folder:
        postgres = pwd.getpwnam("postgres")
        location = folder / "ts"
        location.mkdir()
        os.chown(location, postgres.pw_uid, postgres.pw_gid)
        space = f"ledger_ts_{uuid4().hex[:8]}"
        admin.execute(sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
            sql.Identifier(space), sql.Literal(str(location))))
        try:
            with database(admin, space) as name:
                url = _url(name, server.url())
                plain = url.split("?")[0]
                with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
                    assert ledger.send(create_campaign(CAMPAIGN))["ok"]
                    with psycopg.connect(plain, autocommit=True) as conn:
                        conn.execute("CREATE TABLE filler (x text)")
                        with suppress(psycopg.errors.DiskFull):  # until the tablespace is full
                            for _ in range(1000):
                                conn.execute("INSERT INTO filler SELECT repeat(md5(random()"
                                             "::text), 40) FROM generate_series(1, 200)")
                            pytest.fail("the tablespace never filled up")
                    # No dumps while it is full: PostgreSQL may have to write a dirty buffer
                    # out to read anything, so even a SELECT can fail then. What the refused
                    # command left is checked once there is space again.
                    cmd, message, _ = send_until_refused(ledger, url, "pgfull", dump=False)
                    assert message.startswith("store unavailable: the disk is full"), message
                    assert SAFE in message
                    with psycopg.connect(plain, autocommit=True) as conn:
                        conn.execute("DROP TABLE filler")
                    with pytest.raises(NotFound):  # the refused registration was not stored
                        ledger.registration(str(registration_uuid(
                            cmd["payload"]["campaign_id"], cmd["payload"]["account_id"])))
                    assert_clean(url)  # every event has its command row, chains verify
                    result = ledger.send(cmd)
                    assert result["ok"], result
                    assert result["replayed"] is False
                assert_clean(url)
        finally:
            admin.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(space)))


@pytest.mark.postgres
def test_a_stream_of_groups_meeting_a_read_only_database_says_where_to_resend_from() -> None:
    """Issue 14: `send_many` commits its first group, then the database turns read-only.
    One line names the cause and the first command not done; resending from there goes
    through once it is writable, and resending everything replays what was stored."""
    commands = [registration(n, "pgro-group") for n in range(6)]

    def feed(admin: Admin, name: str) -> Iterator[Json]:
        for n, cmd in enumerate(commands):
            if n == 2:  # the first group (0, 1) is committed: the next one meets the fault
                read_only(admin, name, True)
            yield cmd

    with _admin() as admin, database(admin) as name:
        url = _url(name)
        with Ledger.open(url, clock=FixedClock(NOW), pool_size=1) as ledger:
            assert ledger.send(create_campaign(CAMPAIGN))["ok"]
            printed: list[Json] = []
            try:
                with pytest.raises(GroupUnavailable) as raised:
                    printed.extend(ledger.send_many(feed(admin, name), group_size=2))
                stored = dump_store(url)
            finally:
                read_only(admin, name, False)
            message = str(raised.value)
            assert message.startswith("store unavailable: the database is read-only"), message
            assert "the first 2 commands are done, resend from command 3" in message, message
            assert [r["ok"] for r in printed] == [True, True]
            assert len(stored["ledger_commands"]) == 3  # the campaign and the first group
            rest = list(ledger.send_many(commands[2:], group_size=2))
            assert [(r["ok"], r["replayed"]) for r in rest] == [(True, False)] * 4
            again = list(ledger.send_many(commands, group_size=4))
            assert [r["replayed"] for r in again] == [True] * 6
        assert_clean(url)
