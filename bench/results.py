"""What one measured run produced, and the summaries (median, min-max) across rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bench.postgres import Statements

T = TypeVar("T")


@dataclass
class DeliveryRun:
    """N SMS through one system: workers started, timed until every delivery is recorded."""

    system: str
    round: int
    items: int
    seconds: float  # workers started -> last delivery recorded in the database
    cpu_seconds: float  # user+sys of every worker process (start-up and shutdown included)
    db_cpu_seconds: float  # user+sys of the PostgreSQL server over the same phase
    startup_cpu_seconds: float  # the workers' CPU before the first provider request (sampled)
    peak_rss_kb: int  # the largest single worker process
    processes: int
    statements: Statements | None
    requests: int  # requests the fake provider answered
    distinct_recipients: int
    first_request: float | None  # seconds after the workers started
    last_request: float | None
    problems: list[str] = field(default_factory=list)
    source: str = ""  # fingerprint of the product's source the run used (prasso runs only)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float | None:
        """Deliveries/s between the first and the last provider request: start-up left out."""
        if self.first_request is None or self.last_request is None:
            return None
        span = self.last_request - self.first_request
        return (self.requests - 1) / span if span > 0 and self.requests > 1 else None

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000 * self.cpu_seconds / self.items if self.items else 0.0

    @property
    def working_cpu_ms_per_item(self) -> float:
        """Worker CPU per delivery once sending began: start-up (imports, connecting) left out."""
        working = self.cpu_seconds - self.startup_cpu_seconds
        return 1000 * working / self.items if self.items else 0.0

    @property
    def db_cpu_ms_per_item(self) -> float:
        return 1000 * self.db_cpu_seconds / self.items if self.items else 0.0


@dataclass
class FanOutRun:
    """One `POST /api/messages/send` to every guest of the team, no worker running."""

    system: str
    round: int
    recipients: int
    seconds: float
    queued: int
    statements: Statements | None
    db_cpu_seconds: float
    api_peak_rss_kb: int
    problems: list[str] = field(default_factory=list)
    source: str = ""  # fingerprint of the product's source the run used (prasso runs only)

    @property
    def rate(self) -> float:
        return self.recipients / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PacingRun:
    """SMS under a binding provider pace, read from the fake provider's arrival times."""

    round: int
    items: int
    limit: int  # sends allowed per window
    window: float  # seconds
    requests: int
    windows_over: int  # sliding windows holding more than `limit` arrivals
    busiest_window: int  # the most arrivals any sliding window held
    elapsed: float  # first arrival -> last arrival
    ideal: float  # (items / limit - 1) * window
    seconds: float  # workers started -> every delivery recorded
    problems: list[str] = field(default_factory=list)
    source: str = ""  # fingerprint of the product's source the run used (prasso runs only)

    @property
    def efficiency(self) -> float:
        return self.ideal / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Ceiling:
    """The fake provider's answers per second to a loopback client in another process."""

    connections: int
    requests: int
    seconds: float
    server_cpu_seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cpu_us(self) -> float:
        return 1e6 * self.server_cpu_seconds / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure across rounds."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))


def spread(runs: Sequence[T], figure: Callable[[T], float | None]) -> Spread | None:
    values = [value for value in map(figure, runs) if value is not None]
    return Spread.of(values)


def sliding_windows(times: Sequence[float], limit: int, window: float) -> tuple[int, int]:
    """(windows holding more than `limit` arrivals, the most any window held).

    A window starts at every arrival and holds the arrivals in [t, t + window): the strictest
    reading, since any 1-second span with more than `limit` arrivals contains one that starts at
    an arrival.
    """
    ordered = sorted(times)
    over = busiest = 0
    end = 0
    for start, t in enumerate(ordered):
        end = max(end, start)
        while end < len(ordered) and ordered[end] < t + window:
            end += 1
        held = end - start
        busiest = max(busiest, held)
        if held > limit:
            over += 1
    return over, busiest


@dataclass
class Collected:
    """Everything one invocation measured, in the order it ran."""

    deliveries: list[DeliveryRun] = field(default_factory=list)
    fanouts: list[FanOutRun] = field(default_factory=list)
    pacing: list[PacingRun] = field(default_factory=list)
    ceiling: Ceiling | None = None
    failures: list[str] = field(default_factory=list)  # runs that raised instead of finishing
    seconds: float = 0.0

    def problems(self) -> list[str]:
        found = [f"round {f}" for f in self.failures]
        runs: list[DeliveryRun | FanOutRun | PacingRun] = [
            *self.deliveries,
            *self.fanouts,
            *self.pacing,
        ]
        for run in runs:
            name = getattr(run, "system", "pacing")
            found += [f"round {run.round}, {name}: {problem}" for problem in run.problems]
        return found
