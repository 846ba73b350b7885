"""The measured phase shared by every delivery system, so all are timed by the same rules.

The jobs are already queued. The clock starts when the worker processes are started (their
start-up counts, for every system alike) and stops when the database says no delivery is left
`queued` (polled every 50 ms by the uncounted monitor role). Statements are counted from just
before the start until the workers have exited; CPU and peak RSS cover the workers' whole lives.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.context import Bench
from bench.procs import Child, usage
from bench.results import DeliveryRun

POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Target:
    """Where a system's deliveries live and how to count the unfinished ones."""

    database: str
    remaining_sql: str  # one count(*): deliveries not yet recorded
    items: int


def measure(
    bench: Bench,
    system: str,
    round_: int,
    target: Target,
    start_workers: Callable[[], list[Child]],
    *,
    stop_when_done: bool,
) -> tuple[DeliveryRun, list[float]]:
    """Run the workers until every delivery is recorded; the run and the arrival times."""
    cluster, fake = bench.cluster, bench.fake
    cluster.settle(target.database)
    fake.reset()
    problems: list[str] = []
    with cluster.connect(target.database) as monitor:
        cluster.reset_statements()
        db_cpu = cluster.cpu_seconds()
        wall_start = time.time()
        started = time.perf_counter()
        children = start_workers()
        deadline = started + bench.options.run_timeout
        finished: float | None = None
        exited_at: float | None = None
        while finished is None:
            time.sleep(POLL_SECONDS)
            for child in children:
                child.sample()
            alive = [child.poll() for child in children]
            row = monitor.execute(target.remaining_sql).fetchone()
            remaining = int(row[0]) if row else -1
            now = time.perf_counter()
            if remaining == 0:
                finished = now
            elif not any(alive):
                exited_at = exited_at or now
                if now - exited_at > 1.0:  # a last poll after the exit, then give up
                    problems.append(f"workers exited with {remaining} deliveries unrecorded")
                    finished = now
            elif now > deadline:
                problems.append(
                    f"stopped after {bench.options.run_timeout:.0f} s: {remaining} left"
                )
                finished = now
        seconds = finished - started
        grace = 60.0
        if stop_when_done or problems:
            for child in children:
                child.stop(grace=grace)
        for child in children:
            if not child.wait(grace):
                problems.append(f"{child.name} did not exit within {grace:.0f} s; stopped")
                child.stop()
        for child in children:
            if child.status not in (0, None, -15):
                problems.append(f"{child.name} exited {child.status}: {child.tail(3)}")
            count, last = child.errors()
            if count:
                problems.append(f"{child.name} logged {count} exception(s), the last: {last}")
    db_cpu = cluster.cpu_seconds() - db_cpu
    statements = cluster.statements()
    print(
        f"{target.database}: the statements run most\n{statements.describe(target.items)}",
        file=sys.stderr,
    )
    if statements.evicted:
        problems.append("pg_stat_statements evicted entries: statement counts are too low")
    cost = usage(children)
    stats = fake.stats()
    if stats.count != target.items or stats.distinct_to != target.items:
        problems.append(
            f"MISMATCH: {stats.count} provider requests for {stats.distinct_to} distinct "
            f"recipients, expected exactly one each for {target.items}"
            + (f" (repeated: {', '.join(stats.repeated_to[:5])})" if stats.repeated_to else "")
        )
    times = sorted(stats.times)
    run = DeliveryRun(
        system=system,
        round=round_,
        items=target.items,
        seconds=seconds,
        cpu_seconds=cost.cpu_seconds,
        db_cpu_seconds=db_cpu,
        startup_cpu_seconds=sum(child.cpu_before(times[0]) for child in children) if times else 0.0,
        peak_rss_kb=cost.peak_rss_kb,
        processes=cost.processes,
        statements=statements,
        requests=stats.count,
        distinct_recipients=stats.distinct_to,
        first_request=times[0] - wall_start if times else None,
        last_request=times[-1] - wall_start if times else None,
        problems=problems,
    )
    return run, times
