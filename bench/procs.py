"""Child processes the bench starts, and what they cost: CPU time and peak memory.

Each child gets its own session (so a Ctrl-C at the terminal reaches only the bench, which then
stops them in order) and its output goes to a log file. Children are reaped with `wait4`, the one
call that returns a process's exact user+sys time and peak RSS after it exits, including the
children it reaped itself (Celery's and Dramatiq's pool processes). A sampler also reads /proc for
the whole process tree while it runs, for the processes nobody reaps and for per-process peaks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


@dataclass
class Usage:
    """What a group of processes cost over their lifetime."""

    cpu_seconds: float = 0.0  # user + sys, summed over every process of the group
    peak_rss_kb: int = 0  # the largest peak RSS of any single process
    processes: int = 0  # how many distinct processes were seen


@dataclass
class _Seen:
    cpu_seconds: float = 0.0
    hwm_kb: int = 0


class Child:
    """One started command; `poll()` reaps it without blocking once it has exited."""

    live: set[Child] = set()

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log: Path,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self._popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._popen.pid
        self.status: int | None = None  # the exit code once reaped (negative: killed by a signal)
        self.cpu_seconds = 0.0
        self.maxrss_kb = 0
        self.seen: dict[int, _Seen] = {}
        self.history: list[tuple[float, float]] = []  # (time.time(), CPU seconds of the tree)
        Child.live.add(self)

    def poll(self) -> bool:
        """Reap the process if it has exited; True while it still runs."""
        if self.status is not None:
            return False
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status, rusage = self.pid, 0, None
        if pid == 0:
            return True
        self.status = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.status  # so Popen never waits for it again
        if rusage is not None:
            self.cpu_seconds = rusage.ru_utime + rusage.ru_stime
            self.maxrss_kb = rusage.ru_maxrss  # kilobytes; includes the pre-exec fork's RSS
        Child.live.discard(self)
        return False

    def sample(self) -> None:
        """Read CPU time and peak RSS of the process and its descendants from /proc."""
        if self.status is not None:
            return
        try:
            tree = [psutil.Process(self.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.Error:
            return
        for proc in tree:
            seen = self.seen.setdefault(proc.pid, _Seen())
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                seen.cpu_seconds = max(
                    seen.cpu_seconds, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
                )
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        seen.hwm_kb = max(seen.hwm_kb, int(line.split()[1]))
        self.history.append((time.time(), sum(seen.cpu_seconds for seen in self.seen.values())))

    def cpu_before(self, wall: float) -> float:
        """CPU seconds the tree had used by wall-clock time `wall` (the last sample before it)."""
        used = 0.0
        for at, cpu in self.history:
            if at > wall:
                break
            used = cpu
        return used

    def peak_rss_kb(self) -> int:
        """The largest VmHWM sampled in the tree (wait4's ru_maxrss only if never sampled)."""
        peaks = [seen.hwm_kb for seen in self.seen.values() if seen.hwm_kb]
        return max(peaks) if peaks else self.maxrss_kb

    def signal(self, signum: int, *, group: bool = False) -> None:
        """Signal the child, or its whole process group (its session, which it leads).

        A graceful stop goes to the child alone: Dramatiq and Celery pass it on to their pool
        processes themselves, and take a second SIGTERM as an order to kill them.
        """
        if self.status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group:
                    os.killpg(self.pid, signum)
                else:
                    os.kill(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the exit; True if it exited."""
        deadline = time.perf_counter() + timeout
        while self.poll():
            if time.perf_counter() > deadline:
                return False
            self.sample()
            time.sleep(0.02)
        return True

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: never leaves the child behind."""
        if self.status is None:
            self.signal(signal.SIGTERM)
            if not self.wait(grace):
                self.signal(signal.SIGKILL, group=True)
                self.wait(5.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # a pool process its parent left behind

    def errors(self) -> tuple[int, str]:
        """How many exception lines the log holds, and the last one (for a failed run's note)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0, ""
        found = [line for line in text.splitlines() if EXCEPTION_LINE.match(line)]
        return len(found), (found[-1][:300] if found else "")

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def usage(children: Iterable[Child]) -> Usage:
    """CPU and peak RSS of reaped children.

    CPU: wait4's figure (exact, reaped pool processes included), or the /proc samples where
    those are larger (pool processes nobody reaped). Peak RSS: the sampled VmHWM of each process,
    not wait4's ru_maxrss, which also holds the RSS of the bench's own forked copy before exec.
    """
    total = Usage()
    for child in children:
        sampled_cpu = sum(seen.cpu_seconds for seen in child.seen.values())
        total.cpu_seconds += max(child.cpu_seconds, sampled_cpu)
        total.peak_rss_kb = max(total.peak_rss_kb, child.peak_rss_kb())
        total.processes += max(1, len(child.seen))
    return total


def stop_all() -> None:
    """The cleanup path (exceptions, Ctrl-C): stop every child still running."""
    for child in list(Child.live):
        child.signal(signal.SIGTERM)
    for child in list(Child.live):
        if not child.wait(10.0):
            child.signal(signal.SIGKILL, group=True)
            child.wait(5.0)
        Child.live.discard(child)


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """A short setup command: its stdout, or an error carrying its output."""
    done = subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        start_new_session=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout
