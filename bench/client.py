"""The load client shared by the benchmarks: raw asyncio protocols, on uvloop when installed.

It is built so that it is not what limits a figure:

- :class:`Receiver` (bulk subscribers): a WebSocket client that subscribes once,
  then only counts the bytes that arrive; no frame is parsed.
- :class:`Probe`: a subscriber that parses every frame and reads the send
  timestamp the publisher embedded at the start of the event data
  (:func:`stamped`), giving one delivery latency per message.
- :func:`open_subscribers`: opens many subscribers concurrently from several
  loopback source addresses (127.0.0.2, 127.0.0.3, ...; never one used before
  in this process), so that more connections than the ephemeral port range
  holds (~28k per source address) can be open at once, and so that TIME_WAIT
  sockets of an earlier run never block a later one.
- :class:`HttpConnection`: a keep-alive HTTP/1.1 connection that POSTs
  prepared requests (:class:`Request`: one, or several pipelined);
  :func:`publish_request` signs them as the official Pusher SDKs do (a
  baseline that checks no signature just ignores it).
- :class:`Wire`: how subscribers and publishes are spoken to a server. Ours,
  the baseline and Node ``ws`` speak Pusher (:data:`PUSHER`); Nchan
  (:data:`NCHAN`) takes a WebSocket per channel at ``/sub/{channel}``, sends
  each message's raw body, and is published to by one POST of the body per
  message at ``/pub/{channel}`` (a batch: that many pipelined POSTs). The same
  100-byte data, carrying its send time, is what a probe reads in both.

The timestamps are ``time.monotonic_ns()`` of this process, which both
publishes and receives, so no clocks need to agree.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import re
import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import urlencode

try:
    import uvloop
except ImportError:  # the figures are still printed, with a note that says so
    uvloop = None

from servers import APP_ID, KEY, SECRET

LOOP_NAME = ("uvloop " + uvloop.__version__ if uvloop is not None
             else "asyncio (uvloop missing: pip install -r bench/requirements.txt)")
EVENT = "tick"
#: Event data is a 20-digit send timestamp then padding: 100 bytes, the same
#: length in every message, so every frame of a run has the same size.
DATA_BYTES = 100
_STAMP_DIGITS = 20
_PAD = "x" * (DATA_BYTES - _STAMP_DIGITS)


def run(coroutine):
    """Run ``coroutine`` on a new uvloop loop (asyncio's when uvloop is missing)."""
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coroutine)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stamped(ns: int | None = None) -> str:
    """Event data carrying a send time (``time.monotonic_ns()``); always :data:`DATA_BYTES` long."""
    return f"{time.monotonic_ns() if ns is None else ns:0{_STAMP_DIGITS}d}{_PAD}"


# -- source addresses ------------------------------------------------------------


class SourceAddresses:
    """Loopback source addresses, each handed out once: 127.0.0.2, 127.0.0.3, ...

    All of 127.0.0.0/8 reaches the loopback interface on Linux; each address
    has its own ~28k ephemeral ports.
    """

    def __init__(self, first: int = 2) -> None:
        self._next = first

    def take(self, count: int) -> list[str]:
        addresses = []
        while len(addresses) < count:
            n, self._next = self._next, self._next + 1
            if n & 0xFF in (0, 0xFF):
                continue
            addresses.append(f"127.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}")
        return addresses


SOURCES = SourceAddresses()
#: Connections per source address: well inside one address's ephemeral port range.
PER_ADDRESS = 10_000


# -- WebSocket -------------------------------------------------------------------


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    header = bytes([0x81, 0x80 | length]) if length < 126 else bytes([0x81, 0xFE]) + length.to_bytes(2, "big")
    return header + mask + masked


def _upgrade(port: int, path: str) -> bytes:
    nonce = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


_SWITCHING = b"HTTP/1.1 101"


