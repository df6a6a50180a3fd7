"""Server-Sent Events: ``GET {prefix}/app/{key}/sse?channels=a,b`` for the browser's ``EventSource``.

A stream is a :class:`pubsub.session.Session` like a WebSocket connection:
this handler is its transport and subscribes it by feeding it
``pusher:subscribe`` frames, so auth, limits, history, observers and metrics
are the engine's. Each Pusher frame the hub encodes once per publication is
turned into SSE text once per publication too (:class:`FrameCache`).

What a stream carries (docs/fallbacks.md, "SSE"):

- channel events as ``event: <name>`` / ``data: <data>`` (one ``data:`` line
  per line of data), with ``id: <channel>:<epoch>:<offset>`` on history channels;
- ``pusher:error`` and ``pusher:subscription_error`` as ``event: pusher:error``
  (data: the error's JSON object, with ``channel`` when it names one);
- other ``pusher:`` / ``pusher_internal:`` events about a channel (presence
  members, ``resume_failed``, ``continuity_lost``...) with ``channel`` added to
  their JSON data;
- not ``connection_established``, ``subscription_succeeded``, ``pong`` or
  ``signin_success``: an ``EventSource`` has nothing to do with them;
- the session's ``pusher:ping`` as a ``: ping`` comment (a heartbeat every
  ``activity_timeout``), which the stream answers itself: an ``EventSource``
  cannot reply, and a client that has gone is seen by its closed socket or
  its unread bytes (``max_outbound_delay``, ``max_outbound_bytes``).

Refusals that come before streaming (unknown app, an origin the app does not
allow, bad channel list, bad or expired token, bad ``Last-Event-ID``) are HTTP 4xx
with a one-line text body. CORS is answered for the origins the app allows
(``handlers/cors.py``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import tornado.iostream
import tornado.web

from .cors import cors_headers
from .outbound import Backlog, FrameCache, Flusher, retrieve_outcome, unread_time
from .tornado_internals import stream_write_progress, unsent_bytes
from ..pubsub import protocol
from ..pubsub.apps import App
from ..pubsub.errors import MessageRejected
from ..pubsub.hub import Hub
from ..pubsub.observe import CLOSED_ABNORMALLY
from ..pubsub.session import Session
from ..pubsub.signing import channel_auth, verify_sse_token
from ..pubsub.streams import Position

#: Channels one stream may name: its subscribes go through the session's inbound rate limit,
#: whose burst (``max_inbound_burst``, 200 by default) must take them all at once.
MAX_CHANNELS = 100
#: An ``EventSource`` leaving is the normal end of a stream (1001: going away).
_CLIENT_LEFT = 1001
#: Close codes after which Pusher clients do not reconnect (protocol 7).
_FINAL_CODES = range(4000, 4100)
HEARTBEAT = b": ping\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
#: Frames an ``EventSource`` has no use for.
_DROPPED = frozenset({protocol.CONNECTION_ESTABLISHED, protocol.SUBSCRIPTION_SUCCEEDED,
                      protocol.PONG, protocol.SIGNIN_SUCCESS})
_ERRORS = frozenset({protocol.ERROR, protocol.SUBSCRIPTION_ERROR})
_PROTOCOL_PREFIXES = ("pusher:", "pusher_internal:")


def sse_event(frame: bytes) -> bytes:
    """The SSE text of one Pusher JSON frame; ``HEARTBEAT`` for a ping, b"" for one dropped."""
    parsed = json.loads(frame)
    event, channel, data = parsed["event"], parsed.get("channel"), parsed.get("data")
    if event == protocol.PING:
        return HEARTBEAT
    if event in _DROPPED:
        return b""
    if event in _ERRORS or event.startswith(_PROTOCOL_PREFIXES):
        fields = data if isinstance(data, dict) else _object(data)
        if channel is not None:
            fields = {**fields, "channel": channel}
        if event in _ERRORS:
            event = protocol.ERROR
        data = protocol.dumps(fields)
    elif not isinstance(data, str):
        data = protocol.dumps(data)
    lines = [f"id: {channel}:{parsed['epoch']}:{parsed['offset']}"] if "epoch" in parsed else []
    lines.append("event: " + " ".join(_LINE_BREAK.split(event)))
    lines.extend("data: " + line for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def _object(data: Any) -> dict[str, Any]:
    """A protocol event's data as an object (its JSON string parsed; anything else wrapped)."""
    if isinstance(data, str):
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        if isinstance(parsed, dict):
            return parsed
    return {"data": data}


