"""One client that stops reading, against ``python server.py``: does it cost anyone else?

    python bench/slow_consumer.py [--size 70] [--rate 0] [--batch 1] [--readers 50]
                                  [--seconds 45] [--root CHECKOUT]

One server process (``--root``: the checkout whose server.py runs, this one by
default). On channel ``flood``: a subscriber that never reads (small kernel
buffers), subscribed first so that it comes first in every broadcast, then
``--readers`` subscribers that read and check every event; on channel
``other``: 5 more readers. Events of about ``--size`` bytes framed are
published for ``--seconds`` over signed ``batch_events`` of ``--batch`` events
(one in ten on ``other``), as fast as the server answers (``--rate 0``) or at
``--rate`` events a second. One event a request, as an SDK's ``trigger`` sends
them, makes one write per loop iteration to each subscriber. Then the readers
get 10 s to catch up.

Printed: events published; for each channel, readers complete (every event, in
order) and events lost; when ``/health`` first counted a slow consumer, and its
count at the end; what the non-reader got (events, ``pusher:error`` codes,
close codes) once it reads, which is after the server stopped waiting for its
close reply (5 s), so the close is not expected then; ERROR records and
tracebacks in the server's log; its resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import client
from servers import APP_ID, KEY, OUR_ENV, ROOT, Server, free_port

CHANNELS = ("flood", "other")


class Reader(client.Probe):
    """A subscriber that records the number each event carries."""

    def __init__(self, opening: bytes) -> None:
        super().__init__(opening)
        self.numbers: list[int] = []

    def _message(self, payload: bytes, now: int) -> None:
        message = json.loads(payload)
        if message.get("event") == client.EVENT:
            self.numbers.append(json.loads(message["data"])["n"])


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """The server frames (opcode, payload) in ``data``; a cut-off last frame is left out."""
    found, start = [], 0
    while len(data) - start >= 2:
        length, offset = data[start + 1] & 0x7F, 2
        if length == 126:
            length, offset = int.from_bytes(data[start + 2:start + 4], "big"), 4
        elif length == 127:
            length, offset = int.from_bytes(data[start + 2:start + 10], "big"), 10
        if start + offset + length > len(data):
            break
        found.append((data[start] & 0x0F, data[start + offset:start + offset + length]))
        start += offset + length
    return found


async def open_readers(port: int, channel: str, count: int) -> list[Reader]:
    loop = asyncio.get_running_loop()
    readers = []
    for _ in range(count):
        _, reader = await loop.create_connection(
            lambda: Reader(client.PUSHER.opening(port, channel, KEY)), "127.0.0.1", port)
        await asyncio.wait_for(reader.subscribed, 10)
        readers.append(reader)
    return readers


def open_non_reader(port: int) -> socket.socket:
    """Subscribes to ``flood`` and never reads (until the end)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake sizes it
    sock.connect(("127.0.0.1", port))
    sock.sendall(client.PUSHER.opening(port, "flood", KEY))
    return sock


def batch_request(port: int, numbers: dict[str, int], size: int, batch: int) -> bytes:
    items = []
    for _ in range(batch):
        channel = CHANNELS[sum(numbers.values()) % 10 == 9]
        data = {"n": numbers[channel]}
        # Framed: {"event":"tick","channel":"flood","data":"{\"n\": 1}"} is ~60 bytes.
        padding = max(0, size - 60 - len(str(data["n"])))
        if padding:
            data["pad"] = "x" * padding
        numbers[channel] += 1
        items.append({"channel": channel, "name": client.EVENT, "data": json.dumps(data)})
    body = json.dumps({"batch": items}).encode()
    path = client.signed_path(f"/apps/{APP_ID}/batch_events", body)
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def publish(port: int, size: int, rate: float, batch: int, seconds: float
                  ) -> dict[str, int]:
    """Publish for ``seconds``; how many events each channel got."""
    numbers = dict.fromkeys(CHANNELS, 0)
    (connection,) = await client.open_http(port, 1)
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if rate:
            await asyncio.sleep(max(0.0, start + sum(numbers.values()) / rate - time.monotonic()))
        await client.send(connection, client.Request(batch_request(port, numbers, size, batch)))
    connection.close()
    return numbers


async def slow_consumers(port: int) -> int:
    (connection,) = await client.open_http(port, 1)
    status, body = await connection.request(
        f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    connection.close()
    return json.loads(body)["slow_consumers"]


async def run(port: int, args: argparse.Namespace) -> None:
    stalled = open_non_reader(port)
    await asyncio.sleep(0.5)  # its subscribe first: it leads every broadcast
    readers = {"flood": await open_readers(port, "flood", args.readers),
               "other": await open_readers(port, "other", 5)}
    start = time.monotonic()
    first_cut: list[float] = []

    async def watch() -> None:
        while not await slow_consumers(port):
            await asyncio.sleep(0.5)
        first_cut.append(time.monotonic() - start)

    watcher = asyncio.ensure_future(watch())
    published = await publish(port, args.size, args.rate, args.batch, args.seconds)
    watcher.cancel()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            len(r.numbers) >= published[c] for c, group in readers.items() for r in group):
        await asyncio.sleep(0.1)
    print(f"published: {published['flood']} events on flood, {published['other']} on other "
          f"(~{args.size} bytes framed, {'full speed' if not args.rate else f'{args.rate:g}/s'}, "
          f"{args.seconds:g} s)")
    for channel, group in readers.items():
        complete = sum(r.numbers == list(range(published[channel])) for r in group)
        lost = sum(published[channel] - len(set(r.numbers)) for r in group)
        print(f"  {channel}: {complete} of {len(group)} readers got every event in order; "
              f"{lost} events lost")
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    stalled.settimeout(5)
    received = b""
    try:
        while chunk := stalled.recv(1 << 20):
            received += chunk
    except OSError as error:  # a timeout, or a reset
        print(f"  non-reader: reading stopped: {error!r}")
    got = frames(received.split(b"\r\n\r\n", 1)[1])
    texts = [json.loads(payload) for opcode, payload in got if opcode == 0x1]
    errors = [t["data"]["code"] for t in texts if t.get("event") == "pusher:error"]
    ticks = sum(t.get("event") == client.EVENT for t in texts)
    closes = [int.from_bytes(payload[:2], "big") for opcode, payload in got if opcode == 0x8]
    print(f"  non-reader: {ticks} events, pusher:error codes {errors}, close codes {closes}")
    when = f"first counted {first_cut[0]:.1f} s in" if first_cut else "none while publishing"
    print(f"  /health slow_consumers: {await slow_consumers(port)} ({when})")
    stalled.close()
    for group in readers.values():
        client.close_all(group)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=70, help="bytes per event, framed")
    parser.add_argument("--rate", type=float, default=0, help="events a second (0: full speed)")
    parser.add_argument("--batch", type=int, default=1, help="events per publish request")
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen([sys.executable, "-u", "server.py", "--port", str(port)],
                                   cwd=args.root, env={**os.environ, **OUR_ENV}, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            server = Server("ours", process, port)
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline and process.poll() is None, "no server"
                    time.sleep(0.05)
            client.run(run(port, args))
            print(f"  server: {server.rss_kb() / 1024:.0f} MB resident")
        finally:
            process.terminate()
            process.wait(15)
        log.seek(0)
        text = log.read()
        print(f"  server log: {text.count('ERROR')} ERROR records, "
              f"{text.count('Traceback')} tracebacks, {text.count('RecursionError')} RecursionErrors, "
              f"{len(text) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
