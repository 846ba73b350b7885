"""Command-line options: sizes, systems and rounds, with `--quick` for fast iteration."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DELIVERY_SYSTEMS = ("prasso-database", "prasso-redis", "dramatiq", "celery", "procrastinate")
FANOUT_SYSTEMS = ("fanout-database", "fanout-redis")
SYSTEMS = (*DELIVERY_SYSTEMS, *FANOUT_SYSTEMS, "pacing")
REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Options:
    rounds: int
    sms: int
    fanout: int
    pacing_sms: int
    pacing_batch: int
    workers: int
    concurrency: int
    peer_processes: int
    dramatiq_threads: int
    celery_concurrency: int
    procrastinate_concurrency: int
    ceiling_seconds: float
    systems: tuple[str, ...]
    quick: bool
    write: bool
    output: Path
    run_timeout: float
    logs: Path | None

    def runs(self, system: str) -> bool:
        return system in self.systems


def _systems(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}"
        )
    return names


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Delivery throughput side by side with Dramatiq, Celery and procrastinate, "
        "the fan-out of one message to many guests, and pacing; writes docs/benchmarks.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, small sizes; not written unless --write"
    )
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the report (default: yes, except with --quick)",
    )
    parser.add_argument(
        "--output", type=Path, default=REPORT, help="report path (default docs/benchmarks.md)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--sms", type=int, help="SMS per delivery run (default 6000, quick 1000)")
    parser.add_argument(
        "--fanout", type=int, help="guests in the fan-out (default 1000000, quick 100000)"
    )
    parser.add_argument(
        "--pacing-sms", type=int, help="SMS in the pacing run (default 600, quick 300)"
    )
    parser.add_argument(
        "--pacing-batch",
        type=int,
        default=50,
        help="MESSAGING_BATCH_SIZE of the pacing run (per 1 s)",
    )
    parser.add_argument("--workers", type=int, default=2, help="prasso worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="prasso --concurrency per worker"
    )
    parser.add_argument("--peer-processes", type=int, default=2, help="processes of each peer")
    parser.add_argument(
        "--dramatiq-threads", type=int, default=8, help="threads per Dramatiq process"
    )
    parser.add_argument(
        "--celery-concurrency",
        type=int,
        default=None,
        help="Celery prefork children (default: --peer-processes)",
    )
    parser.add_argument(
        "--procrastinate-concurrency",
        type=int,
        default=None,
        help="procrastinate async jobs per process (default: --concurrency)",
    )
    parser.add_argument(
        "--ceiling-seconds",
        type=float,
        help="length of the fake server ceiling run (default 3, quick 1)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=600.0,
        help="seconds one measured run may take before it is stopped and reported as failed",
    )
    parser.add_argument(
        "--only", type=_systems, help=f"comma-separated subset of: {', '.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--skip", type=_systems, default=(), help="comma-separated systems to leave out"
    )
    parser.add_argument("--logs", type=Path, help="keep every process's log in this folder")
    args = parser.parse_args(argv)

    quick = bool(args.quick)
    systems = tuple(name for name in (args.only or SYSTEMS) if name not in args.skip)
    for name, value in (
        ("--rounds", args.rounds),
        ("--sms", args.sms),
        ("--workers", args.workers),
    ):
        if value is not None and value < 1:
            parser.error(f"{name} must be at least 1")
    return Options(
        rounds=args.rounds or (1 if quick else 3),
        sms=args.sms or (1000 if quick else 6000),
        fanout=args.fanout or (100_000 if quick else 1_000_000),
        pacing_sms=args.pacing_sms or (300 if quick else 600),
        pacing_batch=args.pacing_batch,
        workers=args.workers,
        concurrency=args.concurrency,
        peer_processes=args.peer_processes,
        dramatiq_threads=args.dramatiq_threads,
        celery_concurrency=args.celery_concurrency or args.peer_processes,
        procrastinate_concurrency=args.procrastinate_concurrency or args.concurrency,
        ceiling_seconds=args.ceiling_seconds or (1.0 if quick else 3.0),
        systems=systems,
        quick=quick,
        write=args.write if args.write is not None else not quick,
        output=args.output,
        run_timeout=args.run_timeout,
        logs=args.logs,
    )
