"""100,000 subscribed connections on one machine (issue 16, item 1).

    python bench/hundred_k.py [--connections 100000] [--quick] [--per-process 15000]

One Redis (a redis-server started here, no persistence), as many
``python server.py`` processes as the descriptor limit requires (at most
``--per-process`` connections each: the hard limit is 20,000 descriptors per
process here), and as many load processes (this script with ``--worker``),
each holding at most ``--per-process`` connections, spread over every server
and over its own 127.0.w.x source addresses. Every connection subscribes
``broadcast``; up to 100 of them (the app's presence limit), an equal share on
every server, join ``presence-hundred-k`` too, signed as an app's auth
endpoint signs channel_data. Then, printed as a table at the end:

- connect rate: connections per second, from the start until all subscribed;
- RSS per connection: the servers' VmRSS summed, and Redis's used_memory and
  RSS, before and after connecting, divided by the connections;
- HTTP API: ``broadcast``'s subscription_count and the presence channel's
  user_count and /users, asked of one server, against what was opened;
- broadcast latency: each of ``--broadcasts`` signed publishes carries its
  send time (CLOCK_MONOTONIC, shared by the processes of one host); every
  connection records when it arrived; p50/p99/max over all of them;
- Redis per publish: INFO commandstats and used_memory over a burst of
  ``--publishes`` to the presence channel (subscribed on every server), less an
  idle window as long (heartbeats, node records), divided by their number;
- re-registration: Redis is stopped and a fresh empty one started on its port;
  the time until the HTTP API counts every subscription and member again, and
  whether one more broadcast then reaches everyone;
- leaving: every connection closed at once; the time until the API counts
  nobody (or what it still counts after a minute).

Every process started here is stopped by its own PID, also on failure or
Ctrl-C. Bounded: each wait has a deadline (a full run takes a few minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import redis.asyncio as aioredis

import client
from client import (Probe, SourceAddresses, masked_text_frame, open_subscribers, percentile,
                    publish_request, signed_path, stamped)
from servers import APP_ID, KEY, SECRET, Processes, Server, free_port, raise_fd_limit

BROADCAST = "broadcast"
PRESENCE = "presence-hundred-k"
#: An app's presence channels hold at most this many members (App.max_presence_members).
PRESENCE_LIMIT = 100
#: Descriptors a load process keeps aside (its pipes, Python's own).
FD_MARGIN = 200
#: Bounds of the waits: one broadcast reaching everyone, connecting, re-registration, leaving.
DELIVERY_TIMEOUT = 60.0
REREGISTER_TIMEOUT = 300.0
LEAVE_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
#: What a poll of the HTTP API may meet while the servers are busy or Redis is away.
UNANSWERED = (RuntimeError, ConnectionError, asyncio.TimeoutError)
#: Seconds one connection may take to be subscribed (the machine is busy while connecting).
SUBSCRIBE_TIMEOUT = 180.0
CONNECT_TIMEOUT = 600.0
#: The shortest idle window whose Redis commands (heartbeats, node records) are subtracted.
IDLE_WINDOW = 5.0
#: Keep-alive connections the Redis-per-publish burst is sent over.
PUBLISHERS = 4


@dataclass(frozen=True)
class Plan:
    connections: int = 100_000
    per_process: int = 15_000
    broadcasts: int = 5
    publishes: int = 500

    @property
    def servers(self) -> int:
        return math.ceil(self.connections / self.per_process)

    @property
    def members_per_server(self) -> int:
        return min(PRESENCE_LIMIT // self.servers, self.connections // self.servers)


# -- a presence member (in the coordinating process) ----------------------------


def presence_auth(socket_id: str, channel: str, channel_data: str) -> str:
    """What an app's auth endpoint answers (pubsub/signing.py channel_auth): key:HMAC-SHA256."""
    message = f"{socket_id}:{channel}:{channel_data}".encode()
    return f"{KEY}:{hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()}"


