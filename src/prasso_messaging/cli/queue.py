"""`prasso queue ...`: the worker and the queue's housekeeping."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from prasso_messaging.cli.app import fail, open_runtime, print_json, run, settings
from prasso_messaging.errors import ValidationFailed

MAX_WORKER_POOL = 16


def worker_pool_size(concurrency: int) -> int:
    """Database connections for one worker (per engine; see `Database`). Sends do not touch the
    database: a pool serves the chunks in flight, a few statements each."""
    return min(max(4, concurrency // 5), MAX_WORKER_POOL)


queue_app = typer.Typer(help="Run workers and inspect the queue.", no_args_is_help=True)


@queue_app.command("work")
def work(
    queue: Annotated[str | None, typer.Option(help="Queue to work (default: QUEUE_NAME).")] = None,
    tries: Annotated[
        int | None, typer.Option(min=1, help="Attempts per delivery (default: backoff steps + 1).")
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds one job may run.")] = 60,
    concurrency: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 10,
    sleep: Annotated[float, typer.Option(min=0, help="Seconds to wait when empty.")] = 1,
    max_jobs: Annotated[int, typer.Option(min=0, help="Stop after N jobs (0: no limit).")] = 0,
    max_time: Annotated[float, typer.Option(min=0, help="Stop after S seconds (0: no limit).")] = 0,
    stop_when_empty: Annotated[bool, typer.Option(help="Stop once the queue is empty.")] = False,
    sweep_interval: Annotated[
        float,
        typer.Option(min=0, help="Seconds between sweeps for orphaned deliveries (0: never)."),
    ] = 60,
) -> None:
    """Process delivery jobs until stopped (SIGTERM/SIGINT finish the jobs in hand first)."""
    from prasso_messaging.prune import prune_daily
    from prasso_messaging.queue.worker import WorkerOptions
    from prasso_messaging.sweeper import sweep_periodically

    config = settings()
    options = WorkerOptions(
        queue=queue or config.QUEUE_NAME,
        tries=tries,
        timeout=timeout,
        concurrency=concurrency,
        sleep=sleep,
        max_jobs=max_jobs,
        max_time=max_time,
        stop_when_empty=stop_when_empty,
    )

    async def loop() -> int:
        async with open_runtime(
            config, pool_size=worker_pool_size(concurrency), queues=[options.queue]
        ) as runtime:
            worker = runtime.make_worker(options)
            worker.install_signal_handlers()
            dispatcher = runtime.dispatcher()
            dispatcher.queue = options.queue
            sweep_periodically(
                worker,
                runtime.database,
                dispatcher,
                every=sweep_interval,
                grace=config.QUEUE_RETRY_AFTER,
            )
            prune_daily(worker, runtime.database, config)
            processed = await worker.run()
            if worker.reserve_error is not None:
                fail(
                    f"{runtime.queue.setting}: stopped after {processed} job(s) while reserving"
                    f" failed ({worker.reserve_error})"
                )
            return processed

    processed = run(loop)
    typer.echo(f"worker stopped after {processed} job(s)", err=True)


def _console() -> Console:
    return Console(soft_wrap=True)


@queue_app.command("status")
def status(
    queue: Annotated[
        list[str] | None, typer.Option(help="Queue(s) to show (default: QUEUE_NAME).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Jobs per queue (ready, delayed, reserved, failed), deliveries by status, live workers and
    how long the first due delivery has waited."""
    from prasso_messaging.queue_status import QueueStatus, queue_status

    config = settings()

    async def load() -> QueueStatus:
        async with open_runtime(config, queues=queue or [config.QUEUE_NAME]) as runtime:
            return await queue_status(runtime.database, runtime.dispatcher(), queues=queue or [])

    report = run(load)
    if as_json:
        print_json(report.as_dict())
        return
    queues = Table(
        "queue", "ready", "delayed", "reserved", "failed", title=f"{report.connection} queue"
    )
    for line in report.queues:
        queues.add_row(
            line.queue, str(line.ready), str(line.delayed), str(line.reserved), str(line.failed)
        )
    deliveries = Table("status", "deliveries", title="deliveries")
    for name, count in report.deliveries.items():
        deliveries.add_row(name, str(count))
    workers = Table("host", "pid", "queue", "jobs done", "last seen", title="live workers")
    for worker in report.workers:
        seen = worker.last_seen_at.isoformat(timespec="seconds")
        workers.add_row(worker.host, str(worker.pid), worker.queue, str(worker.jobs_done), seen)
    age = report.oldest_queued_age_seconds
    console = _console()
    console.print(queues)
    console.print(deliveries)
    console.print(workers if report.workers else "live workers: none seen in the last minute")
    console.print(f"oldest due delivery: {'none' if age is None else f'waiting {age:.0f} s'}")


