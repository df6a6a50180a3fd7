"""The Tornado internals the fast write path relies on, and nothing else.

Tornado's ``write_message`` costs a Task, a Future and a copy for every
message sent, and buffers without limit for a client that never reads. The
broadcast path writes pre-framed bytes straight to the connection's IOStream
instead, which needs four things Tornado does not expose publicly. They live
here so that ``tests/test_tornado_internals.py`` can check each one against
the pinned Tornado range (see requirements.txt) and fail loudly on an upgrade
that changes them.
"""

from __future__ import annotations

import tornado.iostream
import tornado.websocket


def websocket_stream(handler: tornado.websocket.WebSocketHandler) -> tornado.iostream.IOStream | None:
    """The open connection's stream, or None once it is closing or closed."""
    connection = handler.ws_connection
    if connection is None or connection.is_closing():
        return None
    return connection.stream  # WebSocketProtocol13.stream


def websocket_compresses(handler: tornado.websocket.WebSocketHandler) -> bool:
    """Whether the connection negotiated permessage-deflate (frames differ per connection)."""
    connection = handler.ws_connection
    return connection is not None and connection._compressor is not None  # noqa: SLF001


def unsent_bytes(stream: tornado.iostream.IOStream) -> int:
    """Bytes written to the stream that the kernel has not taken yet."""
    return len(stream._write_buffer)  # noqa: SLF001  (_StreamBuffer.__len__)


def write(stream: tornado.iostream.IOStream, data: bytes) -> None:
    """Write ``data``: straight to the socket while nothing is queued, else through the stream.

    ``IOStream.write`` makes a Future and a buffer entry for every call, though
    a peer that keeps up takes nearly every write whole at once. Sending
    directly while the stream's buffer is empty keeps the order; a remainder,
    or any error, goes to ``IOStream.write``, which queues it or closes the
    stream as usual. TLS streams always go through the stream: records are
    its business. Raises StreamClosedError like ``IOStream.write``.
    """
    sock = stream.socket
    if sock is not None and type(stream) is tornado.iostream.IOStream and not stream._write_buffer:  # noqa: SLF001
        try:
            sent = sock.send(data)
        except OSError:  # EAGAIN, or an error IOStream.write reports in its own way
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    stream.write(data)  # its Future retrieves its own error: nothing to await
