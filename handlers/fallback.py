"""pusher-js's HTTP fallback transports, ``xhr_streaming`` and ``xhr_polling``.

When WebSocket is blocked, pusher-js opens an HTTP session
``{httpPath}/app/{key}/{server}/{sid}`` (``httpPath`` defaults to ``/pusher``) and
POSTs to three URLs under it: ``xhr_streaming`` (a response that stays open and
carries one frame per line), ``xhr`` (the same, answered as soon as there is
something to say: polling) and ``xhr_send`` (the client's messages, a JSON array
of strings). Frames: ``o`` (opened), ``a[...]`` (messages, each the text of a
WebSocket frame), ``h`` (heartbeat), ``c[code,"reason"]`` (closed), as stock
pusher-js 8 sends and parses them; ``docs/fallbacks.md`` is the users' guide.

Each HTTP session is a :class:`pubsub.session.Session` whose transport is an
:class:`HttpTransport`: channels, auth, presence, limits and metrics are the
WebSocket's. The ``{server}/{sid}`` pair is the session's only credential, so it
is never logged (see :meth:`_FallbackHandler._request_summary`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import tornado.web

from .cors import readable_by
from .socket import app_for
from ..pubsub import protocol, text
from ..pubsub.apps import App
from ..pubsub.errors import ConnectionRefused
from ..pubsub.hub import Hub
from ..pubsub.observe import CLOSED_ABNORMALLY
from ..pubsub.session import Session

#: pusher-js aborts a stream and opens the next once it has read more than this many
#: characters of it; anything written after the point it stopped reading is lost.
RECYCLE_CHARS = 256 * 1024
#: SockJS's prelude: pusher-js takes it for a heartbeat; proxies see bytes at once.
_PRELUDE = "h" * 2048 + "\n"
_HEARTBEAT = "h\n"
_TRANSPORT_KINDS = {"xhr_streaming": "xhr_streaming", "xhr": "xhr_polling"}
_HEADERS = {
    "Content-Type": "application/javascript; charset=UTF-8",
    "Cache-Control": "no-store, no-cache, no-transform, must-revalidate, max-age=0",
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True)
class FallbackOptions:
    """How HTTP sessions are kept."""

    #: Seconds a session lives with no receive request open before it is closed (the
    #: client left: pusher-js sends nothing when it disconnects).
    disconnect_timeout: float = 10
    #: Seconds of silence on a receive request before it gets a heartbeat (a stream an
    #: ``h`` line, a poll its answer); below pusher-js's 30 s pong timeout.
    heartbeat_interval: float = 25
    #: HTTP sessions this process keeps, closed ones awaiting expiry included (503 beyond).
    max_sessions: int = 10_000
    #: Of those, the most one client address may hold (429 beyond), so that one client
    #: cannot fill the table and refuse everyone else. Generous, as the users of the
    #: fallback are often many people behind one proxy's address.
    max_sessions_per_ip: int = 1_000
    #: This process's own host name, sent in the ``o`` frame: pusher-js then sends the rest
    #: of the session's requests there (same scheme, port and path), which pins a session to
    #: its process without sticky routing. Empty: not sent.
    hostname: str = ""

    @property
    def open_frame(self) -> str:
        """The ``o`` line that opens a session."""
        return f"o{json.dumps({'hostname': self.hostname})}\n" if self.hostname else "o\n"


def _close_frame(code: int, reason: str) -> str:
    return "c" + json.dumps([code, reason]) + "\n"


class _Encoded:
    """The JSON string of the last message encoded, by identity: a broadcast hands the
    same bytes to every session, so each publication is encoded once, not per session."""

    __slots__ = ("_message", "_text")

    def __init__(self) -> None:
        self._message: bytes | None = None
        self._text = ""

    def text(self, message: bytes) -> str:
        # ASCII only, so that characters written equal the characters pusher-js counts.
        if message is not self._message:
            self._message, self._text = message, json.dumps(message.decode())
        return self._text


_encoded = _Encoded()


class HttpTransport:
    """One HTTP session's transport: a bounded outbox drained by its receive requests.

    Frames wait in the outbox until a receive request is attached, and are written at
    most once per loop iteration, one write in flight at a time: the outbox, bounded by
    the app's ``max_outbound_bytes`` (over it, the session is closed as a slow
    consumer), is all that waits. A stream is written up to pusher-js's recycle point
    and no further, so nothing is lost when the client opens the next one.
    """

    def __init__(self, sessions: HttpSessions, key: tuple[str, str, str], kind: str,
                 remote_ip: str) -> None:
        self.kind = kind
        self.remote_ip = remote_ip
        self.session: Session | None = None
        self._sessions = sessions
        self._key = key
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        #: hub clock time the oldest frame in the outbox was queued; None when empty.
        self._waiting_since: float | None = None
        self._closing: str | None = None  # the ``c`` frame, once closed
        self._receiver: ReceiveHandler | None = None
        self._flush_scheduled = False
        self._expiry: asyncio.TimerHandle | None = None
        #: One client message handled at a time, in the order their POSTs arrived.
        self.inbound = asyncio.Lock()

    # -- the session's transport -------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one message, and nothing more: a broadcast is iterating the channel's
        subscribers meanwhile (the outbound limit is checked by :meth:`flush`)."""
        if self._closing is not None:
            return
        if self._waiting_since is None:
            assert self.session is not None
            self._waiting_since = self.session.hub.clock()
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        self._schedule_flush()

    def close(self, code: int, reason: str) -> None:
        """End with a ``c`` frame after what is queued; later receive requests get it again."""
        if self._closing is None:
            self._closing = _close_frame(code, reason)
            self._schedule_flush()

    def unread_for(self, now: float) -> float:
        """How long the oldest queued frame has waited for a receive request to take it."""
        return 0.0 if self._waiting_since is None else now - self._waiting_since

    # -- receive requests ----------------------------------------------------------

    def attach(self, receiver: ReceiveHandler) -> None:
        """``receiver`` takes over from any other (finished without a ``c`` frame); a
        receive request shows the client alive, as any WebSocket frame does."""
        assert self.session is not None
        self.session.mark_activity()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        previous, self._receiver = self._receiver, receiver
        if previous is not None:
            previous.end()
        self._schedule_flush()

    def detach(self, receiver: ReceiveHandler) -> None:
        """``receiver`` is gone: the client has ``disconnect_timeout`` to send the next."""
        if self._receiver is receiver:
            self._receiver = None
            self._expiry = asyncio.get_running_loop().call_later(
                self._sessions.options.disconnect_timeout, self.expire)

    def expire(self) -> None:
        """No receive request came in time: the client left (close 1006), or has been told."""
        self._expiry = None
        self._sessions.forget(self._key, self)
        if self.session is not None:
            self.session.closed(CLOSED_ABNORMALLY)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued to the receiver, if one can take it now. Over the app's
        ``max_outbound_bytes`` unread, the outbox is dropped instead and the session closed
        as too slow (4100), as a WebSocket is."""
        self._flush_scheduled = False
        session = self.session
        assert session is not None
        limit = session.app.max_outbound_bytes
        if limit and self._outbox_bytes > limit and self._closing is None:
            self._outbox.clear()
            self._outbox_bytes = 0
            self._waiting_since = None
            session.too_slow(f"over {limit} bytes unread")  # queues the error and c frame
            return
        receiver = self._receiver
        if receiver is None or not receiver.ready():
            return
        if self._outbox:
            frame = "a[" + ",".join(_encoded.text(message) for message in self._outbox) + "]\n"
            self._outbox.clear()
            self._outbox_bytes = 0
            self._waiting_since = None
            receiver.write_frame(frame)
        if self._closing is not None and receiver.ready():
            receiver.write_frame(self._closing)
            receiver.end()
        elif not receiver.streaming and receiver.written:
            receiver.end()

    def answer_closed(self, receiver: ReceiveHandler) -> bool:
        """Answer ``receiver`` with the ``c`` frame if the session has closed."""
        if self._closing is None or self._outbox:
            return False
        receiver.write_frame(self._closing)
        receiver.end()
        return True


class HttpSessions:
    """This process's HTTP sessions by ``(app key, server, session id)``, bounded in count
    in all and per client address."""

    def __init__(self, hub: Hub, options: FallbackOptions) -> None:
        self.hub = hub
        self.options = options
        self._sessions: dict[tuple[str, str, str], HttpTransport] = {}
        self._per_ip: dict[str, int] = {}

    def get(self, key: tuple[str, str, str]) -> HttpTransport | None:
        """The session's transport, closed or not, until it expires."""
        return self._sessions.get(key)

    def open(self, key: tuple[str, str, str], app: App, kind: str,
             remote_ip: str) -> HttpTransport:
        """A new session, opened (or refused by the engine: closed).

        Raises :class:`tornado.web.HTTPError` 503 when the process has its fill, 429 when
        ``remote_ip`` has its share: before the engine sees anything."""
        if len(self._sessions) >= self.options.max_sessions:
            raise tornado.web.HTTPError(503, reason="Too many HTTP sessions")
        from_ip = self._per_ip.get(remote_ip, 0)
        if from_ip >= self.options.max_sessions_per_ip:
            raise tornado.web.HTTPError(429, reason="Too many HTTP sessions from this address")
        transport = HttpTransport(self, key, kind, remote_ip)
        self._sessions[key] = transport
        self._per_ip[remote_ip] = from_ip + 1
        transport.session = Session(self.hub, app, transport, remote_ip)
        transport.session.open()
        return transport

    def forget(self, key: tuple[str, str, str], transport: HttpTransport) -> None:
        """Drop an expired session (only that one: a new one may hold its key)."""
        if self._sessions.get(key) is transport:
            del self._sessions[key]
            remaining = self._per_ip.pop(transport.remote_ip) - 1
            if remaining:
                self._per_ip[transport.remote_ip] = remaining


