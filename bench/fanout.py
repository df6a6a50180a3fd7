"""Fan-out benchmark: one process on the in-process broker vs. two processes through Redis.

    python bench/fanout.py [--subscribers 1000] [--messages 300] [--runs 3]

Both modes run in the same invocation, on the same machine, with the same
load client, and the figure printed for each is the median of ``--runs``:

- single: one server process; the subscribers and the HTTP publisher both
  talk to it (in-process broker, the embedded default);
- redis:  two server processes sharing a Redis; the subscribers are on one,
  the publisher posts to the other, so every message crosses Redis.

The delivering server is pinned to CPU 0 and the load client to CPU 1 where
the machine has two. The client is raw asyncio: each subscriber socket
counts bytes only, so the client is not what limits the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
CHANNEL = "bench"
PAYLOAD = "x" * 100  # ~100-byte messages, as in the project's other figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pin(pid: int, cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and cpu < os.cpu_count():
        os.sched_setaffinity(pid, {cpu})


class Processes:
    """Started subprocesses, stopped together; only the PIDs started here are signalled."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def redis(self, port: int, directory: str) -> None:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory], stdout=subprocess.PIPE, text=True)
        self.started.append(process)
        for line in process.stdout:
            if "Ready to accept connections" in line:
                return
        raise RuntimeError("redis-server did not start")

    def server(self, port: int, redis_url: str | None, cpu: int | None) -> None:
        env = {**os.environ, "PUSH_APP_ID": APP_ID, "PUSH_APP_KEY": KEY,
               "PUSH_APP_SECRET": SECRET, "PUSH_LOG_LEVEL": "WARNING",
               "PUSH_MAX_INBOUND_RATE": "1000"}
        if redis_url:
            env["PUSH_REDIS_URL"] = redis_url
        process = subprocess.Popen([sys.executable, "-u", "server.py", "--port", str(port)],
                                   cwd=ROOT, env=env)
        self.started.append(process)
        if cpu is not None:
            pin(process.pid, cpu)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the server logs at WARNING: probe the port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server.py on {port} did not start")

    def stop(self) -> None:
        """Servers first, Redis last, so that servers leave the cluster cleanly."""
        for process in reversed(self.started):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class Subscriber(asyncio.Protocol):
    """A WebSocket client that subscribes once, then only counts the bytes that arrive."""

    def __init__(self, subscribed: asyncio.Future) -> None:
        self.subscribed = subscribed
        self.handshake = b""
        self.received = 0
        self.target = 0
        self.reached: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        message = json.dumps({"event": "pusher:subscribe", "data": {"channel": CHANNEL}}).encode()
        transport.write(masked_text_frame(message))

    def data_received(self, data: bytes) -> None:
        if not self.subscribed.done():
            self.handshake += data
            if b"subscription_succeeded" in self.handshake:
                self.subscribed.set_result(None)
            return
        self.received += len(data)
        if self.reached is not None and self.received >= self.target and not self.reached.done():
            self.reached.set_result(None)

    def expect(self, total: int) -> asyncio.Future:
        """A future done once ``total`` bytes have arrived since the last call."""
        self.received, self.target = 0, total
        self.reached = asyncio.get_running_loop().create_future()
        return self.reached


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE]) + length.to_bytes(2, "big")
    return header + mask + masked


def signed_path(path: str, body: bytes) -> str:
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              "body_md5": hashlib.md5(body).hexdigest()}
    string = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["auth_signature"] = hmac.new(SECRET.encode(), f"POST\n{path}\n{string}".encode(),
                                        hashlib.sha256).hexdigest()
    return f"{path}?{urlencode(params)}"


async def post_batch(port: int, events: int) -> None:
    body = json.dumps({"batch": [{"channel": CHANNEL, "name": "tick", "data": PAYLOAD}
                                 for _ in range(events)]}).encode()
    path = signed_path(f"/apps/{APP_ID}/batch_events", body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
    status = await reader.readline()
    writer.close()
    if b" 200 " not in status:
        raise RuntimeError(f"publish failed: {status!r}")


async def measure(subscribe_port: int, publish_port: int, subscribers: int, messages: int) -> float:
    """Deliveries per second of ``messages`` publishes to ``subscribers`` sockets."""
    loop = asyncio.get_running_loop()
    clients: list[Subscriber] = []
    for _ in range(subscribers):
        _, client = await loop.create_connection(
            lambda: Subscriber(loop.create_future()), "127.0.0.1", subscribe_port)
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.subscribed for c in clients)), 60)
    # One message first: its frame size, the same for every subscriber, sizes the rest.
    warm = [client.expect(1) for client in clients]
    await post_batch(publish_port, 1)
    await asyncio.wait_for(asyncio.gather(*warm), 30)
    frame = clients[0].received
    done = [client.expect(frame * messages) for client in clients]
    started = time.perf_counter()
    in_flight = asyncio.Semaphore(4)

    async def publish(events: int) -> None:
        async with in_flight:
            await post_batch(publish_port, events)

    await asyncio.gather(*(publish(min(10, messages - n)) for n in range(0, messages, 10)))
    await asyncio.wait_for(asyncio.gather(*done), 120)
    return subscribers * messages / (time.perf_counter() - started)


def run_mode(mode: str, args: argparse.Namespace) -> float:
    """Start the servers for ``mode``, measure once, stop them."""
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as directory:
            subscribe_port = free_port()
            redis_url = None
            if mode == "redis":
                redis_port = free_port()
                processes.redis(redis_port, directory)
                redis_url = f"redis://127.0.0.1:{redis_port}"
            processes.server(subscribe_port, redis_url, cpu=0)
            publish_port = subscribe_port
            if mode == "redis":
                publish_port = free_port()
                processes.server(publish_port, redis_url, cpu=None)
            return asyncio.run(measure(subscribe_port, publish_port, args.subscribers, args.messages))
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pin(0, 1)  # this load client
    results = {mode: [] for mode in ("single", "redis")}
    for _ in range(args.runs):
        for mode in results:  # interleaved, so drift in the machine hits both alike
            results[mode].append(run_mode(mode, args))
    single, redis = (statistics.median(results[m]) for m in ("single", "redis"))
    print(f"fan-out, {args.subscribers} subscribers, {args.messages} messages of "
          f"{len(PAYLOAD)} bytes, median of {args.runs}:")
    print(f"  single process, in-process broker : {single:10,.0f} deliveries/s")
    print(f"  two processes through Redis       : {redis:10,.0f} deliveries/s")
    print(f"  single / redis                    : {single / redis:10.2f}x  (target: <= 1.5x)")


if __name__ == "__main__":
    main()