class Wire:
    """Pusher protocol 7: how a subscriber joins a channel and reads an event, how one publishes."""

    def opening(self, port: int, channel: str, key: str = KEY) -> bytes:
        """What a subscriber writes on connecting: the upgrade request and the subscribe frame."""
        subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode()
        return (_upgrade(port, f"/app/{key}?protocol=7&client=bench&version=1")
                + masked_text_frame(subscribe))

    def subscribed(self, handshake: bytes) -> bool | None:
        """True once ``handshake`` (all bytes read so far) shows the subscription; False on an
        error; None while more is needed."""
        if b"subscription_succeeded" in handshake:
            return True
        if b"pusher:error" in handshake or not handshake.startswith(_SWITCHING[:len(handshake)]):
            return False
        return None

    def data(self, message: bytes) -> str | None:
        """The event data of a text message, or None when it is not a :data:`EVENT`."""
        frame = json.loads(message)
        return frame["data"] if frame.get("event") == EVENT else None

    def publish(self, port: int, channel: str, data: Sequence[str], *,
                batch: bool = True) -> "Request":
        """A publish of one event per item of ``data``: signed ``batch_events``, or ``events``."""
        return Request(publish_request(port, channel, data, batch=batch))


class NchanWire(Wire):
    """Nchan: a WebSocket per channel, raw message bodies, one unsigned POST per message."""

    def opening(self, port: int, channel: str, key: str = KEY) -> bytes:
        return _upgrade(port, f"/sub/{channel}")

    def subscribed(self, handshake: bytes) -> bool | None:
        # Nchan answers the upgrade once the subscriber is registered; nothing follows.
        if not handshake.startswith(_SWITCHING[:len(handshake)]):
            return False
        return True if b"\r\n\r\n" in handshake else None

    def data(self, message: bytes) -> str | None:
        return message.decode()

    def publish(self, port: int, channel: str, data: Sequence[str], *,
                batch: bool = True) -> "Request":
        """One POST per message, pipelined in one write: Nchan has no batch endpoint."""
        return Request(b"".join(
            (f"POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            for body in (d.encode() for d in data)), answers=len(data))


PUSHER = Wire()
NCHAN = NchanWire()


class Subscriber(asyncio.Protocol):
    """Connects, subscribes to one channel, and resolves ``subscribed`` once that succeeded."""

    def __init__(self, opening: bytes, wire: Wire = PUSHER) -> None:
        self.opening = opening
        self.wire = wire
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready = False
        self.lost = False
        self.transport: asyncio.Transport | None = None
        self._handshake = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.opening)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self._handshake += data
        joined = self.wire.subscribed(bytes(self._handshake))
        if joined:
            self.ready = True
            self._handshake = bytearray()
            self.subscribed.set_result(None)
        elif joined is False:
            self.subscribed.set_exception(ConnectionError(bytes(self._handshake[:300])))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.subscribed.done():
            self.subscribed.set_exception(ConnectionError(f"closed before subscribing: {exc}"))

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()


class Receiver(Subscriber):
    """A bulk subscriber: after subscribing it only counts the bytes that arrive."""

    def __init__(self, opening: bytes, wire: Wire = PUSHER) -> None:
        super().__init__(opening, wire)
        self.received = 0
        self.target = 0
        self.reached: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if not self.ready:
            return super().data_received(data)
        self.received += len(data)
        if self.received >= self.target and self.reached is not None and not self.reached.done():
            self.reached.set_result(None)

    def expect(self, total: int) -> asyncio.Future[None]:
        """A future done once ``total`` bytes have arrived since this call."""
        self.received, self.target = 0, total
        self.reached = asyncio.get_running_loop().create_future()
        if total <= 0:
            self.reached.set_result(None)
        return self.reached


class Probe(Receiver):
    """A subscriber that also parses frames and records each :data:`EVENT`'s latency (ns)."""

    def __init__(self, opening: bytes, wire: Wire = PUSHER) -> None:
        super().__init__(opening, wire)
        self.latencies: list[int] = []
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if not self.ready:
            return super().data_received(data)
        now = time.monotonic_ns()
        super().data_received(data)  # the byte count, as for any receiver
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= 2:
            length, offset = buffer[start + 1] & 0x7F, 2
            if length == 126:
                if len(buffer) - start < 4:
                    break
                length, offset = int.from_bytes(buffer[start + 2:start + 4], "big"), 4
            elif length == 127:
                if len(buffer) - start < 10:
                    break
                length, offset = int.from_bytes(buffer[start + 2:start + 10], "big"), 10
            end = start + offset + length
            if end > len(buffer):
                break
            if buffer[start] & 0x0F == 0x1:  # text: a message of the wire's
                self._message(bytes(buffer[start + offset:end]), now)
            start = end
        del buffer[:start]

    def _message(self, payload: bytes, now: int) -> None:
        """One text message that arrived at ``now``: its latency, if it carries a send time
        (subclasses see every message here first)."""
        data = self.wire.data(payload)
        if data is not None:
            self.latencies.append(now - int(data[:_STAMP_DIGITS]))


async def open_subscribers(port: int, count: int, *, probes: int = 0, channel: str = "bench",
                           key: str = KEY, concurrency: int = 64, timeout: float = 60,
                           tolerate_failures: bool = False, sources: SourceAddresses = SOURCES,
                           wire: Wire = PUSHER
                           ) -> tuple[list[Receiver], list[Probe], int]:
    """Open ``count`` subscribers, ``probes`` of them :class:`Probe`, spread evenly in order.

    Returns (receivers, probes, failures); every one is a :class:`Receiver`,
    so the probes are in both lists. They are opened at most ``concurrency``
    at a time, in order, so the servers' subscriber order follows the index
    and the probes sit at evenly spaced places in each broadcast loop (the
    last subscriber is always a probe). Source addresses take turns, one
    per :data:`PER_ADDRESS` connections, taken from ``sources`` (load processes
    running side by side each pass their own range, e.g. ``SourceAddresses(256 * n)``).
    """
    loop = asyncio.get_running_loop()
    addresses = sources.take(max(1, math.ceil(count / PER_ADDRESS)))
    probe_at = {count - 1 - round(i * count / probes) for i in range(probes)} if probes else set()
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> Receiver:
        kind = Probe if index in probe_at else Receiver
        opening = wire.opening(port, channel, key)
        async with gate:
            _, client = await asyncio.wait_for(loop.create_connection(
                lambda: kind(opening, wire), "127.0.0.1", port,
                local_addr=(addresses[index % len(addresses)], 0)), timeout)
            try:
                await asyncio.wait_for(asyncio.shield(client.subscribed), timeout)
            except BaseException:
                client.close()
                raise
            return client

    outcomes = await asyncio.gather(*(one(i) for i in range(count)),
                                    return_exceptions=tolerate_failures)
    receivers = [o for o in outcomes if isinstance(o, Receiver)]
    failures = len(outcomes) - len(receivers)
    if failures and not tolerate_failures:
        raise RuntimeError(f"{failures} of {count} subscribers failed")
    return receivers, [r for r in receivers if isinstance(r, Probe)], failures


def close_all(clients: Sequence[Subscriber]) -> None:
    for client in clients:
        client.close()


async def settle_closed(clients: Sequence[Subscriber], timeout: float = 10) -> None:
    """Close ``clients`` and wait (bounded) until each connection is gone."""
    close_all(clients)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(c.lost for c in clients):
        await asyncio.sleep(0.05)


# -- HTTP publishing -------------------------------------------------------------


def signed_path(path: str, body: bytes, *, method: str = "POST", key: str = KEY,
                secret: str = SECRET, query: dict[str, str] | None = None) -> str:
    """``path`` with the query the official Pusher SDKs sign (auth_version 1.0), plus ``query``."""
    params = {"auth_key": key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              "body_md5": hashlib.md5(body).hexdigest(), **(query or {})}
    string = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["auth_signature"] = hmac.new(secret.encode(), f"{method}\n{path}\n{string}".encode(),
                                        hashlib.sha256).hexdigest()
    return f"{path}?{urlencode(params)}"


def publish_request(port: int, channel: str, data: Sequence[str], *, batch: bool = True,
                    keep_alive: bool = True, app_id: str = APP_ID) -> bytes:
    """A signed POST of one event per item of ``data``: ``batch_events``, or ``events`` for one."""
    if batch:
        path = f"/apps/{app_id}/batch_events"
        body = json.dumps({"batch": [{"channel": channel, "name": EVENT, "data": d}
                                     for d in data]}).encode()
    else:
        (single,) = data
        path = f"/apps/{app_id}/events"
        body = json.dumps({"channels": [channel], "name": EVENT, "data": single}).encode()
    return (f"POST {signed_path(path, body)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode() + body


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class PublishFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Request:
    """Bytes written at once on a keep-alive connection, and how many answers they get
    (more than one: pipelined requests)."""

    raw: bytes
    answers: int = 1


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request (or one pipelined group) at a time,
    answers read by Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._pending = 0
        self._answer: tuple[int, bytes] = (0, b"")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def request(self, raw: bytes, answers: int = 1) -> asyncio.Future[tuple[int, bytes]]:
        """Send ``raw``; a future of (status, body) of its last answer, or of the first
        that was not 2xx."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._pending, self._answer = answers, (0, b"")
        self.transport.write(raw)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            found = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            length = int(found.group(1)) if found else 0
            if len(buffer) < end + 4 + length:
                return
            status = int(buffer[9:12])
            if self._answer[0] == 0 or 200 <= self._answer[0] < 300:  # keep the first failure
                self._answer = (status, bytes(buffer[end + 4:end + 4 + length]))
            del buffer[:end + 4 + length]
            self._pending -= 1
            if self._pending <= 0:
                waiter, self._waiter = self._waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(self._answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"HTTP connection lost: {exc}"))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_http(port: int, count: int) -> list[HttpConnection]:
    loop = asyncio.get_running_loop()
    return [(await loop.create_connection(HttpConnection, "127.0.0.1", port))[1]
            for _ in range(count)]


async def send(connection: HttpConnection, request: Request) -> None:
    """Write ``request`` and wait for its answers; :class:`PublishFailed` unless all were 2xx."""
    status, body = await connection.request(request.raw, request.answers)
    if not 200 <= status < 300:
        raise PublishFailed(f"publish answered {status}: {body[:200]!r}")


async def publish_count(connections: Sequence[HttpConnection], raw: Request, requests: int) -> None:
    """Send ``raw`` ``requests`` times, each connection one request after another."""
    remaining = requests

    async def worker(connection: HttpConnection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send(connection, raw)

    await asyncio.gather(*(worker(c) for c in connections))


async def publish_for(connections: Sequence[HttpConnection], raw: Request, seconds: float) -> int:
    """Send ``raw`` on every connection, one after another, for ``seconds``; the count of
    requests answered 2xx."""
    deadline = time.monotonic() + seconds
    done = 0

    async def worker(connection: HttpConnection) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await send(connection, raw)
            done += raw.answers

    await asyncio.gather(*(worker(c) for c in connections))
    return done


async def publish_at_rate(connections: Sequence[HttpConnection], rate: float, count: int,
                          make_request: Callable[[], Request]) -> float:
    """Send ``count`` requests at ``rate`` per second (open loop); the worst lateness in s.

    Each request is built by ``make_request`` at its send time, so a stamp
    in it is the moment it is written. A request waits for an idle
    connection if all are busy; that wait is the lateness reported.
    """
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    pending: set[asyncio.Task[None]] = set()
    worst = 0.0
    start = loop.time()

    async def one(connection: HttpConnection) -> None:
        try:
            await send(connection, make_request())
        finally:
            idle.put_nowait(connection)

    for n in range(count):
        target = start + n / rate
        delay = target - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        connection = await idle.get()
        worst = max(worst, loop.time() - target)
        task = asyncio.ensure_future(one(connection))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    return worst


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
