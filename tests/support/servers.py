"""PostgreSQL servers of the tests' own: the benchmarks' helper (bench/common.py), which
starts them with the installed server's initdb and pg_ctl."""

from bench.common import PgServer as Server
from bench.common import pg_servers as servers

__all__ = ["Server", "servers"]
