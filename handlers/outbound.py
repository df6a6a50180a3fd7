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
from typing import Callable, Protocol

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
    """Remembers the last payload framed, by identity: the broadcast loop asks for it again.

    ``framer`` turns a Pusher JSON frame into the bytes a transport writes
    (default: a WebSocket text frame)."""

    __slots__ = ("_payload", "_frame", "_framer")

    def __init__(self, framer: Callable[[bytes], bytes] = websocket_text_frame) -> None:
        self._payload: bytes | None = None
        self._frame = b""
        self._framer = framer

    def frame(self, payload: bytes) -> bytes:
        # Holding the payload keeps its id from being reused while it is cached.
        if payload is not self._payload:
            self._payload, self._frame = payload, self._framer(payload)
        return self._frame


def retrieve_outcome(future: asyncio.Future) -> None:
    """Done callback of a write to a client: one that has gone fails, and nothing is owed
    to it, so its error is retrieved instead of logged by asyncio as unhandled."""
    if not future.cancelled():
        future.exception()


#: When bytes were first seen waiting unread, and the write count they are within; None
#: while nothing waits (a tuple or None: connections keep one each, so no object).
Backlog = tuple[float, int] | None


def unread_time(backlog: Backlog, now: float, progress: tuple[int, int]) -> tuple[Backlog, float]:
    """The connection's new backlog mark, and for how long at least bytes have waited unread.

    ``progress`` is the stream's (bytes given to it, bytes the kernel took), counted from
    the start. Measured between calls: bytes that waited at one call and still wait at a
    later one have waited the time between. A connection with nothing waiting keeps no mark.
    """
    written, taken = progress
    if written == taken:
        return None, 0.0
    if backlog is None or taken >= backlog[1]:  # what waited at the last call has gone
        return (now, written), 0.0
    return backlog, now - backlog[0]


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