class Refused(Exception):
    """A stream refused before it starts: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: For the app's refused connections (``observers.connection_refused``), if it counts.
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A checked stream request: its app, channels, presence user and resume point."""

    app: App
    channels: tuple[str, ...]
    user_id: str | None
    #: The channel ``Last-Event-ID`` names and the position on it, if the browser sent one.
    resume: tuple[str, Position] | None

    def subscribe_frame(self, name: str, socket_id: str) -> str:
        """The ``pusher:subscribe`` this stream feeds its session for ``name``, signed as
        the app server would sign it: the session checks it like any other."""
        data: dict[str, Any] = {"channel": name}
        kind = protocol.channel_kind(name)
        if kind.authorized:
            channel_data = protocol.dumps({"user_id": self.user_id}) if kind.presence else None
            data["auth"] = channel_auth(self.app, socket_id, name, channel_data)
            if channel_data is not None:
                data["channel_data"] = channel_data
        if self.resume is not None and self.resume[0] == name:
            position = self.resume[1]
            data["resume"] = {"epoch": position.epoch, "offset": position.offset}
        return protocol.dumps({"event": protocol.SUBSCRIBE, "data": data})


def parse_last_event_id(value: str, channels: tuple[str, ...]) -> tuple[str, Position]:
    """``<channel>:<epoch>:<offset>`` (an ``id:`` this server sent), or :class:`Refused`."""
    channel, _, rest = value.partition(":")
    epoch, _, offset = rest.rpartition(":")
    if channel not in channels or not epoch or not (offset.isascii() and offset.isdigit()):
        raise Refused(400, "Last-Event-ID must be <channel>:<epoch>:<offset> of a channel "
                           "of this stream")
    return channel, Position(epoch, int(offset))


def check_request(hub: Hub, key: str, query: dict[str, str | None], origin: str | None,
                  last_event_id: str | None, now: float) -> StreamRequest:
    """The stream a request from ``origin`` (its ``Origin`` header; None without one) asks
    for, or :class:`Refused` saying what is wrong."""
    app = hub.apps.by_key(key)
    if app is None:
        raise Refused(404, f"App key {key!r} does not exist", "unknown_app")
    if not app.enabled:
        raise Refused(403, "App is disabled", "app_disabled")
    refusal = app.origin_refusal(origin)
    if refusal is not None:
        raise Refused(403, refusal.message, refusal.reason)
    listed = query.get("channels") or ""
    channels = tuple(dict.fromkeys(name for name in listed.split(",") if name))
    if not channels:
        raise Refused(400, "Name the channels: ?channels=a,b")
    if len(channels) > MAX_CHANNELS:
        raise Refused(400, f"At most {MAX_CHANNELS} channels per stream")
    kinds = []
    for name in channels:
        try:
            kinds.append(protocol.channel_kind(name))
        except MessageRejected as rejection:
            raise Refused(400, rejection.message) from None
    if any(kind.server_to_user for kind in kinds):
        raise Refused(400, "#server-to-user- channels need a signed-in WebSocket connection")
    user_id = query.get("user_id")
    if any(kind.presence for kind in kinds) and not user_id:
        raise Refused(400, "Presence channels need user_id (signed in the token)")
    if any(kind.authorized for kind in kinds) and not verify_sse_token(
            app, listed, user_id, query.get("token"), now):
        raise Refused(403, "Invalid or expired token for these channels")
    resume = parse_last_event_id(last_event_id, channels) if last_event_id else None
    return StreamRequest(app, channels, user_id, resume)


_events = FrameCache(sse_event)
_flusher = Flusher()