@queue_app.command("failed")
def failed(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Failed jobs, oldest first."""
    config = settings()

    async def load() -> list[dict[str, object]]:
        async with open_runtime(config) as runtime:
            return [view.as_dict() for view in await runtime.failed.find()]

    jobs = run(load)
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        typer.echo("no failed jobs")
        return
    grid = Table("id", "queue", "delivery", "failed at", "error")
    for job in jobs:
        lines = str(job["exception"]).strip().splitlines()
        grid.add_row(
            str(job["id"]),
            str(job["queue"]),
            str(job["delivery_id"] or "-"),
            str(job["failed_at"])[:19],
            lines[-1] if lines else "",
        )
    _console().print(grid)


def _ids(values: list[str], *, allow_all: bool) -> list[int] | Literal["all"]:
    if allow_all and values == ["all"]:
        return "all"
    try:
        ids = [int(v) for v in values]
    except ValueError:
        hint = "failed job ids, or `all`" if allow_all else "failed job ids"
        raise ValidationFailed("ID", f"expected {hint} (got {' '.join(values)!r})") from None
    if any(i < 1 for i in ids):
        raise ValidationFailed("ID", "ids are positive integers")
    return ids


@queue_app.command("retry")
def retry(
    ids: Annotated[
        list[str], typer.Argument(help="Failed job ids, or `all`.", metavar="ID...|all")
    ],
) -> None:
    """Queue failed jobs again: each delivery goes back to `queued` with its attempts reset."""
    config = settings()

    async def go() -> list[int]:
        chosen = _ids(ids, allow_all=True)
        async with open_runtime(config, queues=[config.QUEUE_NAME]) as runtime:
            return await runtime.failed.retry(runtime.dispatcher(), ids=chosen)

    retried = run(go)
    typer.echo(
        f"retried {len(retried)} failed job(s)" + (f": {_joined(retried)}" if retried else "")
    )


@queue_app.command("forget")
def forget(
    ids: Annotated[list[str], typer.Argument(help="Failed job id(s).", metavar="ID...")],
) -> None:
    """Delete failed jobs without retrying them."""
    config = settings()

    async def go() -> list[int]:
        chosen = _ids(ids, allow_all=False)
        assert chosen != "all"
        async with open_runtime(config) as runtime:
            return await runtime.failed.forget(ids=chosen)

    forgotten = run(go)
    typer.echo(f"forgot {len(forgotten)} failed job(s): {_joined(forgotten)}")


@queue_app.command("flush")
def flush() -> None:
    """Delete every failed job."""
    config = settings()

    async def go() -> int:
        async with open_runtime(config) as runtime:
            return await runtime.failed.flush()

    typer.echo(f"flushed {run(go)} failed job(s)")


@queue_app.command("sweep")
def sweep(
    queue: Annotated[
        str | None, typer.Option(help="Queue to dispatch to (default: QUEUE_NAME).")
    ] = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            min=0, help="Seconds a due delivery must have waited (default: QUEUE_RETRY_AFTER)."
        ),
    ] = None,
) -> None:
    """Re-dispatch deliveries left `queued` with no live job (say, the broker lost its data),
    and guest imports that stopped moving."""
    from prasso_messaging.sweeper import SweepResult
    from prasso_messaging.sweeper import sweep as sweep_orphans

    config = settings()

    async def go() -> SweepResult:
        async with open_runtime(config, queues=[queue or config.QUEUE_NAME]) as runtime:
            dispatcher = runtime.dispatcher()
            dispatcher.queue = queue or config.QUEUE_NAME
            grace = config.QUEUE_RETRY_AFTER if older_than is None else older_than
            return await sweep_orphans(runtime.database, dispatcher, grace=grace)

    result = run(go)
    if result.waited:
        typer.echo(
            "the queue still has ready jobs; nothing swept (run it again once they are taken)"
        )
    else:
        imports = f" and {result.imports} guest import job(s)" if result.imports else ""
        typer.echo(f"re-dispatched {result.redispatched} delivery job(s){imports}")


def _joined(ids: list[int]) -> str:
    return ", ".join(str(i) for i in ids)