class Member(Probe):
    """A connection on ``broadcast`` and the presence channel, as ``user_id``.

    It reads frames from the end of the upgrade answer on (as a :class:`Probe`),
    subscribes once it has its socket id, and resolves ``subscribed`` when
    both subscriptions succeeded. Broadcast latencies are recorded as a probe's.
    """

    def __init__(self, port: int, user_id: str) -> None:
        super().__init__(client.PUSHER.opening(port, BROADCAST, KEY))
        self.user_id = user_id
        self._pending = 2

    def data_received(self, data: bytes) -> None:
        if self.ready:
            return super().data_received(data)
        self._handshake += data
        head = self._handshake.find(b"\r\n\r\n")
        if head < 0:
            return
        if not self._handshake.startswith(b"HTTP/1.1 101"):
            self._fail(bytes(self._handshake[:300]))
            return
        rest, self._handshake = bytes(self._handshake[head + 4:]), bytearray()
        self.ready = True
        if rest:
            super().data_received(rest)

    def _message(self, payload: bytes, now: int) -> None:
        message = json.loads(payload)
        event = message.get("event")
        if event == "pusher:connection_established":
            socket_id = json.loads(message["data"])["socket_id"]
            channel_data = json.dumps({"user_id": self.user_id, "user_info": {"bench": True}})
            subscribe = {"event": "pusher:subscribe", "data": {
                "channel": PRESENCE, "channel_data": channel_data,
                "auth": presence_auth(socket_id, PRESENCE, channel_data)}}
            self.transport.write(masked_text_frame(json.dumps(subscribe).encode()))
        elif event == "pusher_internal:subscription_succeeded":
            self._pending -= 1
            if self._pending == 0 and not self.subscribed.done():
                self.subscribed.set_result(None)
        elif event == "pusher:error":
            self._fail(payload)
        else:
            super()._message(payload, now)

    def _fail(self, why: bytes) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(why[:300]))
        self.transport.close()


async def open_members(ports: Sequence[int], per_server: int, sources: SourceAddresses
                       ) -> list[Member]:
    """``per_server`` presence members on every server, each from a source address of ``sources``."""
    loop = asyncio.get_running_loop()
    (address,) = sources.take(1)

    async def one(port: int, user_id: str) -> Member:
        _, member = await loop.create_connection(lambda: Member(port, user_id), "127.0.0.1", port,
                                                 local_addr=(address, 0))
        await asyncio.wait_for(asyncio.shield(member.subscribed), 30)
        return member

    return list(await asyncio.gather(*(one(port, f"user-{s}-{i}") for s, port in enumerate(ports)
                                       for i in range(per_server))))


# -- the load processes -----------------------------------------------------------


def latencies_us(probes: Sequence[Probe]) -> list[int | None]:
    """Each probe's first recorded latency in µs since it was last cleared (None: none arrived)."""
    return [p.latencies[0] // 1000 if p.latencies else None for p in probes]


async def await_deliveries(probes: Sequence[Probe], timeout: float) -> None:
    """Return once every probe recorded a latency, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(p.latencies for p in probes):
        await asyncio.sleep(0.02)


async def worker(index: int, ports: Sequence[int], count: int) -> None:
    """One load process: ``count`` connections spread over ``ports``, then commands on stdin.

    Writes one JSON line per step on stdout: ``ready``, then ``subscribed``;
    for each ``measure`` line read, the latencies of the next broadcast
    (µs, null where none arrived within the bound); ``close`` ends it.
    """
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(**message: Any) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    say(ready=index)
    await stdin.readline()  # go
    sources = SourceAddresses(256 * (index + 1))
    shares = [count // len(ports) + (s < count % len(ports)) for s in range(len(ports))]
    started = time.monotonic()
    opened = await asyncio.gather(*(
        open_subscribers(port, share, probes=share, channel=BROADCAST, sources=sources,
                         concurrency=max(8, 64 // len(ports)), timeout=SUBSCRIBE_TIMEOUT,
                         tolerate_failures=True)
        for port, share in zip(ports, shares) if share))
    probes = [p for _, group, _ in opened for p in group]
    say(subscribed=len(probes), failures=sum(f for *_, f in opened),
        seconds=time.monotonic() - started)
    while (await stdin.readline()).strip() == b"measure":
        for probe in probes:
            probe.latencies.clear()
        say(armed=True)
        await await_deliveries(probes, DELIVERY_TIMEOUT)
        say(latencies=latencies_us(probes), lost=sum(p.lost for p in probes))
    client.close_all(probes)


class Worker:
    """A started load process: its JSON lines in, commands out; stopped by its PID."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, index: int, ports: Sequence[int], count: int) -> "Worker":
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-u", str(Path(__file__)), "--worker", str(index),
            "--ports", ",".join(map(str, ports)), "--connections", str(count),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24)
        return cls(process)

    async def read(self, timeout: float) -> dict[str, Any]:
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"load process {self.process.pid} exited")
        return json.loads(line)

    def tell(self, command: str) -> None:
        self.process.stdin.write(command.encode() + b"\n")

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.tell("close")
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()


