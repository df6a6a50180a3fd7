"""One client connection speaking Pusher protocol 7, whatever carries its frames.

A transport (the WebSocket handler, later SSE or HTTP fallbacks) creates a
:class:`Session`, feeds it each inbound message with :meth:`Session.receive`
and calls :meth:`Session.closed` when the connection ends. The session turns
messages into hub calls and writes replies through the transport.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Protocol

from . import logjson, protocol, text
from .apps import App
from .errors import (BrokerUnavailable, ConnectionRefused, ErrorCode,
                           MessageRejected, SubscriptionRefused)
from .hub import Hub
from .observe import CLOSED_ABNORMALLY
from .presence import Member
from .protocol import ClientFrame
from .ratelimit import TokenBucket
from .signing import verify_channel_auth, verify_user_auth
from .streams import ALREADY_SUBSCRIBED, NO_HISTORY, Position

log = logging.getLogger(__name__)

_PONG = protocol.encode_event(protocol.PONG, {})
_PING = protocol.encode_event(protocol.PING, {})
#: One float for every session that has not been told it floods (a float is 24 bytes).
_NEVER = float("-inf")
#: The ``frames_received`` kind of each protocol event (client events: ``client_event``).
_FRAME_KINDS = {protocol.PING: "ping", protocol.PONG: "pong", protocol.SUBSCRIBE: "subscribe",
                protocol.UNSUBSCRIBE: "unsubscribe", protocol.SIGNIN: "signin"}


class Transport(Protocol):
    """What a session needs from the connection that carries it."""

    #: The transport's name in metrics' ``transport`` label: "ws", "xhr_streaming",
    #: "xhr_polling", "sse".
    kind: str

    def send(self, frame: bytes) -> None:
        """Queue one encoded text frame; drop it silently if the connection is closed."""

    def close(self, code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code, after the frames already sent.

        Never held to an outbound limit: it is how a client over one is closed."""

    def unread_for(self, now: float) -> float:
        """For how long, at least, frames sent have waited unread by the client (0: none wait)."""


