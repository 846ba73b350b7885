"""Dramatiq, Celery and procrastinate, each on the same table, fake provider and timing rules.

Setup (not measured): a fresh database with `bench_deliveries` holding one row per SMS, already
rendered as prasso would render it, and one job per row queued on the peer's broker. Measured: the
peer's worker command, from its start until no row is left `queued`; it is then stopped with
SIGTERM (none of them has a stop-when-empty mode but procrastinate's `--one-shot`).
"""

from __future__ import annotations

import sys

from bench.context import (
    BIN,
    REDIS_URL,
    STATUS_CALLBACK,
    TWILIO_FROM,
    TWILIO_SID,
    TWILIO_TOKEN,
    Bench,
    base_env,
)
from bench.measure import Target, measure
from bench.prasso import phone
from bench.procs import Child, run
from bench.results import DeliveryRun

TABLE = """
CREATE TABLE bench_deliveries (
    id bigserial PRIMARY KEY, phone text, body text, status text, sid text
)
"""


def peer_env(bench: Bench, database_url: str) -> dict[str, str]:
    env = base_env()
    env.update(
        BENCH_PEER_DSN=database_url,
        BENCH_REDIS_URL=REDIS_URL,
        BENCH_TWILIO_URL=bench.fake.url,
        BENCH_TWILIO_SID=TWILIO_SID,
        BENCH_TWILIO_TOKEN=TWILIO_TOKEN,
        BENCH_TWILIO_FROM=TWILIO_FROM,
        BENCH_STATUS_CALLBACK=STATUS_CALLBACK,
        BENCH_PEER_CONCURRENCY=str(bench.options.procrastinate_concurrency),
    )
    return env


def fill(bench: Bench, database: str, items: int) -> None:
    with bench.cluster.connect(database) as conn, conn.cursor() as cursor:
        cursor.execute(TABLE)
        with cursor.copy("COPY bench_deliveries (phone, body, status) FROM STDIN") as copy:
            for i in range(items):
                copy.write_row((phone(i), f"Hi G{i}, doors open at 7.", "queued"))


def worker_commands(bench: Bench, peer: str) -> list[list[str]]:
    """Each peer's worker command lines: Dramatiq and Celery run one command that forks its
    processes; procrastinate has no multi-process mode, so it gets one command per process."""
    options = bench.options
    if peer == "dramatiq":
        return [
            [
                str(BIN / "dramatiq"), "bench.peers.dramatiq_app",
                "--processes", str(options.peer_processes),
                "--threads", str(options.dramatiq_threads), "--queues", "bench",
            ]
        ]  # fmt: skip
    if peer == "celery":
        return [
            [
                str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker",
                "--pool", "prefork", "--concurrency", str(options.celery_concurrency),
                "--queues", "bench", "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]
        ]  # fmt: skip
    if peer == "procrastinate":
        argv = [
            str(BIN / "procrastinate"), "--app", "bench.peers.procrastinate_app.app",
            "--log-level", "warning", "worker", "--queues", "bench", "--one-shot",
            "--concurrency", str(options.procrastinate_concurrency),
        ]  # fmt: skip
        return [argv for _ in range(options.peer_processes)]
    raise ValueError(peer)


def deliveries(bench: Bench, peer: str, round_: int) -> DeliveryRun:
    items = bench.options.sms
    database = f"{peer}_r{round_}"
    url = bench.cluster.create_database(database)
    env = peer_env(bench, url)
    try:
        bench.flush_redis()
        fill(bench, database, items)
        run([sys.executable, "-m", "bench.peers.enqueue", peer, "1", str(items)], env=env, cwd=bench.root)  # fmt: skip

        def start() -> list[Child]:
            return [
                bench.spawn(f"{peer}-{n}", argv, env=env, cwd=bench.root)
                for n, argv in enumerate(worker_commands(bench, peer))
            ]

        target = Target(
            database, "SELECT count(*) FROM bench_deliveries WHERE status = 'queued'", items
        )
        result, _ = measure(
            bench, peer, round_, target, start, stop_when_done=peer != "procrastinate"
        )
        with bench.cluster.connect(database) as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status = 'sent' AND left(sid, 2) = 'SM') FROM bench_deliveries"
            ).fetchone()
        sent = int(row[0]) if row else 0
        if sent != items:
            result.problems.append(f"{sent} of {items} rows sent")
        return result
    finally:
        bench.cluster.drop_database(database)
        bench.flush_redis()