# -- what the coordinator reads -----------------------------------------------------


class Api:
    """Signed HTTP API requests to one server, each on a connection of its own, bounded in time."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def _request(self, raw: bytes) -> tuple[int, bytes]:
        (connection,) = await client.open_http(self.port, 1)
        try:
            return await asyncio.wait_for(connection.request(raw), 30)
        finally:
            connection.close()

    async def get(self, path: str, **query: str) -> dict[str, Any]:
        request = (f"GET {signed_path(path, b'', method='GET', query=query)} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{self.port}\r\n\r\n").encode()
        status, body = await self._request(request)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        return json.loads(body)

    async def counts(self) -> tuple[int, int, int, int]:
        """broadcast's subscription_count; the presence channel's subscription_count,
        user_count and number of /users."""
        channels = f"/apps/{APP_ID}/channels"
        broadcast = await self.get(f"{channels}/{BROADCAST}", info="subscription_count")
        presence = await self.get(f"{channels}/{PRESENCE}", info="subscription_count,user_count")
        users = await self.get(f"{channels}/{PRESENCE}/users")
        return (broadcast.get("subscription_count", 0), presence.get("subscription_count", 0),
                presence.get("user_count", 0), len(users["users"]))

    async def publish(self, data: str) -> None:
        status, body = await self._request(publish_request(self.port, BROADCAST, [data],
                                                           batch=False, keep_alive=False))
        if status != 200:
            raise RuntimeError(f"publish answered {status}: {body[:200]!r}")


async def redis_figures(store: aioredis.Redis) -> tuple[int, int, dict[str, int]]:
    """used_memory, used_memory_rss and calls per command."""
    memory = await store.info("memory")
    stats = await store.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    return memory["used_memory"], memory["used_memory_rss"], calls


def calls_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0) and name != "info"}


@dataclass
class Broadcast:
    reached: int
    expected: int
    latencies_ms: list[float] = field(repr=False)
    #: Connections found closed (by the server: the load processes close none).
    closed: int = 0

    def row(self) -> str:
        p50, p99 = percentile(self.latencies_ms, 0.5), percentile(self.latencies_ms, 0.99)
        top = max(self.latencies_ms, default=math.nan)
        closed = f" ({self.closed:,} connections closed)" if self.closed else ""
        return (f"{self.reached:,}/{self.expected:,}  p50 {p50:.0f}  p99 {p99:.0f}  "
                f"max {top:.0f} ms{closed}")


class Run:
    """The started processes and connections of one measurement, and its figures."""

    def __init__(self, plan: Plan, directory: str, rows: list[tuple[str, str]]) -> None:
        self.plan = plan
        self.directory = directory
        self.redis_processes = Processes()
        self.server_processes = Processes()
        self.servers: list[Server] = []
        self.workers: list[Worker] = []
        self.members: list[Member] = []
        self.rows = rows
        self.redis_port = free_port()

    def note(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name}: {value}", flush=True)

    async def stop(self) -> None:
        client.close_all(self.members)
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)
        self.server_processes.stop()  # servers before Redis, so that they leave cleanly
        self.redis_processes.stop()

    def start_servers(self) -> None:
        self.redis = self.redis_processes.redis(self.redis_port, self.directory)
        url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.servers = [self.server_processes.ours(free_port(), redis_url=url, cpu=None)
                        for _ in range(self.plan.servers)]
        print(f"redis-server pid {self.redis.pid} on {self.redis_port}; {len(self.servers)} servers: "
              + ", ".join(f"pid {s.pid} on {s.port}" for s in self.servers), flush=True)

    def server_rss_kb(self) -> int:
        return sum(s.rss_kb() for s in self.servers)

    async def connect(self, store: aioredis.Redis) -> int:
        """Open every connection; the number subscribed. Records rate and memory per connection."""
        plan, ports = self.plan, [s.port for s in self.servers]
        members = plan.members_per_server * len(ports)
        bulk = plan.connections - members
        loads = math.ceil(bulk / plan.per_process)
        counts = [bulk // loads + (w < bulk % loads) for w in range(loads)]
        self.workers = [await Worker.start(w, ports, n) for w, n in enumerate(counts)]
        for worker in self.workers:
            await worker.read(60)  # ready: Python started, nothing opened yet
        rss_before, (redis_before, redis_rss_before, _) = self.server_rss_kb(), await redis_figures(store)
        started = time.monotonic()
        self.members = await open_members(ports, plan.members_per_server, SourceAddresses(2))
        for worker in self.workers:
            worker.tell("go")
        reports = [await w.read(CONNECT_TIMEOUT) for w in self.workers]
        seconds = time.monotonic() - started
        subscribed = members + sum(r["subscribed"] for r in reports)
        failures = sum(r["failures"] for r in reports)
        self.note("servers x connections", f"{len(ports)} x <= {plan.per_process:,}; "
                  f"{loads} load processes, {members} presence members")
        self.note("subscribed", f"{subscribed:,} of {plan.connections:,} ({failures} failed) in "
                  f"{seconds:.1f} s: {subscribed / seconds:,.0f} connections/s")
        await asyncio.sleep(2)  # let the servers' last joins and GC settle before reading memory
        rss_after, (redis_after, redis_rss_after, _) = self.server_rss_kb(), await redis_figures(store)
        per = max(subscribed, 1)
        self.note("server RSS (sum)", f"{rss_before / 1024:,.0f} -> {rss_after / 1024:,.0f} MiB: "
                  f"{(rss_after - rss_before) * 1024 / per:,.0f} B per connection")
        self.note("Redis used_memory", f"{redis_before / 2**20:,.1f} -> {redis_after / 2**20:,.1f} MiB: "
                  f"{(redis_after - redis_before) / per:,.0f} B per connection")
        self.note("Redis RSS", f"{redis_rss_before / 2**20:,.1f} -> {redis_rss_after / 2**20:,.1f} MiB: "
                  f"{(redis_rss_after - redis_rss_before) / per:,.0f} B per connection")
        return subscribed

    async def check_api(self, api: Api, subscribed: int) -> tuple[int, int, int, int]:
        """What the HTTP API counts, awaited (bounded) until it agrees with what was opened."""
        members = len(self.members)
        wanted = (subscribed, members, members, members)
        counts, started = await api.counts(), time.monotonic()
        while counts != wanted and time.monotonic() < started + SETTLE_TIMEOUT:
            await asyncio.sleep(0.5)  # clients that gave up are still being closed
            counts = await api.counts()
        self.note("HTTP API (one server)", f"broadcast subscription_count {counts[0]:,}; presence "
                  f"subscription_count {counts[1]}, user_count {counts[2]}, /users {counts[3]} "
                  f"(expected {subscribed:,} and {members}): "
                  + ("OK" if counts == wanted else f"MISMATCH after {SETTLE_TIMEOUT:g} s"))
        return counts

    async def broadcast(self, api: Api, expected: int) -> Broadcast:
        """One publish to everyone; each connection's latency."""
        for worker in self.workers:
            worker.tell("measure")
        for worker in self.workers:
            await worker.read(30)  # armed
        for member in self.members:
            member.latencies.clear()
        await api.publish(stamped())
        reports = [await w.read(DELIVERY_TIMEOUT + 30) for w in self.workers]
        await await_deliveries(self.members, 5)
        values = [v for r in reports for v in r["latencies"]] + latencies_us(self.members)
        arrived = [v / 1000 for v in values if v is not None]
        closed = sum(r["lost"] for r in reports) + sum(m.lost for m in self.members)
        return Broadcast(len(arrived), expected, arrived, closed)

    async def broadcasts(self, api: Api, expected: int) -> None:
        """The latency broadcasts, one after another."""
        results = [await self.broadcast(api, expected) for _ in range(self.plan.broadcasts)]
        for n, result in enumerate(results, 1):
            self.note(f"broadcast {n}", result.row())
        everyone = [v for r in results for v in r.latencies_ms]
        self.note("broadcasts, all", Broadcast(sum(r.reached for r in results),
                                               expected * len(results), everyone,
                                               results[-1].closed).row())

    async def redis_per_publish(self, store: aioredis.Redis) -> None:
        """What Redis does per publish: a burst to the presence channel (subscribed on every
        process, so Redis delivers to each as for ``broadcast``, with few deliveries here),
        less what an idle window as long costs (heartbeats, node records), scaled."""
        port, count = self.servers[0].port, self.plan.publishes
        connections = await client.open_http(port, PUBLISHERS)
        raw = client.Request(publish_request(port, PRESENCE, [stamped()], batch=False))
        before = await redis_figures(store)
        started = time.monotonic()
        await asyncio.wait_for(client.publish_count(connections, raw, count), 120)
        elapsed = time.monotonic() - started
        after = await redis_figures(store)
        client.close_all(connections)
        idle_seconds = max(elapsed, IDLE_WINDOW)
        idle_from = await redis_figures(store)
        await asyncio.sleep(idle_seconds)
        idle_to = await redis_figures(store)
        busy, idle = calls_delta(before[2], after[2]), calls_delta(idle_from[2], idle_to[2])
        scale = elapsed / idle_seconds
        per_publish = {name: (busy.get(name, 0) - idle.get(name, 0) * scale) / count
                       for name in set(busy) | set(idle)}
        shown = ", ".join(f"{name} {value:.2f}" for name, value in sorted(per_publish.items())
                          if abs(value) >= 0.01)
        self.note("Redis commands per publish", f"{sum(per_publish.values()):.2f} ({shown}) over "
                  f"{count} publishes in {elapsed:.1f} s, less {sum(idle.values())} calls in "
                  f"an idle {idle_seconds:.1f} s, scaled")
        self.note("Redis used_memory change per publish", f"{(after[0] - before[0]) / count:+,.0f} B")

    async def reregister(self, api: Api, store: aioredis.Redis,
                         wanted: tuple[int, int, int, int], subscribed: int) -> None:
        """Restart Redis empty; time until the API counts ``wanted`` (what it counted before) again."""
        self.redis.terminate()
        self.redis.wait(15)
        started = time.monotonic()
        self.redis = self.redis_processes.redis(self.redis_port, self.directory)
        counts, deadline = None, started + REREGISTER_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(*UNANSWERED):
                counts = await api.counts()
                if counts == wanted:
                    break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        used, rss, _ = await redis_figures(store)
        if counts == wanted:
            self.note("re-registration after Redis restart", f"{seconds:.1f} s until the API counted "
                      f"{wanted[0]:,} subscriptions and {wanted[2]} members again")
        else:
            self.note("re-registration after Redis restart", f"NOT complete in {seconds:.0f} s: "
                      f"{counts} of {wanted}")
        self.note("Redis after re-registration", f"used_memory {used / 2**20:,.1f} MiB, RSS "
                  f"{rss / 2**20:,.1f} MiB")
        self.note("broadcast after restart", (await self.broadcast(api, subscribed)).row())

    async def leave_all(self, api: Api) -> None:
        """Close every connection at once; time until the API counts nobody."""
        started = time.monotonic()
        client.close_all(self.members)
        await asyncio.gather(*(w.stop() for w in self.workers))
        counts, deadline = None, started + LEAVE_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(*UNANSWERED):
                counts = await api.counts()
                if counts == (0, 0, 0, 0):
                    break
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        if counts == (0, 0, 0, 0):
            outcome = f"the API counted nobody after {seconds:.1f} s"
        elif counts is None:
            outcome = f"the API did not answer within {seconds:.0f} s"
        else:
            outcome = (f"after {seconds:.0f} s the API still counts {counts[0]:,} subscriptions "
                       f"on broadcast and {counts[2]} presence members (leaves lost)")
        self.note("everyone closed at once", outcome)


