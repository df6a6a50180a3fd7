"""The WebSocket endpoint ``/app/{key}``: one :class:`pubsub.session.Session` per socket."""

from __future__ import annotations

import tornado.websocket

from .outbound import FrameCache, Flusher, retrieve_outcome, unread_time
from .tornado_internals import (abort, frames_read_in_own_task, release_handshake,
                                websocket_compresses, write_frames, write_progress)
from ..pubsub import protocol
from ..pubsub.apps import App
from ..pubsub.errors import ConnectionRefused, ErrorCode
from ..pubsub.hub import Hub
from ..pubsub.observe import CLOSED_ABNORMALLY
from ..pubsub.session import Session

#: A close frame's reason may hold at most 123 bytes.
_MAX_CLOSE_REASON = 123
# One per process: the broadcast loop frames a publication once for all its
# subscribers, and every connection's frames go out once per loop iteration.
_frames = FrameCache()
_flusher = Flusher()


def app_for(hub: Hub, key: str, version: str | None, origin: str | None) -> App:
    """The app a connection with ``key``, ``?protocol=version`` and the ``Origin`` header
    ``origin`` (None: without one) is for, or :class:`ConnectionRefused` saying why not
    (every transport admits the same way)."""
    app = hub.apps.by_key(key)
    if app is None:
        raise ConnectionRefused(ErrorCode.NO_SUCH_APP, f"App key {key} does not exist",
                                "unknown_app")
    if version is None:
        raise ConnectionRefused(ErrorCode.NO_PROTOCOL,
                                "No protocol version given: add ?protocol=7", "no_protocol")
    if version != str(protocol.PROTOCOL_VERSION):
        raise ConnectionRefused(ErrorCode.UNSUPPORTED_PROTOCOL,
                                f"Protocol {version} is not supported: use 7",
                                "unsupported_protocol")
    if not app.enabled:
        raise ConnectionRefused(ErrorCode.APP_DISABLED, "App is disabled", "app_disabled")
    refusal = app.origin_refusal(origin)
    if refusal is not None:
        raise refusal
    return app


class PusherSocketHandler(tornado.websocket.WebSocketHandler):
    """Carries Pusher frames between one client and its session; the transport of that session.

    Outbound frames skip ``write_message``: they are framed once per
    publication, queued, and written to the stream once per loop iteration
    (see :mod:`handlers.outbound`). A connection that negotiated
    permessage-deflate takes ``write_message`` instead, since its bytes are
    its own.
    """

    #: The ``transport`` label of its connections in metrics.
    kind = "ws"

    # Ours in slots, 8 bytes each: the instance dict is Tornado's (see release_handshake).
    __slots__ = ("hub", "session", "_compression", "_max_message_bytes", "_deflates", "_queued",
                 "_backlog")

    def initialize(self, hub: Hub, compression: bool = False, max_message_bytes: int | None = None,
                   **_: object) -> None:
        self.hub = hub
        self.session: Session | None = None
        self._compression = compression
        self._max_message_bytes = max_message_bytes
        self._deflates = False
        #: Frames to write at the end of this loop iteration; None, not an empty list, when idle.
        self._queued: list[bytes] | None = None
        #: When bytes were first seen waiting unread, and the write count they are within
        #: (see unread_for); None while nothing waits.
        self._backlog: tuple[float, int] | None = None

    @property
    def max_message_size(self) -> int:
        """Our limit, so that a host Application's own setting stays its own handlers'."""
        return self._max_message_bytes or super().max_message_size

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        return frames_read_in_own_task(super().get_websocket_protocol())

    def get_compression_options(self) -> dict[str, object] | None:
        return {} if self._compression else None

    def check_origin(self, origin: str) -> bool:
        # Every handshake completes: an origin the app does not allow is refused in open()
        # with pusher:error 4009, which pusher-js does not retry (a 403 here it would).
        return True

    def open(self, key: str) -> None:
        self._deflates = websocket_compresses(self)
        try:
            app = app_for(self.hub, key, self.get_query_argument("protocol", None),
                          self.request.headers.get("Origin") or None)
        except ConnectionRefused as refusal:
            self.hub.observers.connection_refused(self.hub.apps.by_key(key), refusal.reason)
            self.send(protocol.dumps({"event": protocol.ERROR,
                                      "data": {"code": refusal.code, "message": refusal.message}}
                                     ).encode())
            self.close(refusal.code, refusal.message)
            return
        self.session = Session(self.hub, app, self, self.request.remote_ip or "")
        self.session.open()
        if not self.session.is_closed:  # a connection the hub refused is closed already
            release_handshake(self)

    async def on_message(self, message: str | bytes) -> None:
        # Tornado reads this socket's next message only after this returns,
        # so each client's messages are handled in the order sent.
        if self.session is not None:
            await self.session.receive(message)

    def on_ping(self, data: bytes) -> None:
        if self.session is not None:
            self.session.mark_activity()

    def on_pong(self, data: bytes) -> None:
        if self.session is not None:
            self.session.mark_activity()

    def on_close(self) -> None:
        self._queued = None
        if self.session is not None:
            # The client's close code; none when it went without a close frame (1006).
            self.session.closed(self.close_code or CLOSED_ABNORMALLY)

    # -- the session's transport ------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one text frame (``frame`` is UTF-8 JSON); a closed socket drops it."""
        if self._deflates:
            connection = self.ws_connection
            if connection is not None and not connection.is_closing():
                try:
                    connection.write_message(frame).add_done_callback(retrieve_outcome)
                except tornado.websocket.WebSocketClosedError:
                    pass  # gone mid-broadcast: on_close follows, the others still get theirs
            return
        if self._queued is None:
            _flusher.mark(self)
            self._queued = [_frames.frame(frame)]
        else:
            self._queued.append(_frames.frame(frame))

    def write_queued(self) -> None:
        """Write the frames queued this iteration as one write. If that would leave more than
        the app's ``max_outbound_bytes`` unread, they are dropped instead and the session is
        closed as too slow (4100)."""
        queued, self._queued = self._queued, None
        if not queued:
            return
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        session = self.session
        limit = session.app.max_outbound_bytes if session is not None else 0
        if not write_frames(self.ws_connection, data, limit):
            assert session is not None
            session.too_slow(f"over {limit} bytes unread")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        """Close with ``code``, after what was queued (the ``pusher:error`` saying why, say).

        These are the last bytes the connection is sent, so they go past the outbound
        limit: they are bounded, as the queue holds one loop iteration's frames, and a
        slow consumer's was dropped before it was closed. Tornado aborts the connection if
        the client has not answered the close within 5 s, read or not.
        """
        queued, self._queued = self._queued, None
        if queued:
            write_frames(self.ws_connection, b"".join(queued), 0)
        if reason is not None:
            reason = reason.encode()[:_MAX_CLOSE_REASON].decode(errors="ignore")
        super().close(code, reason)

    def abort(self) -> None:
        """Drop the connection at once, writing nothing more; ``on_close`` follows."""
        self._queued = None
        abort(self.ws_connection)

    def unread_for(self, now: float) -> float:
        """For how long, at least, bytes written to the client have waited in this process's
        buffer (the kernel's being full): 0 while the client keeps up.

        Measured between calls (the session's activity checks, ``now`` being the check's
        time): bytes that waited at one call and still wait at a later one have waited the
        time between. Costs nothing on the write path; a connection with nothing waiting
        keeps no mark.
        """
        self._backlog, unread = unread_time(self._backlog, now, write_progress(self.ws_connection))
        return unread
