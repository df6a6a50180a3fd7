"""The Tornado internals handlers/tornado_internals.py relies on, checked on this Tornado.

If one of these fails after a Tornado upgrade, the fast write path or the
idle-connection trimming needs adapting before that version enters
requirements.txt's range.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import re
import socket

import pytest
import tornado
import tornado.iostream
import tornado.websocket

from conftest import MAIN, SMALL_BUFFER, TINY
from tornado_push.handlers.tornado_internals import (_frame_loops, _LazyDeque, abort, preload,
                                                     unread, websocket_compresses, write_frames,
                                                     write_progress)


def unsent_bytes(stream: tornado.iostream.IOStream) -> int:
    """What write_frames reads as the bytes the kernel has not taken yet."""
    assert stream._write_buffer._size == len(stream._write_buffer)
    return stream._write_buffer._size


def handler_of(hub, app=MAIN):
    (session,) = list(hub.sessions(app))
    return session.transport


def frame_loop_of(handler) -> asyncio.Task:
    """The running Task that reads the handler's frames."""
    (task,) = [task for task in _frame_loops
               if task.get_coro().cr_frame.f_locals["self"] is handler.ws_connection]
    return task


def test_tornado_is_in_the_tested_range():
    assert (6, 5) <= tornado.version_info[:2] < (6, 7)


@pytest.mark.gen_test(timeout=10)
async def test_stream_and_compression_flag_of_a_plain_connection(raw, hub):
    # The flag's True case: tests/test_fast_path.py, with a deflate client.
    await raw()
    handler = handler_of(hub)
    stream = handler.ws_connection.stream
    assert isinstance(stream, tornado.iostream.IOStream)
    assert websocket_compresses(handler) is False
    assert unsent_bytes(stream) == 0


