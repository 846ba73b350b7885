"""`prasso up`, `prasso serve` and `prasso db upgrade`.

The web stack (uvicorn, FastAPI, the admin pages) and Alembic are imported inside the commands
that need them: every other command, `prasso queue work` first, starts without paying for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

import typer

from prasso_messaging.cli.app import (
    check_ready,
    fail,
    one_line_errors,
    open_runtime,
    run,
    settings,
)

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from prasso_messaging.config import Settings
    from prasso_messaging.demo import DemoAccess
    from prasso_messaging.runtime import Runtime

log = logging.getLogger(__name__)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def migrate(config: Settings) -> None:
    from prasso_messaging.config import redact_url
    from prasso_messaging.db.migrate import upgrade

    try:
        upgrade(config.DATABASE_URL)
    except OSError as exc:
        fail(f"DATABASE_URL: cannot reach {redact_url(config.DATABASE_URL)} ({exc})", code=2)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (safe to run twice)."""
    from prasso_messaging.config import redact_url

    config = settings()
    migrate(config)
    typer.echo(f"database at {redact_url(config.DATABASE_URL)} is up to date")


def _default_bind(config: Settings) -> tuple[str, int]:
    parts = urlsplit(config.APP_URL)
    return "127.0.0.1", parts.port or 8000


def _check_port_free(host: str, port: int) -> None:
    """Stop in one line, before any banner, when the address is taken (another `prasso up`, a
    dev server), naming it and how to pick another, rather than after start-up in a traceback."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is in use; choose another with --port"
                    f" (make run PORT=8150) or stop what listens there"
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def server_config(app: FastAPI, config: Settings, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings for `app`, with access lines that carry no query string or token."""
    import uvicorn

    from prasso_messaging.observability import redact_access_log

    server = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=config.LOG_LEVEL.lower(),
        # json: uvicorn's lines go through the root logger's JSON handler, not its own
        log_config=None if config.LOG_FORMAT == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    redact_access_log()
    return server


async def _warn_without_workers(runtime: Runtime) -> None:
    """`prasso serve` takes sends but does not work them: say so when no worker is running."""
    from prasso_messaging.queue.workers import WorkerRegistry

    if runtime.settings.QUEUE_CONNECTION == "sync":
        return
    if not await WorkerRegistry(runtime.database).live():
        log.warning(
            "no worker is running on queue %r: sends stay queued until one starts"
            " (`prasso queue work` on any host, or `prasso serve --with-worker`)",
            runtime.settings.QUEUE_NAME,
        )


def _serve(config: Settings, host: str, port: int, *, with_worker: bool) -> None:
    import uvicorn

    from prasso_messaging.api.health import is_loopback
    from prasso_messaging.app import create_app
    from prasso_messaging.runtime import Runtime

    if not config.METRICS_TOKEN and not is_loopback(host):
        log.warning(
            "METRICS_TOKEN is empty and the server listens on %s: /metrics answers 403 until it"
            " is set",
            host,
        )

    class _Server(uvicorn.Server):
        """uvicorn's server, minus re-raising SIGINT/SIGTERM after a clean shutdown (exit 0)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handler = self.handle_exit
            original = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, previous in original.items():
                    signal.signal(sig, previous)

    async def main() -> None:
        runtime = Runtime.build(config)
        try:
            await check_ready(runtime, [config.QUEUE_NAME])
            if not with_worker:
                await _warn_without_workers(runtime)

            def exit_after_restart() -> None:
                log.warning("the in-process worker stopped for a restart; shutting down")
                server.should_exit = True

            app = create_app(
                config,
                runtime=runtime,
                with_worker=with_worker,
                listen_host=host,
                on_worker_restart=exit_after_restart,
            )
            server = _Server(server_config(app, config, host, port))
            await server.serve()
        finally:
            await runtime.close()

    with one_line_errors():
        asyncio.run(main())


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default: APP_URL's).")] = None,
        with_worker: Annotated[bool, typer.Option(help="Run a queue worker in-process.")] = False,
    ) -> None:
        """Serve the API (and admin pages)."""
        config = settings()
        default_host, default_port = _default_bind(config)
        bind_host, bind_port = host or default_host, port or default_port
        _check_port_free(bind_host, bind_port)
        _serve(config, bind_host, bind_port, with_worker=with_worker)

    @app.command("up")
    def up(
        host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default: APP_URL's).")] = None,
    ) -> None:
        """Migrate, seed a demo team when empty, and serve with an in-process worker."""
        config = settings()
        default_host, default_port = _default_bind(config)
        bind_host, bind_port = host or default_host, port or default_port
        _check_port_free(bind_host, bind_port)
        migrate(config)

        from prasso_messaging.demo import seed_demo

        async def seed() -> DemoAccess:
            async with open_runtime(config) as runtime:
                return await seed_demo(runtime)

        demo = run(seed)
        url = f"http://{bind_host}:{bind_port}"
        typer.echo(f"Prasso Messaging: {url}  (API docs: {url}/docs)")
        if demo.admin_email and demo.admin_password:
            typer.echo(
                f"Admin login: {url}/admin  email {demo.admin_email}"
                f"  password {demo.admin_password}"
            )
        if demo.api_token:
            typer.echo(f"Demo API token: {demo.api_token}")
        _serve(config, bind_host, bind_port, with_worker=True)
