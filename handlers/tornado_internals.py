"""The Tornado internals the fast write path relies on, and nothing else.

Tornado's ``write_message`` costs a Task, a Future and a copy for every
message sent, and buffers without limit for a client that never reads. The
broadcast path writes pre-framed bytes straight to the connection's IOStream
instead, which needs three things Tornado does not expose publicly. They live
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
