"""Several hosts on one machine: network namespaces on a private bridge, and relays to loopback.

Each namespace is a host of its own (its own address, its own loopback), joined to the root
namespace by a veth pair whose root end sits on one bridge. The bridge holds the gateway
address (`.1` of the subnet); services the test runs in the root namespace listen there, so
only the namespaces reach them. The machine's PostgreSQL and Redis listen on loopback, which a
namespace cannot reach: a `Relay` on the gateway address carries each connection to them.

Names share a short prefix; a crashed run's leftovers are removed at the next start. An
exclusive lock on a file serialises runs, so that clean-up never touches a live run's network
(the lock goes away with the process that held it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LOCK_FILE = Path(tempfile.gettempdir()) / "prasso-test-netns.lock"


def unavailable() -> str | None:
    """What to do so that namespaces can be made here (None when they can): they need root
    and iproute2."""
    if os.geteuid() != 0:
        return "run the tests as root"
    if shutil.which("ip") is None:
        return "install iproute2 (apt-get install iproute2)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Namespace:
    """One host: a namespace with one address on the private subnet."""

    name: str
    address: str

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace (`ip netns exec` replaces itself with it, so the
        process's id and signals are those of the command)."""
        return ["ip", "netns", "exec", self.name, *argv]


@dataclass(frozen=True)
class PrivateNetwork:
    gateway: str
    """The root namespace's address on the bridge: where relays and fakes listen."""
    hosts: dict[str, Namespace]


def _remove_leftovers(prefix: str) -> None:
    """Namespaces and links of an earlier run that died before its clean-up (and the processes
    it had started in them, which would keep a namespace alive)."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(prefix):
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix):
            ip("link", "del", name, check=False)


@contextlib.contextmanager
def private_network(
    names: Sequence[str], *, prefix: str = "pmh", subnet: str = "10.213.0"
) -> Iterator[PrivateNetwork]:
    """Namespaces `prefix-NAME` with addresses `subnet.2`, `.3`, ... on a bridge holding
    `subnet.1`; all removed on exit. Stop the processes started in them first."""
    assert all(len(f"{prefix}-{name}0") <= 15 for name in names), "interface names: 15 at most"
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_leftovers(prefix)
        routes = ip("route", "show", "to", "match", f"{subnet}.1").stdout.splitlines()
        if any(not route.startswith("default") for route in routes):
            raise RuntimeError(f"{subnet}.0/24 is already routed on this machine; choose another")
        bridge = f"{prefix}-br"
        try:
            ip("link", "add", "name", bridge, "type", "bridge")
            ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
            ip("link", "set", bridge, "up")
            hosts = {}
            for n, name in enumerate(names, start=2):
                host = Namespace(f"{prefix}-{name}", f"{subnet}.{n}")
                ip("netns", "add", host.name)
                outside, inside = f"{host.name}0", f"{host.name}1"
                ip(
                    "link",
                    "add",
                    outside,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    inside,
                    "netns",
                    host.name,
                )
                ip("link", "set", outside, "master", bridge, "up")
                ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", inside)
                ip("-n", host.name, "link", "set", inside, "up")
                ip("-n", host.name, "link", "set", "lo", "up")
                hosts[name] = host
            yield PrivateNetwork(f"{subnet}.1", hosts)
        finally:
            _remove_leftovers(prefix)


class Relay:
    """Carries TCP connections accepted on one address to `target`, byte for byte, and counts
    the connections by client address (which hosts used the service)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.clients: Counter[str] = Counter()
        self.server: asyncio.Server | None = None
        self.streams: set[asyncio.StreamWriter] = set()
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients[writer.get_extra_info("peername")[0]] += 1
        self.streams.add(writer)
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            self._close(writer)
            return
        self.streams.add(upstream)
        for source, sink in ((reader, upstream), (upstream_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink))
            self.pumps.add(pump)
            pump.add_done_callback(self.pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copies until one side closes, then closes the other: the opposite pump ends too."""
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            self._close(sink)

    def _close(self, writer: asyncio.StreamWriter) -> None:
        self.streams.discard(writer)
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in list(self.streams):
            self._close(writer)
        await asyncio.gather(*self.pumps, return_exceptions=True)


class LoopThread:
    """An asyncio loop in a thread of its own: the relays and fake services that processes in
    the namespaces talk to keep answering while the test itself blocks (on a subprocess, a
    sync HTTP call, `asyncio.run`)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Runs `coroutine` on the thread's loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
