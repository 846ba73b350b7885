"""A private PostgreSQL 15 cluster for one bench invocation, and its statement counts.

Why a private cluster: `pg_stat_statements` must be preloaded (a server restart on a shared
server), `max_connections` must fit 2 workers x 100 connections plus the peers, and nothing else may
run statements on it while a run is measured. It lives in a temp dir, listens on a free loopback
port with trust auth, and is stopped and removed when the bench ends, however it ends.

Statements are counted by the server itself (`pg_stat_statements`, `track = all` so statements
run inside functions count too, `track_utility = on` so BEGIN/COMMIT/ROLLBACK count). The bench's
own queries (polling, resets, counts) run as the role `bench_monitor`, which the counts exclude.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from bench.net import free_port
from bench.procs import CLOCK_TICKS, run

PG_BIN = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
MONITOR = "bench_monitor"
TRANSACTION_CONTROL = r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END|ABORT)\y"  # \y: a word boundary in PostgreSQL regexes

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "300",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "pg_stat_statements.track_utility": "on",
    "pg_stat_statements.max": "10000",
    "log_min_messages": "warning",
}


@dataclass(frozen=True)
class Statements:
    """Statements the server executed in a measured phase (the bench's own excluded)."""

    all: int  # every statement, BEGIN/COMMIT/ROLLBACK and statements inside functions included
    without_transaction_control: int  # the same less BEGIN/COMMIT/ROLLBACK
    top_level: int  # only those sent by clients (not run inside a function)
    evicted: bool  # pg_stat_statements dropped entries: the counts are too low
    busiest: list[tuple[int, bool, str]] = field(default_factory=list)  # calls, top level, query

    def describe(self, items: int) -> str:
        """The statements that were run most, per item: where a statement count comes from."""
        return "\n".join(
            f"  {calls / items:8.3f}/item {'client' if top else 'nested'}  {query}"
            for calls, top, query in self.busiest
        )


class Cluster:
    """`initdb` + `pg_ctl start` in a temp dir; `close()` stops it and removes the dir."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="prasso-bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        self.started = False
        self.version = ""

    def _pg(self, tool: str, *args: str) -> str:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return run([*prefix, str(PG_BIN / tool), *args], cwd=self.root)

    def start(self) -> Cluster:
        if self.as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._pg(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# prasso bench\n")
            conf.write(f"port = {self.port}\nunix_socket_directories = '{self.root}'\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")  # fmt: skip
        self.started = True
        with self.connect("postgres", user="postgres") as conn:
            conn.execute(f"CREATE ROLE {MONITOR} LOGIN SUPERUSER")
            conn.execute("CREATE EXTENSION pg_stat_statements")
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        return self

    def close(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        """The URL the systems under test use (role `postgres`, counted)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str, *, user: str = MONITOR) -> psycopg.Connection:
        """An autocommit connection, as the uncounted monitor role unless told otherwise."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=user, dbname=database, autocommit=True
        )

    def create_database(self, name: str) -> str:
        with self.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" OWNER postgres')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settle(self, database: str) -> None:
        """Before a measured phase: fresh planner statistics and no checkpoint pending."""
        with self.connect(database) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")

    def cpu_seconds(self) -> float:
        """CPU time of the whole server so far: the postmaster, the processes it has reaped
        (closed connections' backends) and the ones still running (open backends, background
        workers). The difference over a phase is what the phase cost the database."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        total = 0.0
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(postmaster).children():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    total += sum(_stat_ticks(child.pid)[:2]) / CLOCK_TICKS
        return total + sum(_stat_ticks(postmaster)) / CLOCK_TICKS

    def reset_statements(self) -> None:
        with self.connect("postgres") as conn:
            conn.execute("SELECT pg_stat_statements_reset()")

    def statements(self) -> Statements:
        with self.connect("postgres") as conn:
            row = conn.execute(
                f"""
                SELECT coalesce(sum(calls), 0),
                       coalesce(sum(calls) FILTER (WHERE query !~* %(tx)s), 0),
                       coalesce(sum(calls) FILTER (WHERE toplevel), 0),
                       (SELECT dealloc FROM pg_stat_statements_info)
                FROM pg_stat_statements
                WHERE userid <> '{MONITOR}'::regrole
                """,
                {"tx": TRANSACTION_CONTROL},
            ).fetchone()
            busiest = conn.execute(
                f"""
                SELECT calls, toplevel, regexp_replace(query, '\\s+', ' ', 'g')
                FROM pg_stat_statements WHERE userid <> '{MONITOR}'::regrole
                ORDER BY calls DESC LIMIT 12
                """
            ).fetchall()
        assert row is not None
        top = [(int(c), bool(t), str(q)[:140]) for c, t, q in busiest]
        return Statements(int(row[0]), int(row[1]), int(row[2]), bool(row[3]), top)


def _stat_ticks(pid: int) -> list[int]:
    """utime, stime, cutime, cstime of a process, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [int(value) for value in fields[11:15]]