async def slow_reader(port: int, hub) -> tuple[socket.socket, tornado.websocket.WebSocketProtocol]:
    """A raw WebSocket client with a small receive buffer that reads nothing yet; its
    connection on the server."""
    reader = socket.create_connection(("127.0.0.1", port))
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sendall(b"GET /app/small-buffer-key?protocol=7 HTTP/1.1\r\nHost: x\r\n"
                   b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    handler = None
    while handler is None:  # the handshake completes on the server's own time
        await asyncio.sleep(0.01)
        sessions = list(hub.sessions(SMALL_BUFFER))
        handler = sessions[0].transport if sessions else None
    return reader, handler.ws_connection


@pytest.mark.gen_test(timeout=30)
async def test_unsent_bytes_grow_while_the_peer_does_not_read(server_port, hub):
    reader, connection = await slow_reader(server_port, hub)
    stream = connection.stream
    chunk = b"x" * 65536
    while unsent_bytes(stream) == 0:  # the kernel's buffers fill first, then Tornado's
        stream.write(chunk)
        await asyncio.sleep(0)
    assert unsent_bytes(stream) > 0
    reader.close()


@pytest.mark.gen_test(timeout=30)
async def test_write_goes_straight_to_the_socket_then_queues_in_order(server_port, hub):
    reader, connection = await slow_reader(server_port, hub)
    stream = connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # full after a few KB
    written = []
    while unsent_bytes(stream) == 0:  # straight to the kernel until it is full
        chunk = b"%08d" % len(written) * 1000
        assert write_frames(connection, chunk, 0)
        written.append(chunk)
    for extra in range(3):  # behind a queue, writes queue too: the order holds
        chunk = b"%08d" % len(written) * 1000
        assert write_frames(connection, chunk, 0)
        written.append(chunk)
    assert unsent_bytes(stream) >= 3 * 8000
    expected = b"".join(written)
    reader.setblocking(False)
    received = b""
    loop = asyncio.get_running_loop()
    while not received.endswith(expected):
        data = await loop.sock_recv(reader, 1 << 20)
        assert data, "the server closed the connection"
        received += data
    assert unsent_bytes(stream) == 0
    reader.close()



@pytest.mark.gen_test(timeout=30)
async def test_write_frames_refuses_past_the_limit_and_skips_a_closing_connection(server_port, hub):
    reader, connection = await slow_reader(server_port, hub)
    stream = connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    while unsent_bytes(stream) == 0:  # the peer reads nothing: Tornado's buffer fills
        assert write_frames(connection, b"x" * 65536, 0)
    unsent = unsent_bytes(stream)
    assert write_frames(connection, b"y" * 10, unsent + 10)  # up to the limit: queued
    assert not write_frames(connection, b"z", unsent + 10)  # one byte past: refused
    assert unsent_bytes(stream) == unsent + 10
    connection.close(1000)  # the close frame is the last thing the client may get
    closing = unsent_bytes(stream)
    assert write_frames(connection, b"late", 0)
    assert unsent_bytes(stream) == closing
    reader.close()

@pytest.mark.gen_test(timeout=30)
async def test_write_progress_counts_what_waits_in_the_stream_until_the_peer_reads_it(
        server_port, hub):
    reader, connection = await slow_reader(server_port, hub)
    stream = connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    start, _ = write_progress(connection)  # the handshake's reply, say: all taken
    assert write_progress(connection) == (start, start)
    assert write_frames(connection, b"x" * 100, 0)  # straight to the socket: not counted
    assert write_progress(connection) == (start, start)
    while unsent_bytes(stream) == 0:
        assert write_frames(connection, b"x" * 65536, 0)
    written, taken = write_progress(connection)
    assert written - taken == unsent_bytes(stream) > 0
    reader.setblocking(False)
    loop = asyncio.get_running_loop()
    while write_progress(connection)[1] < written:  # the peer reads: the kernel takes it all
        assert await loop.sock_recv(reader, 1 << 20), "the server closed the connection"
    assert write_progress(connection) == (written, written)
    connection.close(1000)
    assert write_progress(connection) == (0, 0)  # closing: nothing is waited for any more
    reader.close()


@pytest.mark.gen_test(timeout=10)
async def test_abort_drops_the_connection_without_a_close_frame(raw, hub):
    client = await raw()
    handler = handler_of(hub)
    session = handler.session
    abort(handler.ws_connection)
    assert await client.closed() is None  # no close frame: no code
    assert session.is_closed


# -- idle connections ---------------------------------------------------------------

#: What a handler holds once its handshake is released. A Tornado that sets
#: more must be checked for attributes only the handshake reads.
KEPT_HANDLER_ATTRIBUTES = {
    "application", "request", "_headers_written", "_finished", "_auto_finish",
    "_prepared_future", "ui", "_status_code", "_reason", "ws_connection", "close_code",
    "close_reason", "_on_close_called",
    # _detach_stream makes these raise on a WebSocket
    "write", "redirect", "set_header", "set_cookie", "set_status", "flush", "finish"}


@pytest.mark.gen_test(timeout=10)
async def test_an_open_connection_keeps_only_what_tornado_reads_after_the_handshake(raw, hub):
    await raw()
    handler = handler_of(hub)
    assert set(vars(handler)) == KEPT_HANDLER_ATTRIBUTES
    request = handler.request
    assert request.connection is None and request.server_connection is None
    assert not request.headers
    assert (request.method, request.uri) == ("GET", "/app/app-key?protocol=7")
    assert request.remote_ip == "127.0.0.1"


@pytest.mark.gen_test(timeout=10)
async def test_a_connection_the_hub_refuses_is_closed_without_an_error_logged(raw, caplog):
    for _ in range(TINY.max_connections):
        await raw(TINY.key)
    refused = await raw(TINY.key, established=False)
    assert (await refused.receive())["event"] == "pusher:error"
    assert await refused.closed() == 4004
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_iostream_uses_only_the_queue_operations_the_lighter_queue_has():
    # _LazyDeque stands in for the deques of a stream's write Futures and
    # unsent chunks; besides these methods it offers len, bool, indexing and
    # iteration.
    source = inspect.getsource(tornado.iostream)
    used = set(re.findall(r"(?:_write_futures|_buffers|\bbuffers)\.(\w+)", source))
    assert used == {"append", "popleft", "clear"}


def test_the_lighter_queue_behaves_as_a_deque_and_lets_its_deque_go_when_empty():
    queue, deque = _LazyDeque(), collections.deque()
    for step in ("a", "b", None, "c", None, None, "d", "clear"):
        for each in (queue, deque):
            if step is None:
                each.popleft()
            elif step == "clear":
                each.clear()
            else:
                each.append(step)
        assert list(queue) == list(deque) and len(queue) == len(deque)
        assert bool(queue) == bool(deque)
        if deque:
            assert (queue[0], queue[-1]) == (deque[0], deque[-1])
    for empty in (queue, deque):
        with pytest.raises(IndexError):
            empty[0]
        with pytest.raises(IndexError):
            empty.popleft()
    assert queue._items is None


@pytest.mark.gen_test(timeout=30)
async def test_a_stream_that_caught_up_holds_no_deque(server_port, hub):
    reader, connection = await slow_reader(server_port, hub)
    stream = connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"x" * 65536
    write_frames(connection, chunk, 0)
    write_frames(connection, chunk, 0)  # behind the first: queued, with its Future
    assert unsent_bytes(stream) > 0 and stream._write_futures
    reader.setblocking(False)
    loop = asyncio.get_running_loop()
    received = 0
    while received < 2 * len(chunk):
        data = await loop.sock_recv(reader, 1 << 20)
        assert data, "the server closed the connection"
        received += len(data)
    assert unsent_bytes(stream) == 0
    assert stream._write_futures._items is None and stream._write_buffer._buffers._items is None
    reader.close()


@pytest.mark.gen_test(timeout=10)
async def test_the_handshake_finishes_and_frames_are_read_in_a_task_of_their_own(raw, hub):
    socket = await raw()
    handler = handler_of(hub)
    handshakes = [task for task in asyncio.all_tasks()
                  if task.get_coro().__qualname__ == "RequestHandler._execute"]
    assert handshakes == []
    frame_loop = frame_loop_of(handler)
    await socket.send({"event": "pusher:ping", "data": {}})
    await socket.expect("pusher:pong")
    session = handler.session
    socket.close()
    await frame_loop
    assert session.is_closed and frame_loop not in _frame_loops


@pytest.mark.gen_test(timeout=10)
async def test_an_error_in_the_frame_loop_is_logged_as_tornado_logs_it(raw, hub, caplog):
    socket = await raw()
    handler = handler_of(hub)
    protocol = handler.ws_connection
    frame_loop = frame_loop_of(handler)

    async def broken() -> None:
        raise RuntimeError("broken frame reader")

    protocol._receive_frame = broken  # the loop's next read, after the frame it waits for
    await socket.send({"event": "pusher:ping", "data": {}})
    with caplog.at_level(logging.ERROR, logger="tornado.application"):
        await asyncio.wait([frame_loop], timeout=5)
    (record,) = [r for r in caplog.records if "Uncaught exception" in r.getMessage()]
    assert "GET /app/app-key?protocol=7 (127.0.0.1)" in record.getMessage()
    assert record.exc_info[1].args == ("broken frame reader",)
    assert handler.session.is_closed


@pytest.mark.gen_test(timeout=10)
async def test_preloaded_bytes_are_read_first_even_past_one_read_chunk():
    # The HTTP front hands Tornado a connection with bytes it already read;
    # Tornado reads them before the socket's, however many there are.
    ours, theirs = socket.socketpair()
    stream = tornado.iostream.IOStream(ours)
    preloaded = b"x" * (stream.read_chunk_size + 1000) + b"\r\n\r\n"
    preload(stream, preloaded)
    theirs.sendall(b"after")
    assert await stream.read_until(b"\r\n\r\n") == preloaded
    assert await stream.read_bytes(5) == b"after"
    stream.close()
    theirs.close()


@pytest.mark.gen_test(timeout=10)
async def test_unread_bytes_are_read_again_first():
    # The frame loop reads a frame's first two bytes to check its mask bit, then puts
    # them back for Tornado to read the frame as usual.
    ours, theirs = socket.socketpair()
    stream = tornado.iostream.IOStream(ours)
    theirs.sendall(b"headerpayload")
    header = await stream.read_bytes(6)
    unread(stream, header)
    assert await stream.read_bytes(13) == b"headerpayload"
    unread(stream, b"again")  # into an empty buffer too
    theirs.sendall(b"!")
    assert await stream.read_bytes(6) == b"again!"
    stream.close()
    theirs.close()