class _FallbackHandler(tornado.web.RequestHandler):
    """CORS for every origin (:func:`~.cors.readable_by`: an origin the app refuses is
    refused in band, when its session opens), and no session id in the access log."""

    def initialize(self, sessions: HttpSessions, max_message_bytes: int | None = None,
                   **_: object) -> None:
        self.sessions = sessions
        #: A client message's largest size (None: 64 KiB, PUSH_MAX_MESSAGE_BYTES's default).
        self.max_message_bytes = max_message_bytes or 64 * 1024

    @property
    def origin(self) -> str | None:
        """The request's ``Origin`` header; None without one."""
        return self.request.headers.get("Origin") or None

    def set_default_headers(self) -> None:
        for name, value in readable_by(self.origin).items():
            self.set_header(name, value)

    def options(self, *args: str, **kwargs: str) -> None:
        """The preflight pusher-js's ``Content-Type: application/json`` causes on every POST."""
        self.set_header("Access-Control-Allow-Methods", "OPTIONS, POST")
        requested = self.request.headers.get("Access-Control-Request-Headers")
        if requested:
            self.set_header("Access-Control-Allow-Headers", requested)
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_status(204)

    def check_xsrf_cookie(self) -> None:
        pass  # pusher-js sends no cookies cross-origin; the session path is the credential

    def _request_summary(self) -> str:
        # What Tornado's access log shows: the path without {server}/{sid}. Taken from the
        # path the route matched, as the path arguments are unset when they are not UTF-8.
        app_path, _server, _sid, kind = self.request.path.rsplit("/", 3)
        return f"{self.request.method} {app_path}/…/{kind} ({self.request.remote_ip})"