class Session:
    """Protocol state of one connection: its channels, its user, its limits."""

    __slots__ = ("hub", "app", "counters", "transport", "remote_ip", "socket_id", "channels",
                 "user_id", "watchlist",
                 "opened_at", "last_activity", "ping_sent_at", "is_closed",
                 "_client_events", "_inbound", "_flood_reported_at")

    def __init__(self, hub: Hub, app: App, transport: Transport, remote_ip: str = "") -> None:
        now = hub.clock()
        self.hub = hub
        self.app = app
        #: The app's counters on this process (frames, bytes, limits hit).
        self.counters = hub.counters(app)
        self.transport = transport
        #: The client's address (behind a proxy, as the proxy reported it).
        self.remote_ip = remote_ip
        self.socket_id = hub.new_socket_id()
        #: Subscribed channels, each with this connection's presence member (or None).
        self.channels: dict[str, Member | None] = {}
        self.user_id: str | None = None
        self.watchlist: tuple[str, ...] = ()
        self.opened_at = now
        self.last_activity = now
        self.ping_sent_at: float | None = None
        self.is_closed = False
        #: Made at the first client event: most connections never send one.
        self._client_events: TokenBucket | None = None
        options = hub.options
        self._inbound = TokenBucket(options.max_inbound_rate, options.max_inbound_burst, now)
        self._flood_reported_at = _NEVER

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Admit the connection and greet it, or close it with the refusal's code."""
        try:
            self.hub.admit(self)
        except ConnectionRefused as refusal:
            self.hub.observers.connection_refused(self.app, refusal.reason)
            self.close(refusal.code, refusal.message)
            return
        established = {"socket_id": self.socket_id,
                       "activity_timeout": self.hub.options.activity_timeout}
        self.send(protocol.encode_event(protocol.CONNECTION_ESTABLISHED, established))
        self.hub.observers.connection_opened(self)

    def closed(self, code: int = CLOSED_ABNORMALLY) -> None:
        """The transport ended with close ``code``: leave every channel and sign out."""
        if not self.is_closed:
            self.is_closed = True
            self.hub.release(self, code)

    def send(self, frame: bytes) -> None:
        """Queue a frame to the client, counted in the app's ``sent_bytes``."""
        self.counters.sent_bytes += len(frame)
        self.deliver(frame)

    def deliver(self, frame: bytes) -> None:
        """Queue a channel's frame, uncounted: the broadcast counts its frames in bulk
        (``LocalChannel.send``), so that it costs each socket nothing more."""
        if not self.is_closed:
            self.transport.send(frame)

    def send_error(self, code: int | None, message: str, channel: str | None = None) -> None:
        """Send ``pusher:error``; never raises, whatever ``message`` and ``channel`` hold."""
        self.send(protocol.encode_error(code, message, channel))

    def close(self, code: int, message: str) -> None:
        """Tell the client why with ``pusher:error``, then close with the same code; once."""
        if self.is_closed:
            return
        self.send_error(code, message)
        self.transport.close(code, message)
        self.closed(code)

    def too_slow(self, why: str) -> None:
        """The client does not read what it is sent: drop it (4100) before it costs the others.

        Counted in the app's ``slow_consumers`` once: a closed session is not closed again."""
        if self.is_closed:
            return
        self.counters.slow_consumers += 1
        log.info("closing %s as a slow consumer: %s", self.socket_id, why)
        self.close(ErrorCode.OVER_CAPACITY, "Slow consumer: messages were not read fast enough")

    def check_activity(self, now: float) -> None:
        """Ping an idle client, close one that did not answer (4201), did not sign in (4009) or
        has left what it was sent unread longer than ``max_outbound_delay`` (4100)."""
        delay = self.hub.options.max_outbound_delay
        if self.transport.unread_for(now) >= delay:
            self.too_slow(f"bytes unread for over {delay:g} s")
            return
        timeout = self.app.user_authentication_timeout
        if timeout and self.user_id is None and now - self.opened_at >= timeout:
            self.close(ErrorCode.UNAUTHORIZED, f"Sign in within {timeout:g} s of connecting")
            return
        options = self.hub.options
        if self.ping_sent_at is None:
            if now - self.last_activity >= options.activity_timeout:
                self.send(_PING)
                self.ping_sent_at = now
        elif now - self.ping_sent_at >= options.pong_timeout:
            self.close(ErrorCode.PONG_TIMEOUT, "Pong reply not received in time")

    def mark_activity(self) -> None:
        """Any frame from the client, a WebSocket ping or pong included, shows it is alive."""
        self.last_activity = self.hub.clock()
        self.ping_sent_at = None

    # -- inbound -----------------------------------------------------------------

    async def receive(self, message: str | bytes) -> None:
        """Handle one inbound message. Never raises: refusals go back to the client, and
        a bug costs that message one error reply (which cannot fail: see
        :func:`protocol.encode_error`), never the connection. Lines logged meanwhile
        name the app and socket (:mod:`logjson`)."""
        self.mark_activity()
        # Tornado hands text messages over decoded; nearly all are ASCII, whose length
        # is their size, so only the others pay for an encode.
        self.counters.received_bytes += (len(message) if isinstance(message, bytes)
                                         or message.isascii() else len(message.encode()))
        if not self._inbound.take(self.last_activity):
            self.counters.inbound_limited += 1
            self._report_flood()
            return
        about = logjson.about(app=self.app.id, socket_id=self.socket_id)
        try:
            await self._handle(message)
        except Exception:
            log.exception("bug while handling a message from %s", self.socket_id)
            self.send_error(ErrorCode.INVALID_MESSAGE, "Internal error handling this message")
        finally:
            logjson.restore(about)

    async def _handle(self, message: str | bytes) -> None:
        """Parse and dispatch one message, answering each refusal as the protocol says."""
        channel = None
        try:
            try:
                frame = protocol.parse_client_frame(message)
            except MessageRejected:
                self.counters.frames["invalid"] += 1
                raise
            channel = frame.channel
            await self._dispatch(frame)
        except MessageRejected as rejection:
            self.send_error(rejection.code, rejection.message, channel)
        except ConnectionRefused as refusal:
            self.close(refusal.code, refusal.message)
        except BrokerUnavailable as outage:
            # The connection stays: the client may retry once the broker is back.
            self.send_error(ErrorCode.OVER_CAPACITY, f"Temporarily unavailable: {outage.message}",
                            channel)

    def _report_flood(self) -> None:
        # One error a second at most, so a flood cannot turn into an outbound flood.
        if self.last_activity - self._flood_reported_at >= 1:
            self._flood_reported_at = self.last_activity
            rate = self.hub.options.max_inbound_rate
            self.send_error(ErrorCode.CLIENT_EVENT_REJECTED,
                            f"Too many messages: more than {rate:g} per second are dropped")

    async def _dispatch(self, frame: ClientFrame) -> None:
        frames = self.counters.frames
        handler = self._HANDLERS.get(frame.event)
        if handler is not None:
            frames[_FRAME_KINDS[frame.event]] += 1
            await handler(self, frame)
        elif frame.event.startswith(protocol.CLIENT_EVENT_PREFIX):
            frames["client_event"] += 1
            await self._on_client_event(frame)
        else:
            frames["invalid"] += 1
            raise MessageRejected(f"Unknown event {frame.event!r}")

    async def _on_ping(self, frame: ClientFrame) -> None:
        self.send(_PONG)

    async def _on_pong(self, frame: ClientFrame) -> None:
        pass  # receive() already counted it as activity

    async def _on_subscribe(self, frame: ClientFrame) -> None:
        data = frame.data_object()
        name = data.get("channel")
        if not isinstance(name, str):
            raise MessageRejected("pusher:subscribe needs a 'channel' string")
        try:
            await self._subscribe(name, data)
        except SubscriptionRefused as refusal:
            self._send_subscription_error(name, refusal.kind, refusal.message, refusal.status)
        except BrokerUnavailable as outage:
            self._send_subscription_error(name, "ServiceUnavailable", outage.message, 503)

    def _send_subscription_error(self, name: str, kind: str, message: str, status: int) -> None:
        # Logged like a refused API request, so that an operator sees a wrong auth
        # endpoint secret; an invalid name (the client's, any length) is cut short.
        log.info("subscription refused (%d): %.300s", status, message,
                 extra={"channel": name[:protocol.MAX_CHANNEL_NAME_LENGTH]})
        payload = {"type": kind, "error": message, "status": status}
        self.send(protocol.encode_event(protocol.SUBSCRIPTION_ERROR, payload, name))
        self.hub.observers.subscription_refused(self, name, status)

    async def _subscribe(self, name: str, data: dict[str, Any]) -> None:
        try:
            kind = protocol.channel_kind(name)
        except MessageRejected as rejection:
            raise SubscriptionRefused(rejection.message, kind="InvalidChannel", status=400) from None
        resume = Position.parse(data["resume"]) if "resume" in data else None
        if name in self.channels:  # a repeated subscribe is answered, not joined twice
            snapshot = await self.hub.presence_snapshot(self.app, name) if kind.presence else None
            self._send_subscription_succeeded(name, snapshot)
            self._refuse_resume(name, resume, ALREADY_SUBSCRIBED)
            return
        member = self._authorize(name, kind, data)
        snapshot = await self.hub.subscribe(self, name, kind, member)
        self.channels[name] = member
        try:
            await self._welcome(name, kind, snapshot, resume)
        except Exception:
            # The hub has it: take it back, so that no member or subscriber is left behind.
            if name in self.channels:
                await self.hub.unsubscribe(self, name, self.channels.pop(name))
            raise

    async def _welcome(self, name: str, kind: protocol.ChannelKind,
                       snapshot: dict[str, Any] | None, resume: Position | None) -> None:
        """Answer a subscription the hub recorded; undo it if the session closed meanwhile."""
        if self.is_closed:  # closed while the hub was busy: undo
            await self.hub.unsubscribe(self, name, self.channels.pop(name))
            return
        start = self.hub.joining_position(self, name)
        self._send_subscription_succeeded(name, snapshot, start)
        if start is not None:
            await self.hub.catch_up(self, name, resume)
        else:
            self._refuse_resume(name, resume, NO_HISTORY)
        if kind.cache:
            await self._replay_cache(name)

    def _refuse_resume(self, name: str, resume: Position | None, reason: str) -> None:
        if resume is not None:
            self.counters.resumes_failed += 1
            payload = {"reason": reason, "epoch": None, "offset": None}
            self.send(protocol.encode_event(protocol.RESUME_FAILED, payload, name))

    def _authorize(self, name: str, kind: protocol.ChannelKind, data: dict[str, Any]) -> Member | None:
        """Check the subscription's right to the channel; the presence member, if any."""
        if kind.server_to_user:
            if self.user_id != name[len(protocol.SERVER_TO_USER_PREFIX):]:
                raise SubscriptionRefused(f"{name} is only for that user, signed in", status=403)
            return None
        if not kind.authorized:
            return None
        channel_data = data.get("channel_data") if kind.presence else None
        if kind.presence and not isinstance(channel_data, str):
            raise SubscriptionRefused("Presence subscriptions need channel_data (a JSON string)",
                                      status=400)
        if not verify_channel_auth(self.app, self.socket_id, name, data.get("auth"), channel_data):
            raise SubscriptionRefused(f"Invalid signature for {name}: check the auth endpoint's "
                                      "key and secret", status=401)
        return parse_member(self.app, channel_data) if kind.presence else None

    def _send_subscription_succeeded(self, name: str, snapshot: dict[str, Any] | None,
                                     start: Position | None = None) -> None:
        """``start`` (history channels): the position live messages follow."""
        payload = protocol.dumps({"presence": snapshot} if snapshot is not None else {})
        self.send(protocol.encode_frame(protocol.SUBSCRIPTION_SUCCEEDED, payload, name,
                                        epoch=start.epoch if start else None,
                                        offset=start.offset if start else None))

    async def _replay_cache(self, name: str) -> None:
        cached = await self.hub.cached_event(self.app, name)
        frame = None
        if cached is not None:
            try:
                frame = protocol.encode_frame(cached.event, cached.data, name)
            except UnicodeEncodeError:  # cached before the edge refused such text: a miss
                log.warning("cached event on %s holds text UTF-8 cannot carry", name)
        if frame is None:
            self.send(protocol.encode_frame(protocol.CACHE_MISS, channel=name))
            self.hub.webhooks.cache_miss(self.app, name)
        else:
            self.send(frame)

    async def _on_unsubscribe(self, frame: ClientFrame) -> None:
        name = frame.data_object().get("channel")
        if not isinstance(name, str):
            raise MessageRejected("pusher:unsubscribe needs a 'channel' string")
        if name in self.channels:
            await self.hub.unsubscribe(self, name, self.channels.pop(name))

    async def _on_signin(self, frame: ClientFrame) -> None:
        data = frame.data_object()
        user_data = data.get("user_data")
        if not isinstance(user_data, str) or not verify_user_auth(
                self.app, self.socket_id, user_data, data.get("auth")):
            raise ConnectionRefused(ErrorCode.UNAUTHORIZED,
                                    "Invalid sign-in: user_data and auth do not match")
        user_id, watchlist = parse_user(self.app, user_data)
        if self.user_id is not None and self.user_id != user_id:
            raise MessageRejected(f"Already signed in as {self.user_id!r}")
        self.send(protocol.encode_event(protocol.SIGNIN_SUCCESS, {"user_data": user_data}))
        if self.user_id is None:
            self.user_id, self.watchlist = user_id, watchlist
            self.counters.signins += 1
            await self.hub.users.sign_in(self)

    async def _on_client_event(self, frame: ClientFrame) -> None:
        app = self.app
        name = frame.channel

        def rejected(reason: str) -> MessageRejected:
            return MessageRejected(f"Client event rejected: {reason}", ErrorCode.CLIENT_EVENT_REJECTED)

        if not app.client_events:
            raise rejected("client events are disabled for this app")
        if name is None or name not in self.channels:
            raise rejected("subscribe to the channel first")
        if not protocol.channel_kind(name).allows_client_events:
            raise rejected("only private and presence channels (not encrypted ones) take them")
        if len(frame.event) > app.max_event_name_length:
            raise rejected(f"event name over {app.max_event_name_length} characters")
        if not self._take_client_event():
            self.counters.client_events_limited += 1
            raise rejected(f"rate limit of {app.client_event_rate:g} per second exceeded")
        data = protocol.data_string(frame.data)
        if len(data.encode()) > app.max_event_bytes:
            raise rejected(f"data over {app.max_event_bytes} bytes")
        member = self.channels[name]
        await self.hub.relay(self, name, frame.event, data, member.user_id if member else None)

    def _take_client_event(self) -> bool:
        # A bucket made now is as full as one made at open: it never holds more than its burst.
        if self._client_events is None:
            app = self.app
            self._client_events = TokenBucket(app.client_event_rate, app.client_event_burst,
                                              self.last_activity)
        return self._client_events.take(self.last_activity)

    _HANDLERS: dict[str, Callable[[Session, ClientFrame], Awaitable[None]]] = {
        protocol.PING: _on_ping,
        protocol.PONG: _on_pong,
        protocol.SUBSCRIBE: _on_subscribe,
        protocol.UNSUBSCRIBE: _on_unsubscribe,
        protocol.SIGNIN: _on_signin,
    }


