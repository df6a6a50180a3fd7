"""Slow and silent HTTP clients are cut off (handlers/front.py ``HTTPTimeouts``).

The in-process server runs with short timeouts. Clients that send a
publish, a query or a WebSocket handshake a byte at a time, or nothing at
all, are closed within the bounds, on both paths (the front and Tornado's
HTTP/1 server), while a normal client is served throughout.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import MAIN
from test_http_front import Client, get, publish
from tornado_push.handlers.front import HTTPTimeouts, PushHTTPServer

TIMEOUTS = HTTPTimeouts(idle=1.0, header=1.0, body=1.0)
#: What closing may take beyond a bound on a loaded test machine.
MARGIN = 1.5
#: The longest a request may take to send its head: its first byte within idle
#: (the front's wait), then, on Tornado's path, idle + header from that byte.
HEAD_BOUND = 2 * TIMEOUTS.idle + TIMEOUTS.header
#: Seconds between the bytes of a slow client.
TRICKLE = 0.2
HANDSHAKE = (f"GET /app/{MAIN.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
             ).encode()


@pytest.fixture
def http_timeouts() -> HTTPTimeouts:
    return TIMEOUTS


async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send ``data`` a byte every TRICKLE seconds, until the server stops taking them."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE)  # the client's pace, which is what is tested
    except OSError:  # the server closed the connection
        pass


async def until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sent before it closed the connection (or reset it);
    None if it was still open after ``timeout``."""
    received = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        return None
    return received


async def slow_client(port: int, data: bytes, *, first: bytes = b"") -> float | None:
    """Send ``first`` at once, then ``data`` a byte at a time; seconds from the end of
    ``first`` until the server closed, having answered nothing (None if it did not close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first)
    await writer.drain()
    started = time.monotonic()
    sending = asyncio.ensure_future(trickle(writer, data))
    try:
        received = await until_closed(reader, HEAD_BOUND + 2 * MARGIN)
    finally:
        sending.cancel()
        writer.close()
    assert received in (None, b""), received
    return None if received is None else time.monotonic() - started


async def served(port: int) -> None:
    """A normal publish on a fresh connection, as an SDK sends it, answered at once."""
    client = await Client.connect(port)
    try:
        await client.send(publish())
        assert (await client.answer(timeout=TIMEOUTS.idle)).status == 200
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_slow_and_silent_connections_are_closed_while_others_are_served(server_port):
    kinds = {"publish": publish(), "query": get(f"/apps/{MAIN.id}/channels"),
             "handshake": HANDSHAKE, "silent": b""}
    slow = {kind: [asyncio.ensure_future(slow_client(server_port, data)) for _ in range(10)]
            for kind, data in kinds.items()}
    everyone = [task for tasks in slow.values() for task in tasks]
    normal = 0
    while not all(task.done() for task in everyone):
        await served(server_port)
        normal += 1
        await asyncio.sleep(0.3)  # a publisher's pace, while the slow ones are open
    closed_after = {kind: [task.result() for task in tasks] for kind, tasks in slow.items()}
    assert normal >= 3
    for kind, seconds in closed_after.items():
        assert None not in seconds, f"{kind}: still open after {HEAD_BOUND + 2 * MARGIN:g} s"
        bound = TIMEOUTS.idle if kind == "silent" else HEAD_BOUND
        assert max(seconds) <= bound + MARGIN, (kind, seconds)
    # A head a byte at a time is cut long before it is complete.
    assert all(seconds < len(kinds["publish"]) * TRICKLE / 4
               for seconds in closed_after["publish"] + closed_after["query"])


@pytest.mark.gen_test(timeout=30)
async def test_a_keep_alive_publisher_is_closed_once_idle_for_the_idle_timeout(server_port):
    client = await Client.connect(server_port)
    await client.send(publish())
    assert (await client.answer()).status == 200
    await asyncio.sleep(TIMEOUTS.idle / 2)  # idle, but less than the timeout
    await client.send(publish())
    assert (await client.answer()).status == 200
    answered = time.monotonic()
    assert await client.closed(timeout=TIMEOUTS.idle + MARGIN)
    assert TIMEOUTS.idle - 0.1 <= time.monotonic() - answered <= TIMEOUTS.idle + MARGIN
    client.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_keep_alive_query_is_closed_by_tornado_after_idle_and_header(server_port):
    client = await Client.connect(server_port)
    await client.send(get(f"/apps/{MAIN.id}/channels"))
    assert (await client.answer()).status == 200
    answered = time.monotonic()
    assert await client.closed(timeout=TIMEOUTS.idle + TIMEOUTS.header + MARGIN)
    assert time.monotonic() - answered <= TIMEOUTS.idle + TIMEOUTS.header + MARGIN
    client.close()


@pytest.mark.parametrize("path, headers", [
    ("front", ""),
    ("tornado", "Content-Encoding: identity\r\n"),  # the front hands such a publish to Tornado
])
@pytest.mark.gen_test(timeout=30)
async def test_a_body_sent_too_slowly_is_cut_by_the_body_timeout(server_port, path, headers):
    request = publish(payload={"name": "slow", "channel": "news", "data": "x" * 200},
                      headers=headers)
    head, _, body = request.partition(b"\r\n\r\n")
    seconds = await slow_client(server_port, body, first=head + b"\r\n\r\n")
    assert seconds is not None, f"{path}: a body of {len(body)} bytes at 1 per {TRICKLE} s kept"
    assert seconds <= TIMEOUTS.body + MARGIN
    await served(server_port)


def test_tornados_own_timeout_arguments_keep_their_meaning(app):
    """A host app's ``idle_connection_timeout`` is Tornado's one clock for the wait and
    the head: the front then keeps the same bound, with no extra header time."""
    server = PushHTTPServer(app, idle_connection_timeout=2.0, body_timeout=7.0)
    assert server.timeouts == HTTPTimeouts(idle=2.0, header=0.0, body=7.0)
    assert (server.conn_params.header_timeout, server.conn_params.body_timeout) == (2.0, 7.0)
    assert PushHTTPServer(app).timeouts == HTTPTimeouts()
    with pytest.raises(TypeError):
        PushHTTPServer(app, timeouts=TIMEOUTS, idle_connection_timeout=2.0)