async def measure(plan: Plan, rows: list[tuple[str, str]]) -> None:
    """Run every step, adding its figures to ``rows`` as they come (kept if a later step fails)."""
    with tempfile.TemporaryDirectory(prefix="hundred-k-") as directory:
        run = Run(plan, directory, rows)
        try:
            run.start_servers()
            store = aioredis.Redis(host="127.0.0.1", port=run.redis_port)
            subscribed = await run.connect(store)
            api = Api(run.servers[-1].port)
            counted = await run.check_api(api, subscribed)
            await run.broadcasts(api, subscribed)
            await run.redis_per_publish(store)
            await run.reregister(api, store, counted, subscribed)
            await run.leave_all(api)
            await store.aclose()
        finally:
            await run.stop()


def summary(plan: Plan, rows: list[tuple[str, str]], seconds: float) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [f"bench/hundred_k.py: {plan.connections:,} connections, {plan.servers} server "
             f"processes, one Redis ({client.LOOP_NAME}; {os.cpu_count()} CPUs; {seconds:.0f} s)",
             "-" * 100]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=None,
                        help="connections in all (default 100,000)")
    parser.add_argument("--quick", action="store_true",
                        help="10,000 connections, 2,500 per process (the same shape, smaller)")
    parser.add_argument("--per-process", type=int, default=None,
                        help="connections per server and per load process (default 15,000; "
                             "below the 20,000 descriptors a process may hold here)")
    parser.add_argument("--broadcasts", type=int, default=Plan.broadcasts,
                        help="latency broadcasts to everyone (default 5)")
    parser.add_argument("--publishes", type=int, default=Plan.publishes,
                        help="publishes whose Redis commands are counted (default 500)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker is not None:
        client.run(worker(options.worker, [int(p) for p in options.ports.split(",")],
                          options.connections))
        return
    connections = options.connections or (10_000 if options.quick else Plan.connections)
    per_process = options.per_process or (2_500 if options.quick else Plan.per_process)
    soft, _ = raise_fd_limit()
    if per_process + FD_MARGIN > soft:
        parser.error(f"--per-process {per_process} needs {FD_MARGIN} more descriptors "
                     f"than the {soft} a process may open")
    plan = Plan(connections, per_process, options.broadcasts, options.publishes)
    started = time.monotonic()
    rows: list[tuple[str, str]] = []
    try:
        client.run(measure(plan, rows))
    finally:
        if rows:
            print()
            print(summary(plan, rows, time.monotonic() - started))


if __name__ == "__main__":
    main()
