"""The product itself, driven only through its public surface: the `prasso` CLI and the HTTP API.

Every run gets a fresh database on the private cluster and a fresh VAR_DIR, and every `prasso`
process gets the same environment (below), so the two queue drivers differ in QUEUE_CONNECTION
alone. Guests are written with COPY: the bench measures sending, not importing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.context import (
    BIN,
    REDIS_URL,
    TWILIO_FROM,
    TWILIO_SID,
    TWILIO_TOKEN,
    Bench,
    base_env,
)
from bench.measure import Target, measure
from bench.net import LOOPBACK, free_port, http_json, wait_for_port
from bench.procs import Child, run
from bench.results import DeliveryRun, FanOutRun, PacingRun, sliding_windows

PRASSO = str(BIN / "prasso")
BODY = "Hi {{FirstName}}, doors open at 7."
APP_KEY = ("bench-app-key-" + "0123456789abcdef" * 2)[:40]  # 40 characters
COPY_CHUNK = 50_000
# Area code 202 with exchanges 555, 556, ..., 999, 200, ..., 554: 8,000,000 distinct valid numbers.
EXCHANGES = [*range(555, 1000), *range(200, 555)]


def source_fingerprint() -> str:
    """A short hash of the installed product's files: the tree is edited while benches run, and
    a run whose workers started on other code than the run before it must say so."""
    spec = importlib.util.find_spec("prasso_messaging")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    root = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in {".py", ".html", ".ini", ".mako", ".sql"}:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def same_source(before: str) -> list[str]:
    after = source_fingerprint()
    return (
        []
        if after == before
        else [f"the product's source changed during the run ({before} -> {after})"]
    )


def phone(i: int) -> str:
    """The i-th guest's number, E.164, distinct and valid (+1202555xxxx for the first 10,000)."""
    return f"+1202{EXCHANGES[i // 10_000]}{i % 10_000:04d}"


@dataclass(frozen=True)
class Setup:
    """A migrated database with one SMS-verified team and its guests."""

    database: str
    env: dict[str, str]
    team_id: int
    token: str
    cwd: Path


def prasso_env(
    bench: Bench, database_url: str, queue: str, var_dir: Path, **extra: str
) -> dict[str, str]:
    env = base_env(bench_importable=False)
    env.update(
        DATABASE_URL=database_url,
        QUEUE_CONNECTION=queue,
        REDIS_URL=REDIS_URL,
        SMS_DRIVER="twilio",
        TWILIO_API_BASE=bench.fake.url,
        TWILIO_ACCOUNT_SID=TWILIO_SID,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TWILIO_PHONE_NUMBER=TWILIO_FROM,
        APP_KEY=APP_KEY,
        VAR_DIR=str(var_dir),
        LOG_LEVEL="WARNING",
        MESSAGING_BATCH_SIZE="100000",  # pacing on, but not binding
        MESSAGING_PER_GUEST_MONTHLY_CAP="1000000",  # caps on, but not binding
    )
    env.update(extra)
    return env


def setup(bench: Bench, name: str, queue: str, guests: int, **extra: str) -> Setup:
    """Fresh database, `db upgrade`, `teams create --sms-verified`, then the guests by COPY."""
    database = name.replace("-", "_")
    url = bench.cluster.create_database(database)
    cwd = bench.scratch(name)  # also the working directory: no stray .env is read
    env = prasso_env(bench, url, queue, cwd, **extra)
    run([PRASSO, "db", "upgrade"], env=env, cwd=cwd)
    team = json.loads(run([PRASSO, "teams", "create", "Bench", "--sms-verified", "--json"], env=env, cwd=cwd))  # fmt: skip
    insert_guests(bench, database, int(team["id"]), guests)
    return Setup(database, env, int(team["id"]), str(team["api_token"]), cwd)


def insert_guests(bench: Bench, database: str, team_id: int, count: int) -> None:
    now = datetime.now(UTC).isoformat()
    with bench.cluster.connect(database) as conn, conn.cursor() as cursor:
        sql = "COPY guests (team_id, first_name, phone, subscribed, created_at, updated_at) FROM STDIN"
        with cursor.copy(sql) as copy:
            for start in range(0, count, COPY_CHUNK):
                stop = min(count, start + COPY_CHUNK)
                copy.write(
                    "".join(
                        f"{team_id}\tG{i}\t{phone(i)}\tt\t{now}\t{now}\n"
                        for i in range(start, stop)
                    )
                )


def fan_out_cli(bench: Bench, ready: Setup, guests: int) -> None:
    """`prasso send --all-guests`: the deliveries and their jobs, before the clock starts."""
    answer = json.loads(
        run(
            [PRASSO, "send", "--team", str(ready.team_id), "--type", "sms", "--body", BODY, "--all-guests", "--json"],
            env=ready.env,
            cwd=ready.cwd,
        )
    )  # fmt: skip
    if answer.get("queued") != guests:
        raise RuntimeError(f"prasso send queued {answer.get('queued')} of {guests}: {answer}")


def start_workers(
    bench: Bench, ready: Setup, label: str, *, stop_when_empty: bool = True
) -> list[Child]:
    options = bench.options
    argv = [
        PRASSO, "queue", "work", "--concurrency", str(options.concurrency), "--sleep", "0.1",
        *(["--stop-when-empty"] if stop_when_empty else []),
    ]  # fmt: skip
    return [
        bench.spawn(f"{label}-worker{n}", argv, env=ready.env, cwd=ready.cwd)
        for n in range(options.workers)
    ]


