"""`python -m bench.profile_worker`: where one prasso worker spends its CPU, per delivery.

Runs the full SMS path (database or redis queue, Twilio driver) in this process under cProfile
against a loopback fake Twilio server and a PostgreSQL database, after the fan-out, and prints
the functions that cost the most. The figures of `make bench` say how fast; this says why.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time

import asyncpg
import uvloop

from bench.net import free_port, wait_for_port
from prasso_messaging.config import load_settings
from prasso_messaging.db.migrate import upgrade
from prasso_messaging.messages import SendRequest, create_message, send_message
from prasso_messaging.queue.worker import WorkerOptions
from prasso_messaging.runtime import Runtime
from prasso_messaging.teams import create_team

ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def fresh_database(name: str) -> str:
    admin = await asyncpg.connect(ADMIN)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def prepare(runtime: Runtime, count: int) -> None:
    async with runtime.database.session() as session:
        team = await create_team(session, name="Profile", sms_verified=True)
        message = await create_message(
            session, team_id=team.id, type="sms", body="Hi {{FirstName}}, doors open at 7."
        )
    url = runtime.settings.DATABASE_URL
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "guests",
            records=[(team.id, f"G{i}", f"+1202{5550000 + i:07d}", True) for i in range(count)],
            columns=["team_id", "first_name", "phone", "subscribed"],
        )
    finally:
        await conn.close()
    await send_message(
        runtime.database,
        team_id=team.id,
        request=SendRequest(message.id, all_guests=True),
        dispatcher=runtime.dispatcher(),
    )


async def work(runtime: Runtime, concurrency: int) -> int:
    options = WorkerOptions(concurrency=concurrency, stop_when_empty=True, sleep=0.05)
    return await runtime.make_worker(options).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--queue", choices=["database", "redis"], default="database")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true", help="time it without cProfile")
    args = parser.parse_args()
    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "bench.fake_twilio", "--port", str(port)])
    try:
        wait_for_port(port, 10)
        url = asyncio.run(fresh_database("prasso_profile"))
        upgrade(url)
        settings = load_settings(
            _env_file=None,
            DATABASE_URL=url,
            VAR_DIR=tempfile.mkdtemp(),
            APP_KEY="profile-" + "x" * 32,
            QUEUE_CONNECTION=args.queue,
            REDIS_URL="redis://127.0.0.1:6379/14",
            SMS_DRIVER="twilio",
            TWILIO_API_BASE=f"http://127.0.0.1:{port}",
            TWILIO_ACCOUNT_SID="AC" + "0" * 32,
            TWILIO_AUTH_TOKEN="token",
            TWILIO_PHONE_NUMBER="+12025550100",
            MESSAGING_BATCH_SIZE=100_000,
            MESSAGING_PER_GUEST_MONTHLY_CAP=1_000_000,
        )

        async def run() -> tuple[int, float, float]:
            runtime = Runtime.build(settings, pool_size=16)
            try:
                if args.queue == "redis":
                    await runtime.queue.clear(settings.QUEUE_NAME)
                await prepare(runtime, args.deliveries)
                before = resource.getrusage(resource.RUSAGE_SELF)
                started = time.perf_counter()
                profile = cProfile.Profile()
                if not args.no_profile:
                    profile.enable()
                done = await work(runtime, args.concurrency)
                profile.disable()
                after = resource.getrusage(resource.RUSAGE_SELF)
                seconds = time.perf_counter() - started
                cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                if not args.no_profile:
                    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
                return done, seconds, cpu
            finally:
                await runtime.close()

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as `prasso` runs
            done, seconds, cpu = runner.run(run())
        print(
            f"{done} deliveries in {seconds:.2f} s = {done / seconds:,.0f}/s; "
            f"CPU {cpu * 1000 / done:.3f} ms per delivery"
            + ("" if args.no_profile else " (under cProfile, which inflates it)")
        )
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
