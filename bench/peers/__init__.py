"""The peers: Dramatiq, Celery and procrastinate running the same unit of work (`bench.peers.work`).

Each app module is imported by its own worker command (`dramatiq`, `celery`, `procrastinate`) and
reads its configuration from the environment the bench gives it (`BENCH_*`), so no peer needs a
settings file.
"""
