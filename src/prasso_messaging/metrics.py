"""Prometheus metrics: counters kept by the processes that do the work, gauges read at scrape.

Counters and the provider latency histogram use prometheus_client's multiprocess mode: every
process of a host (`prasso serve`, each `prasso queue work`, `prasso up`) writes its values to its
own memory-mapped file in one directory (PROMETHEUS_MULTIPROC_DIR, `VAR_DIR/metrics` by default),
and `/metrics` sums the files. A process that exits leaves its file, so a total never drops when
a worker restarts. An increment writes a few bytes to memory, about 2 µs: no statement, no
message, whatever the rate.

Queue depth, the oldest due delivery's age, failed jobs and live workers are read when scraped:
the queue driver's `size`, one LIMIT 1 read through the partial index of queued deliveries, and
a count of `failed_jobs`. Nothing counts the rows of `msg_deliveries`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from prasso_messaging.backlog import oldest_due_age
from prasso_messaging.errors import ConfigError, DeliverySkipped, SendError

if TYPE_CHECKING:
    from prasso_messaging.db.engine import Database
    from prasso_messaging.failed_jobs import FailedJobs
    from prasso_messaging.queue.base import QueueDriver

LiveWorkers = Callable[[], Awaitable[Sequence[str]]]
"""The queue of each live worker (from the workers registry), for `prasso_live_workers`."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Registered nowhere: `/metrics` reads them back from every process's file (`exposition`).
DELIVERIES = Counter(
    "prasso_deliveries",
    "Delivery outcomes recorded, by channel, status and reason (one per status reached;"
    " retried and deferred count each attempt put back).",
    ["channel", "status", "reason"],
    registry=None,
)
QUEUED = Counter(
    "prasso_deliveries_queued",
    "Deliveries queued by sends, by channel.",
    ["channel"],
    registry=None,
)
PROVIDER_LATENCY = Histogram(
    "prasso_provider_latency_seconds",
    "Time of one send through a provider, by provider and outcome.",
    ["provider", "outcome"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)

PROVIDER_FAILOVERS = Counter(
    "prasso_provider_failovers",
    "Sends the first provider certainly did not take (down, 5xx, circuit open) handed to the"
    " next, by the provider passed over and the one tried instead.",
    ["provider", "to"],
    registry=None,
)
CIRCUIT_CHANGES = Counter(
    "prasso_provider_circuit_changes",
    "Circuit breaker changes, by provider and the state entered (open, half_open, closed);"
    " each worker process keeps its own circuits.",
    ["provider", "state"],
    registry=None,
)

_directory: Path | None = None
_outcomes: dict[tuple[str, str, str], Counter] = {}
_latencies: dict[tuple[str, str], Histogram] = {}


def use_directory(directory: Path) -> Path:
    """Keep this process's metrics in `directory` (created if missing) and return the directory
    in use. The first call of a process decides: values already written stay in their file.
    Raises ConfigError, naming the setting, when the directory cannot be written."""
    global _directory
    if _directory is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"PROMETHEUS_MULTIPROC_DIR: cannot create {directory} ({exc.strerror or exc})"
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR: {directory} is not writable")
        if not getattr(values.ValueClass, "_multiprocess", False):
            # Children made before (a test, a check) keep in-memory values that no file shows:
            # drop them, so that each is made again backed by this process's file. (Before the
            # environment names the directory: prometheus_client refuses to clear after.)
            for metric in (
                DELIVERIES,
                QUEUED,
                PROVIDER_LATENCY,
                PROVIDER_FAILOVERS,
                CIRCUIT_CHANGES,
            ):
                metric.clear()
            _outcomes.clear()
            _latencies.clear()
            # the value class was chosen when prometheus_client was imported, from the
            # environment of that moment
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # where prometheus_client looks
        _directory = directory
    return _directory


def delivery_outcome(channel: str | None, status: str, reason: str | None) -> None:
    """Count one recorded outcome (`reason` None: none, an empty label)."""
    key = (channel or "", status, reason or "")
    child = _outcomes.get(key)
    if child is None:
        child = _outcomes[key] = DELIVERIES.labels(*key)
    child.inc()


def deliveries_created(channel: str, queued: int, skipped: Mapping[str, int]) -> None:
    """Count a send's deliveries: those queued, and those skipped at once by reason."""
    if queued:
        QUEUED.labels(channel).inc(queued)
    for reason, count in skipped.items():
        DELIVERIES.labels(channel, "skipped", reason).inc(count)


def deliveries_skipped(channel: str, reason: str, count: int) -> None:
    """Count deliveries skipped outside the pipeline, e.g. the queued ones a cancel skips."""
    if count:
        DELIVERIES.labels(channel, "skipped", reason).inc(count)


def provider_latency(provider: str, outcome: str, seconds: float) -> None:
    key = (provider, outcome)
    child = _latencies.get(key)
    if child is None:
        child = _latencies[key] = PROVIDER_LATENCY.labels(*key)
    child.observe(seconds)


@contextlib.contextmanager
def provider_call(provider: str) -> Iterator[None]:
    """Observe the time of one call to `provider` with its outcome: sent, transient_error,
    permanent_error, timeout (cut short by the worker's `--timeout`) or error. A skip, which
    calls no provider, is not observed."""
    outcome: str | None = None
    started = time.perf_counter()
    try:
        yield
        outcome = "sent"
    except SendError as exc:
        outcome = "transient_error" if exc.transient else "permanent_error"
        raise
    except (TimeoutError, asyncio.CancelledError):
        outcome = "timeout"
        raise
    except DeliverySkipped:
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        if outcome is not None:
            provider_latency(provider, outcome, time.perf_counter() - started)


def provider_failover(provider: str, to: str) -> None:
    PROVIDER_FAILOVERS.labels(provider, to).inc()


def circuit_changed(provider: str, state: str) -> None:
    CIRCUIT_CHANGES.labels(provider, state).inc()


async def exposition(
    *,
    database: Database,
    queue: QueueDriver,
    queue_name: str,
    failed: FailedJobs,
    live_workers: LiveWorkers | None = None,
) -> bytes:
    """The Prometheus text of this host's processes and of the shared queue: counters summed
    from every file of the directory in use, then the gauges read now. `queue_name` is the
    queue sends dispatch to (the oldest due delivery's); `live_workers`, when given, adds
    `prasso_live_workers` per queue."""
    failed_by_queue = await failed.count_by_queue()
    workers = list(await live_workers()) if live_workers is not None else None
    worked = list(dict.fromkeys([queue_name, *sorted(workers or [])]))  # queues known to exist
    sizes = {name: await queue.size(name) for name in worked}
    oldest = await oldest_due_age(database)

    depth = GaugeMetricFamily(
        "prasso_queue_depth", "Jobs in the queue, by state.", labels=["queue", "state"]
    )
    for name, size in sizes.items():
        for state, count in (
            ("ready", size.ready),
            ("delayed", size.delayed),
            ("reserved", size.reserved),
        ):
            depth.add_metric([name, state], count)
    age = GaugeMetricFamily(
        "prasso_queue_oldest_age_seconds",
        "How long the oldest due delivery has waited (0: none is due).",
        labels=["queue"],
    )
    age.add_metric([queue_name], oldest or 0.0)
    failures = GaugeMetricFamily("prasso_failed_jobs", "Rows in failed_jobs.", labels=["queue"])
    for name in dict.fromkeys([*worked, *sorted(failed_by_queue)]):
        failures.add_metric([name], failed_by_queue.get(name, 0))
    gauges: list[Metric] = [depth, age, failures]
    if workers is not None:
        live = GaugeMetricFamily(
            "prasso_live_workers", "Workers seen in the last minute.", labels=["queue"]
        )
        for name in worked:
            live.add_metric([name], workers.count(name))
        gauges.append(live)

    registry = CollectorRegistry(auto_describe=False)
    if _directory is not None:
        MultiProcessCollector(registry, path=str(_directory))  # type: ignore[no-untyped-call]
    registry.register(_Read(gauges))
    return generate_latest(registry)


class _Read(Collector):
    """Metrics read before the scrape, handed to the registry as a collector."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics
