"""docs/benchmarks.md: the machine, what ran, the tables, the targets, a chart and the raw runs.

Medians and ranges are taken over the runs that finished without a problem (a wrong request
count, a timeout, a delivery not sent); a system with no such run is summarised from all its runs
and marked with ⚠. Every run, clean or not, is listed at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bench.options import DELIVERY_SYSTEMS, FANOUT_SYSTEMS, Options
from bench.postgres import Statements
from bench.results import Collected, DeliveryRun, FanOutRun, PacingRun, Spread, spread

R = TypeVar("R", DeliveryRun, FanOutRun, PacingRun)

LABELS = {
    "prasso-database": "prasso, database queue",
    "prasso-redis": "prasso, redis queue",
    "dramatiq": "Dramatiq",
    "celery": "Celery",
    "procrastinate": "procrastinate",
    "fanout-database": "prasso API, database queue",
    "fanout-redis": "prasso API, redis queue",
}
CHART_LABELS = {  # no commas: they would split a Mermaid category
    "prasso-database": "prasso (database queue)",
    "prasso-redis": "prasso (redis queue)",
    "dramatiq": "Dramatiq",
    "celery": "Celery",
    "procrastinate": "procrastinate",
}
PEERS = ("dramatiq", "celery", "procrastinate")
PRASSO = ("prasso-database", "prasso-redis")
LIMITS = Path(__file__).with_name("limits.md")
"""The analysis of what bounds each figure, with its profiles: written by hand, kept beside the
code it explains, and carried into every report (a run's numbers change, the reasons rarely do)."""


@dataclass(frozen=True)
class Machine:
    date: str
    cpu: str
    cores: int
    python: str
    postgres: str
    redis: str
    commit: str
    load: str  # 1-minute load average at the start and the end: was anything else running?


def clean(runs: Sequence[R]) -> tuple[list[R], bool]:
    """The runs to summarise, and whether they are all flawed (⚠)."""
    good = [run for run in runs if not run.problems]
    return (good, False) if good else (list(runs), bool(runs))


def fmt_spread(value: Spread | None, digits: int = 0, scale: float = 1.0) -> str:
    if value is None:
        return "n/a"
    median, low, high = value.median * scale, value.low * scale, value.high * scale
    if value.count == 1 or f"{low:,.{digits}f}" == f"{high:,.{digits}f}":
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({low:,.{digits}f}\u2013{high:,.{digits}f})"


def mb(kb: float) -> float:
    return kb / 1024


def per_item(runs: Sequence[DeliveryRun], pick: Callable[[DeliveryRun], int]) -> Spread | None:
    return spread(runs, lambda r: pick(r) / r.items if r.statements and r.items else None)


def delivery_summary(collected: Collected) -> dict[str, tuple[list[DeliveryRun], bool]]:
    by_system: dict[str, tuple[list[DeliveryRun], bool]] = {}
    for system in DELIVERY_SYSTEMS:
        runs = [run for run in collected.deliveries if run.system == system]
        if runs:
            by_system[system] = clean(runs)
    return by_system


def median_rate(summary: dict[str, tuple[list[DeliveryRun], bool]], system: str) -> float | None:
    if system not in summary:
        return None
    value = spread(summary[system][0], lambda r: r.rate)
    return value.median if value else None


def deliveries_table(summary: dict[str, tuple[list[DeliveryRun], bool]]) -> list[str]:
    peers = [peer for peer in PEERS if peer in summary]
    head = (
        "| system | deliveries/s median (min\u2013max) | "
        + "".join(f"x {LABELS[peer]} | " for peer in peers)
        + "steady deliveries/s | worker CPU-ms/delivery | after start-up | PostgreSQL CPU-ms/delivery | SQL statements/delivery (all / without BEGIN-COMMIT-ROLLBACK) | client-sent statements/delivery | peak RSS per process (MB) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for system, (runs, flawed) in summary.items():
        rate = median_rate(summary, system)
        ratios = []
        for peer in peers:
            other = median_rate(summary, peer)
            ratios.append(f"{rate / other:.2f}x" if rate and other else "n/a")
        statements = (
            f"{fmt_spread(per_item(runs, lambda r: r.statements.all if r.statements else 0), 2)} / "
            f"{fmt_spread(per_item(runs, lambda r: r.statements.without_transaction_control if r.statements else 0), 2)}"
        )
        lines.append(
            f"| {LABELS[system]}{' ⚠' if flawed else ''} "
            f"| {fmt_spread(spread(runs, lambda r: r.rate))} "
            + "".join(f"| {ratio} " for ratio in ratios)
            + f"| {fmt_spread(spread(runs, lambda r: r.steady_rate))} "
            f"| {fmt_spread(spread(runs, lambda r: r.cpu_ms_per_item), 2)} "
            f"| {fmt_spread(spread(runs, lambda r: r.working_cpu_ms_per_item), 2)} "
            f"| {fmt_spread(spread(runs, lambda r: r.db_cpu_ms_per_item), 2)} "
            f"| {statements} "
            f"| {fmt_spread(per_item(runs, lambda r: r.statements.top_level if r.statements else 0), 2)} "
            f"| {fmt_spread(spread(runs, lambda r: mb(r.peak_rss_kb)))} |"
        )
    return lines


def fanout_table(collected: Collected) -> list[str]:
    lines = [
        "| system | recipients | seconds median (min\u2013max) | recipients/s | SQL statements (all / without BEGIN-COMMIT-ROLLBACK) | client-sent statements | PostgreSQL CPU s | API peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system in FANOUT_SYSTEMS:
        runs, flawed = clean([run for run in collected.fanouts if run.system == system])
        if not runs:
            continue
        statements = (
            f"{fmt_spread(spread(runs, lambda r: r.statements.all if r.statements else None))} / "
            f"{fmt_spread(spread(runs, lambda r: r.statements.without_transaction_control if r.statements else None))}"
        )
        lines.append(
            f"| {LABELS[system]}{' ⚠' if flawed else ''} | {runs[0].recipients:,} "
            f"| {fmt_spread(spread(runs, lambda r: r.seconds), 2)} "
            f"| {fmt_spread(spread(runs, lambda r: r.rate))} | {statements} "
            f"| {fmt_spread(spread(runs, lambda r: r.statements.top_level if r.statements else None))} "
            f"| {fmt_spread(spread(runs, lambda r: r.db_cpu_seconds), 2)} "
            f"| {fmt_spread(spread(runs, lambda r: mb(r.api_peak_rss_kb)))} |"
        )
    return lines


def pacing_table(collected: Collected) -> list[str]:
    runs, flawed = clean(collected.pacing)
    if not runs:
        return []
    first = runs[0]
    return [
        "| SMS | limit | windows over the limit | busiest 1 s window | first → last arrival (s) | ideal (s) | efficiency |",
        "|---|---|---|---|---|---|---|",
        f"| {first.items:,}{' ⚠' if flawed else ''} | {first.limit} per {first.window:g} s "
        f"| {fmt_spread(spread(runs, lambda r: r.windows_over))} "
        f"| {fmt_spread(spread(runs, lambda r: r.busiest_window))} "
        f"| {fmt_spread(spread(runs, lambda r: r.elapsed), 2)} | {first.ideal:g} "
        f"| {fmt_spread(spread(runs, lambda r: r.efficiency), 1, 100)} % |",
    ]


Verdict = tuple[str, str, bool | None]  # target, measured, met (None: not measured as stated)
MB_300 = 300 * 1024


def delivery_targets(summary: dict[str, tuple[list[DeliveryRun], bool]]) -> list[Verdict]:
    found: list[Verdict] = []
    dramatiq = median_rate(summary, "dramatiq")
    for system in PRASSO:
        if system not in summary:
            continue
        runs, label = summary[system][0], LABELS[system]
        rate = median_rate(summary, system) or 0.0
        found.append((f"{label}: ≥ 3,000 SMS deliveries/s", f"{rate:,.0f}/s", rate >= 3000))
        if dramatiq:
            ratio = rate / dramatiq
            found.append((f"{label}: ≥ 2.4x Dramatiq", f"{ratio:.2f}x", ratio >= 2.4))
        stmts = per_item(runs, lambda r: r.statements.all if r.statements else 0)
        if stmts:
            found.append(
                (
                    f"{label}: ≤ 0.2 SQL statements/delivery (all)",
                    f"{stmts.median:.2f}",
                    stmts.median <= 0.2,
                )
            )
        cpu = spread(runs, lambda r: r.cpu_ms_per_item)
        if cpu:
            found.append(
                (
                    f"{label}: ≤ 0.3 worker CPU-ms/delivery",
                    f"{cpu.median:.2f} ms",
                    cpu.median <= 0.3,
                )
            )
    return found


def fanout_targets(collected: Collected, worker_rss_kb: int | None) -> list[Verdict]:
    found: list[Verdict] = []
    for system in FANOUT_SYSTEMS:
        runs, _ = clean([run for run in collected.fanouts if run.system == system])
        if not runs:
            continue
        label, size = LABELS[system], runs[0].recipients
        seconds = spread(runs, lambda r: r.seconds)
        assert seconds is not None
        if size == 1_000_000:
            found.append(
                (
                    f"{label}: 1,000,000 fanned out in ≤ 10 s",
                    f"{seconds.median:.2f} s",
                    seconds.median <= 10,
                )
            )
        else:
            found.append(
                (
                    f"{label}: 1,000,000 fanned out in ≤ 10 s",
                    f"{seconds.median:.2f} s at {size:,}",
                    None,
                )
            )
        api = max(run.api_peak_rss_kb for run in runs)
        measured = f"API {mb(api):.0f} MB"
        met = api <= MB_300
        if worker_rss_kb is not None:
            measured += f", worker {mb(worker_rss_kb):.0f} MB"
            met = met and worker_rss_kb <= MB_300
        found.append((f"{label}: API and worker RSS ≤ 300 MB (largest seen)", measured, met))
    return found


def pacing_targets(collected: Collected) -> list[Verdict]:
    runs, _ = clean(collected.pacing)
    if not runs:
        return []
    over = max(run.windows_over for run in runs)
    efficiency = spread(runs, lambda r: r.efficiency)
    assert efficiency is not None
    return [
        ("pacing: 0 windows over the limit (in every round)", f"{over}", over == 0),
        (
            "pacing: ≥ 95 % efficiency",
            f"{100 * efficiency.median:.1f} %",
            efficiency.median >= 0.95,
        ),
    ]


def targets(collected: Collected) -> list[str]:
    summary = delivery_summary(collected)
    worker_rss = max(
        (run.peak_rss_kb for system in PRASSO if system in summary for run in summary[system][0]),
        default=None,
    )
    verdicts = [
        *delivery_targets(summary),
        *fanout_targets(collected, worker_rss),
        *pacing_targets(collected),
    ]
    if not verdicts:
        return []
    lines = ["| target | measured (median) | |", "|---|---|---|"]
    for name, measured, met in verdicts:
        verdict = "not measured at that size" if met is None else ("met" if met else "**missed**")
        lines.append(f"| {name} | {measured} | {verdict} |")
    return lines


def chart(summary: dict[str, tuple[list[DeliveryRun], bool]], rounds: int) -> list[str]:
    systems = [system for system in summary if median_rate(summary, system) is not None]
    if not systems:
        return []
    rates = [round(median_rate(summary, system) or 0) for system in systems]
    top = max(rates) * 1.15 or 1
    return [
        "```mermaid",
        "xychart-beta",
        f'    title "SMS deliveries per second (median of {rounds} round{"s" if rounds > 1 else ""})"',
        "    x-axis [" + ", ".join(f'"{CHART_LABELS[system]}"' for system in systems) + "]",
        f'    y-axis "deliveries/s" 0 --> {round(top)}',
        "    bar [" + ", ".join(str(rate) for rate in rates) + "]",
        "```",
    ]


def problems_cell(problems: Sequence[str]) -> str:
    return "; ".join(problem.replace("|", "/").replace("\n", " ") for problem in problems) or "—"


def statements_cell(statements: Statements | None) -> str:
    if statements is None:
        return "n/a"
    s = statements
    return f"{s.all:,} / {s.without_transaction_control:,} / {s.top_level:,}"


def raw_runs(collected: Collected) -> list[str]:
    """Every run as measured, clean or not, in three tables (deliveries, fan-out, pacing)."""
    out: list[str] = []
    if collected.deliveries:
        out += [
            "| round | system | items | seconds | per s | steady per s | first / last request (s) | worker CPU s (before first request) | PostgreSQL CPU s | peak RSS (MB) | processes | statements all / no-tx / client-sent | requests / distinct To | source | problems |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in collected.deliveries:
            first = (
                f"{run.first_request:.2f} / {run.last_request:.2f}"
                if run.first_request is not None and run.last_request is not None
                else "n/a"
            )
            steady = f"{run.steady_rate:,.0f}" if run.steady_rate else "n/a"
            out.append(
                f"| {run.round} | {run.system} | {run.items:,} | {run.seconds:.2f} | {run.rate:,.0f} "
                f"| {steady} | {first} | {run.cpu_seconds:.2f} ({run.startup_cpu_seconds:.2f}) "
                f"| {run.db_cpu_seconds:.2f} "
                f"| {mb(run.peak_rss_kb):.0f} "
                f"| {run.processes} | {statements_cell(run.statements)} "
                f"| {run.requests:,} / {run.distinct_recipients:,} | {run.source or '—'} "
                f"| {problems_cell(run.problems)} |"
            )
        out.append("")
    if collected.fanouts:
        out += [
            "| round | system | recipients | seconds | per s | API peak RSS (MB) | PostgreSQL CPU s | statements all / no-tx / client-sent | source | problems |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for fan in collected.fanouts:
            out.append(
                f"| {fan.round} | {fan.system} | {fan.recipients:,} | {fan.seconds:.2f} | {fan.rate:,.0f} "
                f"| {mb(fan.api_peak_rss_kb):.0f} | {fan.db_cpu_seconds:.2f} "
                f"| {statements_cell(fan.statements)} "
                f"| {fan.source or '—'} | {problems_cell(fan.problems)} |"
            )
        out.append("")
    if collected.pacing:
        out += [
            "| round | SMS | requests | windows over | busiest window | first → last (s) | efficiency | workers start → all sent (s) | source | problems |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for pace in collected.pacing:
            out.append(
                f"| {pace.round} | {pace.items:,} | {pace.requests:,} | {pace.windows_over} "
                f"| {pace.busiest_window} | {pace.elapsed:.2f} | {100 * pace.efficiency:.1f} % "
                f"| {pace.seconds:.2f} | {pace.source or '—'} | {problems_cell(pace.problems)} |"
            )
        out.append("")
    return out


def sources(collected: Collected) -> set[str]:
    runs: list[DeliveryRun | FanOutRun | PacingRun] = [
        *collected.deliveries,
        *collected.fanouts,
        *collected.pacing,
    ]
    return {run.source for run in runs if run.source}


def source_warning(collected: Collected) -> list[str]:
    seen = sources(collected)
    if len(seen) <= 1:
        return []
    return [
        f"> ⚠ **The product's source changed during this invocation** ({len(seen)} versions: "
        f"{', '.join(sorted(seen))}; see the source column of every run). Rounds measured different code.",
        "",
    ]


def render(collected: Collected, options: Options, machine: Machine) -> str:
    summary = delivery_summary(collected)
    ceiling = collected.ceiling
    out = [
        "# Benchmarks",
        "",
        f"`make bench` (`python -m bench{' --quick' if options.quick else ''}`) on {machine.date}: "
        f"{machine.cpu}, {machine.cores} cores, Python {machine.python}, PostgreSQL {machine.postgres}, "
        f"Redis {machine.redis}; commit {machine.commit}, product source {', '.join(sorted(sources(collected))) or 'n/a'}. The whole invocation took {collected.seconds / 60:.1f} min; "
        f"1-minute load average {machine.load}.",
        "",
        *source_warning(collected),
        "## What was run",
        "",
        f"- {options.rounds} round{'s' if options.rounds > 1 else ''}, interleaved: round 1 runs every system once, then round 2, and so on.",
        f"- SMS delivery runs: {options.sms:,} SMS per run, every system sending to the same fake Twilio server and "
        "storing its deliveries in the same private PostgreSQL cluster (a fresh database per run).",
        f"  - prasso: `prasso send --all-guests` queues them (not timed), then {options.workers} x "
        f"`prasso queue work --concurrency {options.concurrency} --stop-when-empty --sleep 0.1`; pacing on but not binding "
        "(`MESSAGING_BATCH_SIZE=100000`), caps on but not binding.",
        f"  - Dramatiq: Redis broker, {options.peer_processes} processes x {options.dramatiq_threads} threads. "
        f"Celery: Redis broker, prefork pool of {options.celery_concurrency}. procrastinate: its PostgreSQL queue, "
        f"{options.peer_processes} x `procrastinate worker --one-shot --concurrency {options.procrastinate_concurrency}`. "
        "Each runs the same unit of work per delivery: SELECT the row, POST To/From/Body/StatusCallback with Basic auth, "
        "UPDATE status and sid (autocommit, so no BEGIN/COMMIT of its own).",
        "  - Timed from the start of the worker processes (their start-up counts, for every system) until no delivery is "
        "left queued (polled every 50 ms). *Steady* is the rate between the first and the last request the provider saw.",
        "  - Worker CPU is user+sys of every worker process over its whole life (wait4 and /proc); peak RSS is the largest "
        "single worker process; *after start-up* leaves out the CPU the workers had used when the provider saw its "
        "first request (imports, connecting: sampled every 50 ms); PostgreSQL CPU is the whole server's (postmaster, backends, background processes) over "
        "the same phase. Statements are `pg_stat_statements` calls from just before the start until the workers "
        "exited, the bench's own polling excluded. *All* is every statement the server executed (`track = all`: "
        "BEGIN/COMMIT/ROLLBACK, statements inside functions and the foreign-key checks PostgreSQL runs per inserted "
        "row included); *client-sent* counts only the statements the processes sent (`toplevel`).",
        f"- Fan-out: {options.fanout:,} guests inserted with COPY, then one `POST /api/messages/send` with `all_guests` "
        "to `prasso serve`, no worker running; API peak RSS is the server process's VmHWM.",
        f"- Pacing: {options.pacing_sms:,} SMS at `MESSAGING_BATCH_SIZE={options.pacing_batch}`, "
        f"`MESSAGING_BATCH_INTERVAL_SECONDS=1`, {options.workers} workers racing on the database queue, "
        "stopped once every delivery is sent (not `--stop-when-empty`: a job waiting for a later slot is a delayed "
        "job, which that flag does not wait for); windows are read from the provider's arrival times (a 1 s window "
        "starting at every arrival).",
        "- PostgreSQL 15 runs with its defaults (fsync and synchronous_commit on) but for `max_connections=300` and "
        "`pg_stat_statements`; each measured phase starts after `VACUUM (ANALYZE)` and `CHECKPOINT`.",
        "",
    ]
    if ceiling:
        per_core = 1e6 / ceiling.server_cpu_us if ceiling.server_cpu_us else 0
        out += [
            f"**Fake Twilio server ceiling:** {ceiling.rate:,.0f} requests/s answered to an aiohttp client with "
            f"{ceiling.connections} connections in another process ({ceiling.requests:,} in {ceiling.seconds:.1f} s, "
            f"{ceiling.errors} errors); the server spent {ceiling.server_cpu_us:.0f} µs of CPU per answer, so one core "
            f"answers about {per_core:,.0f}/s. The provider is not what limits the figures below.",
            "",
        ]
    if summary:
        out += ["## SMS deliveries", "", *deliveries_table(summary), ""]
    if collected.fanouts:
        out += ["## Fan-out", "", *fanout_table(collected), ""]
    if collected.pacing:
        out += ["## Pacing", "", *pacing_table(collected), ""]
    target_lines = targets(collected)
    if target_lines:
        out += ["## Targets", "", *target_lines, ""]
    if summary:
        out += ["## Chart", "", *chart(summary, options.rounds), ""]
    out += ["## What limits each figure", "", LIMITS.read_text().strip(), ""]
    problems = collected.problems()
    if problems:
        out += ["## Problems", "", *(f"- {problem}" for problem in problems), ""]
    out += ["## Every run", "", *raw_runs(collected)]
    return "\n".join(out)