def parse_member(app: App, channel_data: str) -> Member:
    """The presence member a signed ``channel_data`` names, or :class:`SubscriptionRefused`."""
    try:
        parsed = text.loads(channel_data)
    except text.InvalidText as error:
        raise SubscriptionRefused(f"channel_data must be a JSON object: {error.message}",
                                  status=400) from None
    if not isinstance(parsed, dict):
        raise SubscriptionRefused("channel_data must be a JSON object", status=400)
    user_id = parsed.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not 0 < len(user_id) <= app.max_user_id_length:
        raise SubscriptionRefused(
            f"channel_data needs a user_id of 1 to {app.max_user_id_length} characters",
            status=400)
    user_info = parsed.get("user_info")
    if len(protocol.dumps(user_info).encode()) > app.max_presence_user_info_bytes:
        raise SubscriptionRefused(
            f"user_info is over {app.max_presence_user_info_bytes} bytes",
            kind="LimitReached", status=413)
    return Member(user_id, user_info)


def parse_user(app: App, user_data: str) -> tuple[str, tuple[str, ...]]:
    """The user id and watchlist of a signed ``user_data``, or :class:`ConnectionRefused`."""
    try:
        user = text.loads(user_data)
    except text.InvalidText as error:
        raise ConnectionRefused(ErrorCode.UNAUTHORIZED,
                                f"user_data must be a JSON object: {error.message}") from None
    user_id = user.get("id") if isinstance(user, dict) else None
    if not protocol.is_valid_name(user_id, app.max_user_id_length):
        raise ConnectionRefused(ErrorCode.UNAUTHORIZED,
                                "user_data needs an 'id' string of valid characters")
    watchlist = user.get("watchlist", [])
    if (not isinstance(watchlist, list) or len(watchlist) > app.max_watchlist_size
            or not all(protocol.is_valid_name(w, app.max_user_id_length) for w in watchlist)):
        raise ConnectionRefused(ErrorCode.UNAUTHORIZED,
                                f"watchlist must list at most {app.max_watchlist_size} user ids")
    return user_id, tuple(dict.fromkeys(watchlist))
