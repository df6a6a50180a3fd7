"""One Redis Cluster master down: what publishes on its channels and on the others' get.

    python bench/cluster_outage.py [--outage pause|kill] [--down 10] [--rate 50]

Starts a 3-master Redis Cluster (``cluster-require-full-coverage no``; the
tests' ``tests/redis_server.py``) and two ``python server.py`` processes on
it, with a WebSocket subscriber on each process for two channels: ``healthy``
(its slot on the second master) and ``doomed`` (on the first, the URL's).
Each process is sent ``--rate`` signed publishes per second per channel,
one at a time per (process, channel), through phases: ``before`` (3 s),
``down`` (the first master SIGSTOPped or SIGKILLed, by its PID, for ``--down``
seconds) and ``after`` (resumed or restarted, until a ``doomed`` publish is
answered 200 again, then 3 s more). It prints, per phase (the one each
publish was sent in) and channel, the answers by status, their time
(median, p99, max) and how many of the publications answered 200 every
subscriber received; then when the outage was noticed (the first ``doomed``
503 answered within 0.1 s) and when ``doomed`` published again. A run takes
under a minute with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from client import (APP_ID, KEY, Probe, _opening, open_http, percentile, publish_request, run,
                    stamped)
from servers import Processes, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisCluster  # noqa: E402

PHASES = ("before", "down", "after")
#: Seconds of the phases around the outage.
CALM = 3.0
#: Seconds the ``after`` phase may wait for the down master's channels to publish again.
RECOVERY_LIMIT = 30.0


class StampProbe(Probe):
    """A probe that keeps each publication's send stamp (``time.monotonic_ns()``)."""

    def __init__(self, opening: bytes) -> None:
        super().__init__(opening)
        self.stamps: set[int] = set()

    @classmethod
    async def open(cls, port: int, channel: str) -> StampProbe:
        """Connected and subscribed to ``channel``."""
        _, probe = await asyncio.get_running_loop().create_connection(
            lambda: cls(_opening(port, channel, KEY)), "127.0.0.1", port)
        await asyncio.wait_for(probe.subscribed, 10)
        return probe

    def _message(self, payload: bytes, now: int) -> None:
        count = len(self.latencies)
        super()._message(payload, now)
        if len(self.latencies) > count:
            self.stamps.add(now - self.latencies[-1])


@dataclass
class Answer:
    channel: str
    phase: str
    sent_ns: int
    seconds: float
    status: int


@dataclass
class Run:
    phase: str = "before"
    answers: list[Answer] = field(default_factory=list)
    stopped: bool = False


def channel_on(cluster: RedisCluster, master_index: int) -> str:
    """A channel name whose slot (its ``{app:channel}`` hash tag) that master serves."""
    master = cluster.nodes[master_index]
    return next(name for number in range(10_000) if (name := f"room-{number}")
                and cluster.master_for(f"x:{{{APP_ID}:{name}}}:pub") is master)


async def publisher(port: int, channel: str, rate: float, state: Run) -> None:
    (connection,) = await open_http(port, 1)
    try:
        while not state.stopped:
            started, phase = time.monotonic_ns(), state.phase  # the phase it was sent in
            stamp = stamped(started)
            status, _ = await connection.request(publish_request(port, channel, [stamp], batch=False))
            took = (time.monotonic_ns() - started) / 1e9
            state.answers.append(Answer(channel, phase, started, took, status))
            await asyncio.sleep(max(0.0, 1 / rate - took))  # the offered rate, not synchronisation
    finally:
        connection.close()


async def outage(cluster: RedisCluster, ports: list[int], how: str, down_for: float,
                 rate: float) -> None:
    channels = {"healthy": channel_on(cluster, 1), "doomed": channel_on(cluster, 0)}
    probes = {name: [await StampProbe.open(port, channel) for port in ports]
              for name, channel in channels.items()}

    state = Run()
    tasks = [asyncio.ensure_future(publisher(port, channel, rate, state))
             for channel in channels.values() for port in ports]
    master = cluster.nodes[0]
    start = time.monotonic()
    await asyncio.sleep(CALM)
    state.phase, down_at = "down", time.monotonic()
    master.pause() if how == "pause" else master.kill()
    await asyncio.sleep(down_for)
    state.phase, back_at = "after", time.monotonic()
    await asyncio.get_running_loop().run_in_executor(
        None, master.resume if how == "pause" else master.start)
    deadline = time.monotonic() + RECOVERY_LIMIT
    recovered_at = None
    while recovered_at is None and time.monotonic() < deadline:
        recovered_at = next((a.sent_ns / 1e9 for a in state.answers
                             if a.channel == channels["doomed"] and a.phase == "after"
                             and a.status == 200), None)
        await asyncio.sleep(0.1)  # a polling period, not synchronisation
    await asyncio.sleep(CALM)
    state.stopped = True
    await asyncio.gather(*tasks)
    await asyncio.sleep(1)  # the last publications' way to the subscribers

    print(f"outage: {how} of master 127.0.0.1:{master.port} for {down_for:g} s; "
          f"{rate:g} publishes/s offered per process and channel; two processes")
    print(f"{'phase':7} {'channel':8} {'200':>6} {'503':>6} {'other':>6} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'delivered':>10}")
    for phase in PHASES:
        for name, channel in channels.items():
            answers = [a for a in state.answers if a.phase == phase and a.channel == channel]
            ok = {int(a.sent_ns) for a in answers if a.status == 200}
            took = [a.seconds * 1000 for a in answers]
            delivered = min(len(ok & probe.stamps) for probe in probes[name])
            print(f"{phase:7} {name:8} {len(ok):6d} "
                  f"{sum(a.status == 503 for a in answers):6d} "
                  f"{sum(a.status not in (200, 503) for a in answers):6d} "
                  f"{percentile(took, 0.5):8.1f} {percentile(took, 0.99):8.1f} "
                  f"{max(took, default=float('nan')):8.1f} "
                  f"{f'{delivered}/{len(ok)}':>10}")
    noticed = next((a.sent_ns / 1e9 for a in state.answers
                    if a.channel == channels["doomed"] and a.phase == "down"
                    and a.status == 503 and a.seconds < 0.1), None)
    print("outage noticed (first doomed 503 within 0.1 s): "
          + (f"{noticed - down_at:.1f} s after the {how}" if noticed else "never"))
    print("doomed published again: "
          + (f"{recovered_at - back_at:.1f} s after the master was back"
             if recovered_at else f"not within {RECOVERY_LIMIT:g} s"))
    print(f"run took {time.monotonic() - start:.0f} s; delivered = publications answered 200 "
          "that every subscriber (one per process) received")
    for group in probes.values():
        for probe in group:
            probe.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", choices=["pause", "kill"], default="pause")
    parser.add_argument("--down", type=float, default=10.0, help="seconds the master is down")
    parser.add_argument("--rate", type=float, default=50.0,
                        help="publishes per second per process and channel")
    args = parser.parse_args()
    with Processes() as processes, tempfile.TemporaryDirectory() as directory:
        cluster = RedisCluster(Path(directory), full_coverage=False).start()
        try:
            ports = [free_port(), free_port()]
            for port in ports:
                processes.ours(port, redis_url=cluster.url, cpu=None,
                               env={"PUSH_REDIS_CLUSTER": "true"})
            run(outage(cluster, ports, args.outage, args.down, args.rate))
        finally:
            processes.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
