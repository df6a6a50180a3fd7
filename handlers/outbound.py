"""Outbound frames: framed once per publication, coalesced once per loop iteration.

The hub hands the same payload bytes to every subscriber. :func:`text_frame`
adds the WebSocket header, and the one-entry cache makes that happen once per
publication rather than once per subscriber, since the subscribers of one
publication are served one after another. Each connection queues its frames,
and :class:`Flusher` writes every connection's queue as one ``write`` at the
end of the loop iteration: one syscall attempt per connection per iteration,
however many messages it got.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Protocol

from ..pubsub import lograte

_FIN_TEXT = 0x81
log = logging.getLogger(__name__)
# A bug that fails every connection's write would otherwise log once per connection
# per flush: limited here, wherever the engine runs, not only under server.py.
lograte.limit([log])


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (RFC 6455 5.2), as a server sends it."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", _FIN_TEXT, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


class FrameCache:
    """Remembers the last payload framed, by identity: the broadcast loop asks for it again."""

    __slots__ = ("_payload", "_frame")

    def __init__(self) -> None:
        self._payload: bytes | None = None
        self._frame = b""

    def frame(self, payload: bytes) -> bytes:
        # Holding the payload keeps its id from being reused while it is cached.
        if payload is not self._payload:
            self._payload, self._frame = payload, websocket_text_frame(payload)
        return self._frame


class Flushable(Protocol):
    def write_queued(self) -> None:
        """Write everything queued on this connection."""

    def abort(self) -> None:
        """Drop the connection at once, writing nothing more. Never raises."""


class Flusher:
    """Calls ``write_queued`` once per loop iteration on every connection that queued something.

    One flush serves every connection, so a connection's failure stays its own: a
    ``write_queued`` that raises aborts that connection (logged at most ``lograte.BURST`` times
    per ``lograte.INTERVAL``) and the flush goes on to the others.
    """

    __slots__ = ("_dirty", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def mark(self, connection: Flushable) -> None:
        """``connection`` queued its first frame of this iteration."""
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for connection in dirty:
            try:
                connection.write_queued()
            except Exception as error:
                log.error("writing a connection's frames failed (%s): aborting it",
                          type(error).__name__, exc_info=error)
                connection.abort()