class ServerSentEventsHandler(tornado.web.RequestHandler):
    """One ``EventSource`` stream; the transport of its session."""

    kind = "sse"

    def initialize(self, hub: Hub, **_: object) -> None:
        self.hub = hub
        self.session: Session | None = None
        self._queued: list[bytes] | None = None
        self._backlog: Backlog = None
        self._ended = asyncio.Event()

    async def get(self, key: str) -> None:
        query = {name: self.get_query_argument(name, None)
                 for name in ("channels", "token", "user_id")}
        origin = self.request.headers.get("Origin") or None
        for name, value in cors_headers(self.hub.apps.by_key(key), origin).items():
            self.set_header(name, value)
        try:
            # The header (the browser's reconnect) is fresher than a query a page wrote
            # into the URL, say after a reload, which loses the browser's.
            last_event_id = (self.request.headers.get("Last-Event-ID")
                             or self.get_query_argument("last_event_id", None))
            stream = check_request(self.hub, key, query, origin, last_event_id, time.time())
        except Refused as refusal:
            if refusal.reason is not None:
                self.hub.observers.connection_refused(self.hub.apps.by_key(key), refusal.reason)
            self.set_status(refusal.status)
            self._finish_text(refusal.message)
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass events on as they come
        session = self.session = Session(self.hub, stream.app, self, self.request.remote_ip or "")
        session.open()
        for name in stream.channels:
            if session.is_closed:
                break
            await session.receive(stream.subscribe_frame(name, session.socket_id))
            if stream.resume is not None and stream.resume[0] != name:
                self._cannot_resume(session, name)
        # The headers (the browser's "open") go out once every channel is subscribed,
        # unless events (a catch-up, an error) went first.
        if not self._ended.is_set():
            self.flush().add_done_callback(retrieve_outcome)
        await self._ended.wait()

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """A path or query value as UTF-8, or a 400 naming what is not (Tornado's own
        would name it only in the log)."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            what = f"Query parameter {name}" if name else "The app key"
            raise tornado.web.HTTPError(400, reason=f"{what} is not valid UTF-8") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Tornado's refusals (such as the 400 above) as this handler's: a line of text
        (the reason), not an HTML page."""
        self._finish_text(self._reason)

    def _finish_text(self, message: str) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message + "\n")

    def _cannot_resume(self, session: Session, name: str) -> None:
        """``Last-Event-ID`` names one channel: another history channel cannot resume."""
        if session.app.history_retention(name) is not None:
            session.counters.resumes_failed += 1
            payload = {"reason": "not_in_last_event_id", "epoch": None, "offset": None}
            session.send(protocol.encode_event(protocol.RESUME_FAILED, payload, name))

    def on_connection_close(self) -> None:
        self._queued = None
        if self.session is not None:
            self.session.closed(_CLIENT_LEFT)
        self._ended.set()

    def on_finish(self) -> None:
        self._ended.set()

    # -- the session's transport ------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one Pusher frame as SSE text; a ping is answered here (see the module doc)."""
        if self._ended.is_set():
            return
        event = _events.frame(frame)
        if event is HEARTBEAT and self.session is not None:
            asyncio.get_running_loop().call_soon(self.session.mark_activity)
        if not event:
            return
        if self._queued is None:
            _flusher.mark(self)
            self._queued = [event]
        else:
            self._queued.append(event)

    def write_queued(self) -> None:
        """Write this iteration's events as one chunk; if that would leave more than the
        app's ``max_outbound_bytes`` unread, close the session as too slow (4100) instead."""
        queued, self._queued = self._queued, None
        session = self.session
        if not queued or self._ended.is_set() or session is None:
            return
        data = b"".join(queued)
        limit = session.app.max_outbound_bytes
        stream = self.request.connection.stream
        if limit and unsent_bytes(stream) + len(data) > limit:
            session.too_slow(f"over {limit} bytes unread")
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self.write(data)
            self.flush().add_done_callback(retrieve_outcome)
        except tornado.iostream.StreamClosedError:
            pass  # on_connection_close follows

    def close(self, code: int, reason: str) -> None:
        """End the stream after what was queued (the ``pusher:error`` saying why): these
        last bytes go past the outbound limit, bounded by one iteration's events.

        A close before anything was streamed with a code Pusher clients must not reconnect
        on (4000-4099, e.g. 4004 over the app's connection quota) is answered ``403`` with
        ``reason`` instead: an ``EventSource`` retries a stream that ended, never a 4xx."""
        queued, self._queued = self._queued, None
        if self._ended.is_set():
            return
        if not self._headers_written and _FINAL_CODES.start <= code < _FINAL_CODES.stop:
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self._write(reason.encode() + b"\n")
        elif queued:
            self._write(b"".join(queued))
        self._ended.set()

    def abort(self) -> None:
        """Drop the stream at once, writing nothing more."""
        self._queued = None
        self.request.connection.stream.close()

    def unread_for(self, now: float) -> float:
        """For how long, at least, events written have waited unread (see ``unread_time``)."""
        if self._ended.is_set():
            return 0.0
        progress = stream_write_progress(self.request.connection.stream)
        self._backlog, unread = unread_time(self._backlog, now, progress)
        return unread