def status_problems(bench: Bench, database: str, expected: int) -> list[str]:
    """Every delivery must be `sent`; anything else is reported, with its reason."""
    with bench.cluster.connect(database) as conn:
        rows = conn.execute(
            "SELECT status, coalesce(reason, ''), count(*) FROM msg_deliveries GROUP BY 1, 2"
        ).fetchall()
    sent = sum(int(n) for status, _, n in rows if status == "sent")
    if sent == expected:
        return []
    detail = ", ".join(
        f"{n} {status}{f' ({reason})' if reason else ''}" for status, reason, n in rows
    )
    return [f"{sent} of {expected} deliveries sent: {detail}"]


def deliveries(bench: Bench, queue: str, round_: int) -> DeliveryRun:
    """N SMS through the real product: CLI fan-out, then W workers until all are `sent`."""
    system = f"prasso-{queue}"
    items = bench.options.sms
    bench.flush_redis()
    ready = setup(bench, f"{system}-r{round_}", queue, items)
    try:
        fan_out_cli(bench, ready, items)
        target = Target(
            ready.database, "SELECT count(*) FROM msg_deliveries WHERE status = 'queued'", items
        )
        source = source_fingerprint()
        result, _ = measure(
            bench, system, round_, target, lambda: start_workers(bench, ready, system),
            stop_when_done=False,
        )  # fmt: skip
        result.problems += status_problems(bench, ready.database, items) + same_source(source)
        result.source = source
        return result
    finally:
        bench.cluster.drop_database(ready.database)


def pacing(bench: Bench, round_: int) -> PacingRun:
    """A binding pace (BATCH_SIZE per 1 s) with two workers racing, on the database queue."""
    options = bench.options
    items, limit, window = options.pacing_sms, options.pacing_batch, 1.0
    bench.flush_redis()
    ready = setup(
        bench, f"pacing-r{round_}", "database", items,
        MESSAGING_BATCH_SIZE=str(limit), MESSAGING_BATCH_INTERVAL_SECONDS=str(int(window)),
    )  # fmt: skip
    try:
        fan_out_cli(bench, ready, items)
        target = Target(
            ready.database, "SELECT count(*) FROM msg_deliveries WHERE status = 'queued'", items
        )
        source = source_fingerprint()
        result, times = measure(
            bench, "pacing", round_, target,
            lambda: start_workers(bench, ready, "pacing", stop_when_empty=False),
            stop_when_done=True,
        )  # fmt: skip
        problems = result.problems + status_problems(bench, ready.database, items)
        problems += same_source(source)
    finally:
        bench.cluster.drop_database(ready.database)
    over, busiest = sliding_windows(times, limit, window)
    return PacingRun(
        round=round_,
        items=items,
        limit=limit,
        window=window,
        requests=len(times),
        windows_over=over,
        busiest_window=busiest,
        elapsed=times[-1] - times[0] if len(times) > 1 else 0.0,
        ideal=(items / limit - 1) * window,
        seconds=result.seconds,
        problems=problems,
        source=source,
    )


def fan_out_api(bench: Bench, queue: str, round_: int) -> FanOutRun:
    """One `POST /api/messages/send` with `all_guests` to N guests, timed; no worker runs."""
    system = f"fanout-{queue}"
    recipients = bench.options.fanout
    bench.flush_redis()
    ready = setup(bench, f"{system}-r{round_}", queue, recipients)
    server: Child | None = None
    problems: list[str] = []
    try:
        port = free_port()
        source = source_fingerprint()
        server = bench.spawn(
            f"{system}-serve",
            [PRASSO, "serve", "--host", LOOPBACK, "--port", str(port)],
            env=ready.env,
            cwd=ready.cwd,
        )
        base = f"http://{LOOPBACK}:{port}"
        if not wait_for_port(port, 60) or http_json("GET", f"{base}/health")[0] != 200:
            raise RuntimeError(f"prasso serve did not come up:\n{server.tail()}")
        status, message = http_json(
            "POST", f"{base}/api/messages", {"type": "sms", "body": BODY}, token=ready.token
        )
        if status != 201:
            raise RuntimeError(f"POST /api/messages answered {status}: {message}")
        bench.cluster.settle(ready.database)
        bench.cluster.reset_statements()
        db_cpu = bench.cluster.cpu_seconds()
        started = time.perf_counter()
        status, answer = http_json(
            "POST",
            f"{base}/api/messages/send",
            {"message_id": message["id"], "all_guests": True},
            token=ready.token,
            timeout=max(600.0, bench.options.run_timeout),
        )
        seconds = time.perf_counter() - started
        db_cpu = bench.cluster.cpu_seconds() - db_cpu
        statements = bench.cluster.statements()
        queued = int(answer.get("queued", 0)) if isinstance(answer, dict) else 0
        if status != 202 or queued != recipients:
            problems.append(
                f"send answered {status}, queued {queued} of {recipients}: {answer!s:.300}"
            )
        server.sample()
        server.stop()
        rss = server.peak_rss_kb()
        problems += same_source(source)
        return FanOutRun(
            system=system,
            round=round_,
            recipients=recipients,
            seconds=seconds,
            queued=queued,
            statements=statements,
            db_cpu_seconds=db_cpu,
            api_peak_rss_kb=rss,
            problems=problems,
            source=source,
        )
    finally:
        if server is not None:
            server.stop()
        bench.cluster.drop_database(ready.database)
        bench.flush_redis()
