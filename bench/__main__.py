"""`python -m bench`: SMS delivery throughput side by side with Dramatiq, Celery and procrastinate,
the fan-out of one message to many guests through the API, and pacing; writes docs/benchmarks.md.

Measures, never asserts. It starts its own private PostgreSQL cluster and fake Twilio server on
loopback, uses Redis database 15, and stops and removes all of it at the end. Every run is bounded
(`--run-timeout`). The systems run interleaved, round by round, so a slow moment of the machine
hits all of them alike. `--quick` is one small round for fast iteration (not written to the
report unless `--write`). The exit status is 1 if any run failed or reported a problem.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import peer_runs, prasso
from bench.ceiling import ceiling
from bench.context import Bench
from bench.options import Options, parse
from bench.report import Machine, render
from bench.results import Collected, DeliveryRun, FanOutRun, PacingRun

Runner = Callable[[Bench, int], DeliveryRun | FanOutRun | PacingRun]

RUNNERS: dict[str, Runner] = {
    "prasso-database": lambda bench, r: prasso.deliveries(bench, "database", r),
    "prasso-redis": lambda bench, r: prasso.deliveries(bench, "redis", r),
    "dramatiq": lambda bench, r: peer_runs.deliveries(bench, "dramatiq", r),
    "celery": lambda bench, r: peer_runs.deliveries(bench, "celery", r),
    "procrastinate": lambda bench, r: peer_runs.deliveries(bench, "procrastinate", r),
    "fanout-database": lambda bench, r: prasso.fan_out_api(bench, "database", r),
    "fanout-redis": lambda bench, r: prasso.fan_out_api(bench, "redis", r),
    "pacing": prasso.pacing,
}


def summary_line(result: DeliveryRun | FanOutRun | PacingRun) -> str:
    if isinstance(result, DeliveryRun):
        s = result.statements
        line = (
            f"{result.items:,} in {result.seconds:.2f} s = {result.rate:,.0f}/s"
            f" (steady {result.steady_rate or 0:,.0f}/s), CPU {result.cpu_ms_per_item:.2f} ms/delivery"
            f" ({result.working_cpu_ms_per_item:.2f} after start-up)"
            f", PostgreSQL {result.db_cpu_ms_per_item:.2f} ms/delivery,"
            f" {s.all / result.items if s else 0:.2f} statements/delivery,"
            f" peak RSS {result.peak_rss_kb / 1024:.0f} MB"
        )
    elif isinstance(result, FanOutRun):
        s = result.statements
        line = (
            f"{result.recipients:,} in {result.seconds:.2f} s = {result.rate:,.0f}/s,"
            f" {s.all if s else 0:,} statements, API peak RSS {result.api_peak_rss_kb / 1024:.0f} MB"
        )
    else:
        line = (
            f"{result.requests:,} requests, {result.windows_over} windows over {result.limit},"
            f" busiest {result.busiest_window}, first→last {result.elapsed:.2f} s"
            f" (ideal {result.ideal:g} s, efficiency {100 * result.efficiency:.1f} %)"
        )
    return line + "".join(f"\n    !! {problem}" for problem in result.problems)


def measure_all(bench: Bench, collected: Collected) -> None:
    options = bench.options
    collected.ceiling = ceiling(bench)
    print(f"fake Twilio ceiling: {collected.ceiling.rate:,.0f} requests/s", flush=True)
    for round_ in range(1, options.rounds + 1):
        for system in options.systems:
            print(f"[round {round_}/{options.rounds}] {system} ...", end=" ", flush=True)
            try:
                result = RUNNERS[system](bench, round_)
            except Exception as exc:
                collected.failures.append(f"{round_}, {system}: {type(exc).__name__}: {exc}")
                print(f"FAILED\n{traceback.format_exc()}", flush=True)
                continue
            if isinstance(result, DeliveryRun):
                collected.deliveries.append(result)
            elif isinstance(result, FanOutRun):
                collected.fanouts.append(result)
            else:
                collected.pacing.append(result)
            print(summary_line(result), flush=True)


def machine(postgres: str, redis: str, load_at_start: float) -> Machine:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return Machine(
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        cpu=cpu,
        cores=os.cpu_count() or 0,
        python=platform.python_version(),
        postgres=postgres,
        redis=redis,
        commit=commit,
        load=f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
    )


def main(argv: list[str] | None = None) -> int:
    options: Options = parse(argv)
    collected = Collected()
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    print(
        f"bench: {options.rounds} round(s) of {', '.join(options.systems)};"
        f" {options.sms:,} SMS, fan-out {options.fanout:,}, pacing {options.pacing_sms:,}",
        flush=True,
    )
    with Bench(options) as bench:
        measure_all(bench, collected)
        redis_version = str(bench.redis.info("server")["redis_version"])
        info = machine(bench.cluster.version, redis_version, load_at_start)
    collected.seconds = time.perf_counter() - started
    report = render(collected, options, info)
    print()
    print(report)
    if options.write:
        options.output.write_text(report)
        print(f"\nwritten to {options.output}")
    else:
        print("\n(not written: --quick without --write)")
    problems = collected.problems()
    if problems:
        print("\n!! PROBLEMS:\n" + "\n".join(f"!! {p}" for p in problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: cluster, servers and workers stopped", file=sys.stderr)
        sys.exit(130)