class ReceiveHandler(_FallbackHandler):
    """``POST …/xhr_streaming`` and ``POST …/xhr``: carries frames to the client."""

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        self.written = False
        self._ended = asyncio.Event()
        self._wrote = asyncio.Event()
        self._chars = 0
        self._flushing: asyncio.Future | None = None
        self.streaming = False
        self.transport: HttpTransport | None = None

    async def post(self, key: str, server: str, sid: str, kind: str) -> None:
        for name, value in _HEADERS.items():
            self.set_header(name, value)
        self.streaming = kind == "xhr_streaming"
        session_key = (key, server, sid)
        transport = self.sessions.get(session_key)
        opened = transport is None
        if transport is None:
            try:
                app = app_for(self.sessions.hub, key, self.get_query_argument("protocol", None),
                              self.origin)
            except ConnectionRefused as refusal:
                self._refuse(key, refusal)
                return
            transport = self.sessions.open(session_key, app, _TRANSPORT_KINDS[kind],
                                           self.request.remote_ip or "")
        if self.streaming:
            self.write_frame(_PRELUDE, counts_as_written=False)
        if opened:
            self.write_frame(self.sessions.options.open_frame)
        elif transport.answer_closed(self):
            return
        self.transport = transport
        transport.attach(self)
        try:
            await self._hold()
        finally:
            transport.detach(self)

    def _refuse(self, key: str, refusal: ConnectionRefused) -> None:
        """Open, say why and close, as a WebSocket is refused: a ``c`` before ``o`` would
        only make pusher-js try again."""
        self.sessions.hub.observers.connection_refused(self.sessions.hub.apps.by_key(key),
                                                       refusal.reason)
        error = protocol.encode_error(refusal.code, refusal.message)
        self.write_frame(self.sessions.options.open_frame + "a[" + _encoded.text(error) + "]\n"
                         + _close_frame(refusal.code, refusal.message))

    async def _hold(self) -> None:
        """Until ended, the client gone, or (polling) answered; silence gets heartbeats."""
        interval = self.sessions.options.heartbeat_interval
        while not self._ended.is_set():
            self._wrote.clear()
            wrote = asyncio.ensure_future(self._wrote.wait())
            ended = asyncio.ensure_future(self._ended.wait())
            done, pending = await asyncio.wait({wrote, ended}, timeout=interval,
                                               return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
            if not done:  # silence
                if self.streaming:
                    if self.ready():
                        self.write_frame(_HEARTBEAT)
                else:
                    self.write_frame(_HEARTBEAT)
                    self.end()

    # -- what the transport writes through -----------------------------------------

    def ready(self) -> bool:
        """Whether a frame may be written now: open, no write in flight and (streaming)
        not past the point where pusher-js recycles the stream."""
        return (not self._ended.is_set() and not self._finished
                and (self._flushing is None or self._flushing.done())
                and self._chars <= RECYCLE_CHARS)

    def write_frame(self, text: str, counts_as_written: bool = True) -> None:
        """Write one or more ASCII frame lines at once (the prelude: not a poll's answer)."""
        self._chars += len(text)
        self.written = self.written or counts_as_written
        self.write(text)
        self._flushing = self.flush()
        self._flushing.add_done_callback(self._flushed)
        self._wrote.set()

    def _flushed(self, future: asyncio.Future) -> None:
        if future.cancelled() or future.exception() is not None:
            self.end()  # the client has gone
        elif self.transport is not None:
            self.transport.flush()  # what queued meanwhile

    def end(self) -> None:
        """Finish this request (the transport has done with it)."""
        self._ended.set()

    def on_connection_close(self) -> None:
        self._ended.set()


class SendHandler(_FallbackHandler):
    """``POST …/xhr_send``: the client's messages, a JSON array of strings, in order."""

    async def post(self, key: str, server: str, sid: str, kind: str) -> None:
        transport = self.sessions.get((key, server, sid))
        session = transport.session if transport is not None else None
        if session is None or session.is_closed:
            raise tornado.web.HTTPError(404, reason="No such session")
        try:  # refuses what json.loads would choke on (deep nesting) or let through
            messages = text.loads(self.request.body)
        except text.InvalidText as error:
            raise tornado.web.HTTPError(400, reason=f"Body is not JSON: {error.message}"
                                        ) from None
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise tornado.web.HTTPError(400, reason="Body is not a JSON array of strings")
        if any(len(message.encode(errors="replace")) > self.max_message_bytes
               for message in messages):  # the WebSocket's limit, as a message's own size
            raise tornado.web.HTTPError(413, reason="Message too large")
        assert transport is not None
        async with transport.inbound:
            session.mark_activity()  # an empty array is pusher-js's ping
            for message in messages:
                await session.receive(message)
        self.set_status(204)


def fallback_routes(hub: Hub, prefix: str, options: FallbackOptions,
                    max_message_bytes: int | None) -> list[tuple[str, type, dict[str, Any]]]:
    """The routes pusher-js's ``httpPath`` (default ``/pusher``) reaches under ``prefix``."""
    context = {"sessions": HttpSessions(hub, options), "max_message_bytes": max_message_bytes}
    base = rf"{prefix}/pusher/app/(?P<key>[^/]+)/(?P<server>[^/.]+)/(?P<sid>[^/.]+)"
    return [
        (rf"{base}/(?P<kind>xhr_streaming|xhr)", ReceiveHandler, context),
        (rf"{base}/(?P<kind>xhr_send)", SendHandler, context),
    ]
