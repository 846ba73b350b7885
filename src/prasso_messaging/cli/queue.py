"""`prasso queue ...`: the worker and the queue's housekeeping."""

from __future__ import annotations

from typing import Annotated

import typer

from prasso_messaging.cli.app import open_runtime, run, settings
from prasso_messaging.queue.worker import WorkerOptions

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
) -> None:
    """Process delivery jobs until stopped (SIGTERM/SIGINT finish the jobs in hand first)."""
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
        async with open_runtime(config, pool_size=max(5, concurrency)) as runtime:
            worker = runtime.make_worker(options)
            worker.install_signal_handlers()
            return await worker.run()

    processed = run(loop)
    typer.echo(f"worker stopped after {processed} job(s)", err=True)
