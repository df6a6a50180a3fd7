"""The Tornado internals the fast write path, the idle-connection trimming and the
HTTP front's hand-off rely on.

Tornado's ``write_message`` costs a Task, a Future and a copy for every
message sent, and buffers without limit for a client that never reads. The
broadcast path writes pre-framed bytes straight to the connection's IOStream
instead (:func:`write_frames`), which reaches into the WebSocket protocol
and its IOStream.

An idle connection is most of a server's memory, and Tornado keeps much of
its HTTP handshake for the connection's lifetime. :func:`release_handshake`
and :func:`frames_read_in_own_task` let that go; they depend on which of its
attributes Tornado reads after the handshake.

The HTTP front hands a connection to Tornado with bytes it has already read:
:func:`preload` puts them in the IOStream's read buffer.

Tornado's WebSocket protocol is lax in three ways RFC 6455 is not (unmasked
client frames, text or a close reason that is not UTF-8): the protocol that
reads frames in its own Task (:func:`frames_read_in_own_task`) closes those
connections with the codes the RFC names, which ``tests/test_websocket_rfc6455.py``
checks on the wire.

They live here so that ``tests/test_tornado_internals.py`` can check each one
against the pinned Tornado range (see requirements.txt) and fail loudly on an
upgrade that changes them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Iterable, Iterator

import tornado.httputil
import tornado.iostream
import tornado.websocket


def websocket_compresses(handler: tornado.websocket.WebSocketHandler) -> bool:
    """Whether the connection negotiated permessage-deflate (frames differ per connection)."""
    connection = handler.ws_connection
    return connection is not None and connection._compressor is not None  # noqa: SLF001


def write_frames(connection: tornado.websocket.WebSocketProtocol | None, data: bytes,
                 limit: int) -> bool:
    """Write framed ``data`` to an open connection; False, writing nothing, if that would
    leave more than ``limit`` bytes (0: no limit) unsent: the client is too slow.

    ``IOStream.write`` makes a Future and a buffer entry for every call, though
    a peer that keeps up takes nearly every write whole at once. While the
    stream's buffer is empty, ``data`` goes straight to the socket, which keeps
    the order; a remainder, or any error, goes to ``IOStream.write``, which
    queues it or closes the stream as usual. TLS streams always go through the
    stream: records are its business. A connection that is closing (its close
    frame sent or received) or closed gets nothing. This runs once per
    delivery, so it reads the few attributes it needs directly.
    """
    if connection is None or connection.client_terminated or connection.server_terminated:
        return True
    stream = connection.stream  # WebSocketProtocol13.stream
    if stream._closed:  # noqa: SLF001
        return True
    unsent = unsent_bytes(stream)
    if limit and unsent + len(data) > limit:
        return False
    if not unsent and type(stream) is tornado.iostream.IOStream:
        try:
            sent = stream.socket.send(data)
        except OSError:  # EAGAIN, or an error IOStream.write reports in its own way
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    try:
        stream.write(data)  # its Future retrieves its own error: nothing to await
    except tornado.iostream.StreamClosedError:
        pass  # the handler's on_close follows
    return True


def write_progress(connection: tornado.websocket.WebSocketProtocol | None) -> tuple[int, int]:
    """Bytes the connection's stream was given to queue, and how many of those the kernel
    has taken since, both counted from the start; equal while nothing waits in our buffer,
    and for a connection that is closing or closed (what it still holds is not waited for).

    ``IOStream.write`` counts the first as ``_total_write_index``, ``_handle_write`` the
    second as ``_total_write_done_index``; what :func:`write_frames` sends straight to the
    socket counts in neither.
    """
    if connection is None or connection.is_closing():
        return 0, 0
    return stream_write_progress(connection.stream)


def unsent_bytes(stream: tornado.iostream.IOStream) -> int:
    """Bytes the stream holds in its own buffer, not yet taken by the kernel."""
    return stream._write_buffer._size  # noqa: SLF001  (what _StreamBuffer.__len__ returns)


def stream_write_progress(stream: tornado.iostream.IOStream) -> tuple[int, int]:
    """:func:`write_progress` of any stream (an HTTP response's, say): bytes given to the
    stream to queue and bytes of those the kernel has taken since, counted from the start."""
    return stream._total_write_index, stream._total_write_done_index  # noqa: SLF001


def abort(connection: tornado.websocket.WebSocketProtocol | None) -> None:
    """Close the connection's socket at once, writing nothing more (no close frame): what
    Tornado does on a protocol error. The handler's ``on_close`` follows."""
    if connection is not None:
        connection._abort()  # noqa: SLF001


def preload(stream: tornado.iostream.IOStream, data: bytes) -> None:
    """Put ``data`` in the stream's read buffer, as if it had been read from the socket.

    The HTTP front (handlers/front.py) has read these bytes from the
    connection before handing it to Tornado, which must see them first.
    """
    stream._read_buffer += data  # noqa: SLF001
    stream._read_buffer_size += len(data)  # noqa: SLF001


# -- idle connections --------------------------------------------------------------

#: Handler attributes only the handshake reads: ``_execute`` (transforms, path
#: arguments), ``get`` (open arguments), and the response (headers and body
#: buffer), which ``_detach_stream`` makes unwritable afterwards.
_HANDSHAKE_ONLY = ("_transforms", "path_args", "path_kwargs", "open_args", "open_kwargs",
                   "_headers", "_write_buffer")
#: Nothing reads the request's headers after the handshake: one empty set serves all.
_NO_HEADERS = tornado.httputil.HTTPHeaders()


class _LazyDeque:
    """The ``deque`` operations IOStream uses, with a deque only while something is queued.

    An empty deque still holds a block of 64 slots (760 bytes in all), and
    IOStream keeps two per stream, of write Futures and of unsent chunks,
    which stay empty while the client keeps up.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items: collections.deque[Any] | None = collections.deque(items) or None

    def append(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)

    def popleft(self) -> Any:
        if self._items is None:
            raise IndexError("pop from an empty queue")
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def clear(self) -> None:
        self._items = None

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def __getitem__(self, index: int) -> Any:
        if self._items is None:
            raise IndexError("the queue is empty")
        return self._items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items or ())


def release_handshake(handler: tornado.websocket.WebSocketHandler) -> None:
    """Drop what only the HTTP handshake needed, once ``open`` runs: most connections are idle.

    The request keeps its start line and address, for logging. Its HTTP/1
    connection is detached and done, but would hold the parsed request
    headers and the response's Futures.
    """
    request = handler.request
    request.headers = _NO_HEADERS
    request.arguments = request.query_arguments = request.body_arguments = request.files = {}
    request.connection = request.server_connection = None
    handler.ui = None  # template helpers; a WebSocket renders none
    # A dict built anew holds just what is left (~460 bytes). The handshake
    # leaves one sized for all 27 attributes Tornado set (~830 bytes): CPython
    # keeps attributes out of a dict of their own only when the class's first
    # instances set them all before others are made, and handshakes interleave.
    handler.__dict__ = {name: value for name, value in vars(handler).items()
                        if name not in _HANDSHAKE_ONLY}
    stream = handler.ws_connection.stream  # type: ignore[union-attr]
    stream._write_futures = _LazyDeque(stream._write_futures)  # type: ignore[assignment]  # noqa: SLF001
    buffer = stream._write_buffer  # noqa: SLF001
    buffer._buffers = _LazyDeque(buffer._buffers)  # type: ignore[assignment]  # noqa: SLF001


def unread(stream: tornado.iostream.IOStream, data: bytes) -> None:
    """Put ``data`` back at the front of the stream's read buffer: the next read gets it first."""
    stream._read_buffer[:0] = data  # noqa: SLF001
    stream._read_buffer_size += len(data)  # noqa: SLF001


#: RFC 6455 5.2: the opcodes checked here, and the bit of a masked frame.
_TEXT, _CLOSE, _MASKED = 0x1, 0x8, 0x80


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class _OwnTaskProtocol(tornado.websocket.WebSocketProtocol13):
    """Reads frames in a Task of its own instead of at the bottom of the handshake's
    coroutines, and holds clients to RFC 6455 where Tornado does not.

    ``_accept_connection`` awaits ``_receive_frame_loop`` after ``open``, so
    the handler's ``_execute`` Task, with ``get``, ``accept_connection`` and
    their locals (the request headers among them), would live as long as the
    connection. Returning at once lets them finish.

    Tornado accepts a client frame that is not masked, drops the TCP connection
    on text that is not UTF-8, and raises out of its frame loop on a close whose
    reason is not UTF-8. Here the server closes as the RFC says: 1002, 1007 and
    1007 (7.4.1). Once the server has sent its close, the frames that follow are
    read until the client's close but not acted on (5.5.1). A compressed text
    message that is not UTF-8 still drops the connection, as in Tornado: it is
    decompressed only inside ``_handle_message``.
    """

    async def _receive_frame(self) -> None:
        header = await self.stream.read_bytes(2)
        unread(self.stream, header)  # Tornado reads the frame as usual, header first
        if not header[1] & _MASKED:
            self.close(1002, "Client frames must be masked")
        await super()._receive_frame()

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        if opcode == _CLOSE:
            if not _is_utf8(data[2:]):
                self.client_terminated = True  # the client has closed: nothing more is read
                self.close(1007, "Close reason is not UTF-8")
                return None
        elif self.server_terminated:
            return None  # closing: only the client's close is still awaited
        elif opcode == _TEXT and not self._frame_compressed and not _is_utf8(data):
            self.close(1007, "Text message is not UTF-8")
            return None
        return super()._handle_message(opcode, data)

    async def _receive_frame_loop(self) -> None:
        task = asyncio.ensure_future(super()._receive_frame_loop())
        _frame_loops.add(task)
        task.add_done_callback(self._frame_loop_done)

    def _frame_loop_done(self, task: asyncio.Task[None]) -> None:
        _frame_loops.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # what RequestHandler._execute logs, had the loop run in it
            self.handler.log_exception(type(error), error, error.__traceback__)


#: The running frame loops. asyncio keeps only weak references to Tasks; Tornado
#: keeps its own in a set like this one (IOLoop._pending_tasks).
_frame_loops: set[asyncio.Task[None]] = set()


def frames_read_in_own_task(protocol: tornado.websocket.WebSocketProtocol | None
                            ) -> tornado.websocket.WebSocketProtocol | None:
    """The protocol ``get_websocket_protocol`` made, remade to read frames in its own Task."""
    if type(protocol) is not tornado.websocket.WebSocketProtocol13:
        return protocol
    return _OwnTaskProtocol(protocol.handler, protocol.mask_outgoing, protocol.params)
