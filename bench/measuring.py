"""How ``bench/broadcast.py`` measures: fresh servers per measurement (:func:`measure`),
the CPU each side used (:class:`Window`), runs interleaved over the servers compared.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import client
from client import NCHAN, PUSHER, cpu_seconds, stamped
from report import OTHER_LOAD_WARNING
from servers import ROOT, Processes, Server, free_port

CHANNEL = "bench"
#: How each server is spoken to.
WIRES = {"nchan": NCHAN}


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Setup:
    """What every measurement of a run shares."""

    #: The checkout whose server.py is "ours" (--our-root).
    our_root: Path = ROOT
    #: --gc-pauses: a directory for the servers' GC logs; ``gc_log`` is the current server's.
    gc_dir: str | None = None
    gc_log: str | None = None


SETUP = Setup()


@dataclass(frozen=True)
class Deployment:
    """The servers of one measurement: subscribers connect to ``subscribe``, publishes go to
    ``publish`` (the same server, or another one through Redis); ``wire`` is how to talk."""

    kind: str
    wire: client.Wire
    subscribe: Server
    publish: Server

    @property
    def servers(self) -> list[Server]:
        return [self.subscribe] if self.publish is self.subscribe else [self.subscribe, self.publish]

    def cpu_seconds(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)


def measure(kind: str, work: Callable[[Deployment], Awaitable[dict[str, Any]]], *,
            through_redis: bool = False) -> dict[str, Any]:
    """Start fresh ``kind`` servers on CPU 0 (two on one Redis when ``through_redis``), run
    ``work`` against them on this client, stop them."""
    SETUP.gc_log = None
    if SETUP.gc_dir:
        descriptor, SETUP.gc_log = tempfile.mkstemp(dir=SETUP.gc_dir, suffix=".log")
        os.close(descriptor)
    with tempfile.TemporaryDirectory() as directory, Processes(gc_log=SETUP.gc_log) as processes:
        redis_url = None
        if through_redis:
            redis_port = free_port()
            processes.redis(redis_port, directory)
            redis_url = f"redis://127.0.0.1:{redis_port}"

        def start() -> Server:
            return processes.start(kind, free_port(), redis_url=redis_url, cpu=0, root=SETUP.our_root)

        subscribe = start()
        deployment = Deployment(kind, WIRES.get(kind, PUSHER), subscribe,
                                start() if through_redis else subscribe)
        result = client.run(work(deployment))
        if not all(server.alive() for server in deployment.servers):
            raise RuntimeError(f"a {kind} server died during the measurement")
        return result


async def all_within(futures: list, seconds: float) -> bool:
    """Wait for every future; False if they were not all done within ``seconds``."""
    try:
        await asyncio.wait_for(asyncio.gather(*futures), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def frame_size(d: Deployment, receivers: list[client.Receiver],
                     connections: list[client.HttpConnection]) -> int:
    """Publish one event and return the bytes each subscriber received (the same for all)."""
    firsts = [r.expect(1) for r in receivers]
    await client.send(connections[0], d.wire.publish(d.publish.port, CHANNEL, [stamped()]))
    await asyncio.wait_for(asyncio.gather(*firsts), 30)
    await asyncio.sleep(0.2)
    sizes = {r.received for r in receivers}
    if len(sizes) != 1:
        raise RuntimeError(f"{d.kind}: subscribers received different frame sizes {sizes}")
    return sizes.pop()


def gc_pauses(since: float, until: float) -> list[float]:
    """The current server's GC pauses (ms) between two ``time.monotonic()`` readings."""
    if SETUP.gc_log is None or not os.path.exists(SETUP.gc_log):
        return []
    with open(SETUP.gc_log) as log:
        return [float(pause) for at, _, pause in (line.split() for line in log)
                if since <= float(at) <= until]


async def loop_stalls(stalls: list[float]) -> None:
    """Record how late this client's loop wakes from 1 ms sleeps (s): its own stalls."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - started - 0.001)


_TICKS = os.sysconf("SC_CLK_TCK")


def machine_task_seconds() -> float:
    """CPU seconds all processes spent in user and system mode (not interrupts), all CPUs."""
    with open("/proc/stat") as stat:
        user, nice, system = (int(v) for v in stat.readline().split()[1:4])
    return (user + nice + system) / _TICKS


class Window:
    """CPU use of the servers, of this client, and of everything else over a measured interval.

    The client's share includes its load generators that finished in the window (wrk),
    so they do not count as other load.
    """

    def __init__(self, d: Deployment) -> None:
        self.deployment = d
        self.started = time.perf_counter()
        self.server_cpu = d.cpu_seconds()
        self.client_cpu = cpu_seconds()
        self.children_cpu = children_cpu_seconds()
        self.machine = machine_task_seconds()

    def close(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        server = (self.deployment.cpu_seconds() - self.server_cpu) / elapsed
        own = (cpu_seconds() - self.client_cpu + children_cpu_seconds() - self.children_cpu) / elapsed
        machine = (machine_task_seconds() - self.machine) / elapsed
        return {"seconds": elapsed, "server_cpu": server, "client_cpu": own,
                "other_cpu": max(0.0, machine - server - own)}


def children_cpu_seconds() -> float:
    """CPU time of this client's finished load generators (wrk)."""
    times = os.times()
    return times.children_user + times.children_system


def other_load(result: dict[str, Any]) -> str:
    """A warning when other processes used the CPUs during the window, else nothing."""
    other = result.get("other_cpu", 0.0)
    return (f", OTHER PROCESSES used {other:.0%} of a CPU: figure suspect"
            if other > OTHER_LOAD_WARNING else "")


@dataclass
class Runs:
    """The measurements behind one figure, by server. A measurement that failed was reported
    as it happened and is left out; ``failures`` counts them."""

    results: dict[str, list[dict[str, Any]]]
    failures: int = 0

    def medians(self, key: str) -> dict[str, float]:
        """Each server's median of ``key``, for the servers with a measurement."""
        return {kind: statistics.median(r[key] for r in rs) for kind, rs in self.results.items()
                if rs}

    def first(self) -> dict[str, dict[str, Any]]:
        """Each server's first measurement (for figures measured once)."""
        return {kind: rs[0] for kind, rs in self.results.items() if rs}

    def all(self) -> list[dict[str, Any]]:
        return [r for rs in self.results.values() for r in rs]

    @property
    def complete(self) -> bool:
        """No measurement failed, and every one delivered all it should have."""
        return not self.failures and all(r.get("complete", True) for r in self.all())


def run_interleaved(kinds: tuple[str, ...], runs: int,
                    measure_one: Callable[[str], dict[str, Any]],
                    describe: Callable[[str, dict[str, Any]], str]) -> Runs:
    """``runs`` rounds of one measurement per kind, interleaved so that drift in the machine
    hits every server alike; each printed as it comes. One that fails (a server that dies or
    refuses the load, a timeout) is printed as FAILED and the run goes on."""
    done = Runs({kind: [] for kind in kinds})
    for _ in range(runs):
        for kind in kinds:
            try:
                result = measure_one(kind)
            except (RuntimeError, OSError) as error:  # OSError: also timeouts, refused connections
                done.failures += 1
                say(f"   {kind:<8} FAILED: {type(error).__name__}: {str(error)[:300]}")
                continue
            done.results[kind].append(result)
            say(describe(kind, result))
    return done
