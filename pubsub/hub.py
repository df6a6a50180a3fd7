"""The hub: this process's channels, connections and users, and the broadcast path.

Every publication, whatever its origin (HTTP API, client event, presence
change), goes through the broker and comes back to :meth:`Hub.deliver`, which
encodes the Pusher frame once and hands the same bytes to each local
subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from pubsub import protocol
from pubsub.apps import App, AppRegistry
from pubsub.broker import Broker, MemoryBroker, Publication
from pubsub.cache import CachedEvent, MemoryCache
from pubsub.counts import SubscriptionCountThrottle
from pubsub.errors import ConnectionRefused, ErrorCode, SubscriptionRefused
from pubsub.presence import Member, PresenceRoster
from pubsub.protocol import ChannelKind
from pubsub.users import UserDirectory
from pubsub.webhooks import Webhooks

if TYPE_CHECKING:
    from pubsub.session import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Process-wide connection settings (per-app limits live on :class:`App`)."""

    #: Seconds of client silence before the server sends ``pusher:ping``; told to clients.
    activity_timeout: float = 120
    #: Seconds to wait for any reply to that ping before closing with 4201.
    pong_timeout: float = 30
    #: Connections this process accepts over all apps (close 4100 beyond); 0 is unlimited.
    max_connections: int = 0
    #: Inbound messages per second per connection, and the burst allowed above it.
    max_inbound_rate: float = 100
    max_inbound_burst: int = 200


class LocalChannel:
    """One channel's subscribers on this process."""

    __slots__ = ("name", "kind", "subscribers", "roster")

    def __init__(self, name: str, kind: ChannelKind) -> None:
        self.name = name
        self.kind = kind
        self.subscribers: dict[str, Session] = {}
        self.roster: PresenceRoster | None = PresenceRoster() if kind.presence else None


class AppState:
    """What this process knows of one app."""

    __slots__ = ("app", "channels", "sessions", "users")

    def __init__(self, app: App) -> None:
        self.app = app
        self.channels: dict[str, LocalChannel] = {}
        self.sessions: dict[str, Session] = {}
        self.users = UserDirectory()


class Hub:
    """Channels → local connections for every app, and the publish path.

    ``clock`` is monotonic seconds; ``node_id`` prefixes socket ids so that
    they are unique across processes.
    """

    def __init__(self, apps: AppRegistry, *, broker: Broker | None = None,
                 options: HubOptions | None = None, webhooks: Webhooks | None = None,
                 node_id: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.apps = apps
        self.options = options or HubOptions()
        self.clock = clock
        self.node_id = node_id if node_id is not None else 1 + secrets.randbelow(10**9)
        self._socket_numbers = count(1)
        self._states = {app.id: AppState(app) for app in apps}
        self._connection_count = 0
        self._cache = MemoryCache()
        self._broker = broker or MemoryBroker()
        self._broker.attach(self.deliver, self._on_control)
        self.webhooks = webhooks or Webhooks()
        self._counts = SubscriptionCountThrottle(self._announce_count, clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._activity_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Connect the broker and start the activity checks; call on the running loop."""
        await self._broker.start()
        await self.webhooks.start()
        self._activity_task = asyncio.ensure_future(self._check_activity_forever())

    async def close(self) -> None:
        """Stop background work and disconnect the broker."""
        if self._activity_task is not None:
            self._activity_task.cancel()
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        self._counts.close()
        await self.webhooks.close()
        await self._broker.close()

    def spawn(self, work: Awaitable[Any], what: str) -> None:
        """Run ``work`` in the background, logging (never raising) its failure."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def finished(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed", what, exc_info=task.exception())

        task.add_done_callback(finished)

    # -- connections -------------------------------------------------------------

    def new_socket_id(self) -> str:
        return f"{self.node_id}.{next(self._socket_numbers)}"

    def admit(self, session: Session) -> None:
        """Register a new connection, or raise :class:`ConnectionRefused` (4004, 4100)."""
        limit = self.options.max_connections
        if limit and self._connection_count >= limit:
            raise ConnectionRefused(ErrorCode.OVER_CAPACITY, "Server is over capacity: retry later")
        state = self._states[session.app.id]
        quota = session.app.max_connections
        if quota and len(state.sessions) >= quota:
            raise ConnectionRefused(ErrorCode.OVER_CONNECTION_QUOTA, "App is over its connection quota")
        state.sessions[session.socket_id] = session
        self._connection_count += 1

    def release(self, session: Session) -> None:
        """Forget a closed connection: it leaves its channels and its user signs out."""
        state = self._states[session.app.id]
        if state.sessions.pop(session.socket_id, None) is None:
            return
        self._connection_count -= 1
        # Stop deliveries now; presence and broker bookkeeping may wait on I/O.
        for name in session.channels:
            channel = state.channels.get(name)
            if channel is not None:
                channel.subscribers.pop(session.socket_id, None)
        self.spawn(self._leave_everything(session), f"cleanup of {session.socket_id}")

    async def _leave_everything(self, session: Session) -> None:
        for name, user_id in list(session.channels.items()):
            await self.unsubscribe(session, name, user_id)
        session.channels.clear()
        if session.user_id is not None:
            await self.sign_out(session)

    def close_all(self, code: int = ErrorCode.RECONNECT,
                  message: str = "Server is restarting: reconnect") -> None:
        """Close every connection, by default with 4200 so that clients reconnect at once."""
        for state in self._states.values():
            for session in list(state.sessions.values()):
                session.close(code, message)

    @property
    def connection_count(self) -> int:
        return self._connection_count

    def sessions(self, app: App) -> Iterable[Session]:
        return self._states[app.id].sessions.values()

    async def _check_activity_forever(self) -> None:
        opts = self.options
        interval = min(max(min(opts.activity_timeout, opts.pong_timeout) / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for state in self._states.values():
                for session in list(state.sessions.values()):
                    session.check_activity(now)
            self._cache.expire(now)

    # -- channels ----------------------------------------------------------------

    async def subscribe(self, session: Session, name: str, kind: ChannelKind,
                        member: Member | None = None) -> dict[str, Any] | None:
        """Add the session to a channel; for presence, return the roster snapshot.

        Raises :class:`SubscriptionRefused` when a presence channel is full.
        """
        app = session.app
        state = self._states[app.id]
        channel = state.channels.get(name)
        if member is not None and channel is not None:
            roster = channel.roster
            assert roster is not None
            if member.user_id not in roster and len(roster) >= app.max_presence_members:
                raise SubscriptionRefused(
                    f"Presence channel {name} is full ({app.max_presence_members} members)",
                    kind="LimitReached", status=403)
        if channel is None:
            channel = state.channels[name] = LocalChannel(name, kind)
            await self._broker.subscribe(app.id, name)
            # The hooks below fire on this process's transitions; with several
            # processes the broker decides which one observed the cluster's.
            self.webhooks.channel_occupied(app, name)
        channel.subscribers[session.socket_id] = session
        self._subscribers_changed(app, channel)
        if member is None:
            return None
        assert channel.roster is not None
        if channel.roster.join(member):
            self.webhooks.member_added(app, name, member.user_id)
            added = {"user_id": member.user_id, "user_info": member.user_info}
            await self._broker.publish(Publication(
                app.id, name, protocol.MEMBER_ADDED, protocol.dumps(added), exclude=session.socket_id))
        return channel.roster.snapshot()

    async def unsubscribe(self, session: Session, name: str, user_id: str | None) -> None:
        """Remove the session from a channel; ``user_id`` is its presence member, if any."""
        app = session.app
        state = self._states[app.id]
        channel = state.channels.get(name)
        if channel is None:
            return
        channel.subscribers.pop(session.socket_id, None)
        if user_id is not None and channel.roster is not None and channel.roster.leave(user_id):
            self.webhooks.member_removed(app, name, user_id)
            await self._broker.publish(Publication(
                app.id, name, protocol.MEMBER_REMOVED, protocol.dumps({"user_id": user_id})))
        if not channel.subscribers and state.channels.get(name) is channel:
            del state.channels[name]
            self.webhooks.channel_vacated(app, name)
            await self._broker.unsubscribe(app.id, name)
        self._subscribers_changed(app, channel)

    def _subscribers_changed(self, app: App, channel: LocalChannel) -> None:
        # Presence channels count users instead, through member events.
        if not channel.kind.presence:
            self._counts.changed(app, channel.name, len(channel.subscribers))

    def _announce_count(self, app: App, name: str) -> None:
        channel = self._states[app.id].channels.get(name)
        count = len(channel.subscribers) if channel is not None else 0
        self.webhooks.subscription_count(app, name, count)
        if channel is not None and app.subscription_count_events:
            self.spawn(self._broker.publish(Publication(
                app.id, name, protocol.SUBSCRIPTION_COUNT,
                protocol.dumps({"subscription_count": count}))), f"subscription count of {name}")

    def presence_snapshot(self, app: App, name: str) -> dict[str, Any]:
        channel = self._states[app.id].channels.get(name)
        roster = channel.roster if channel is not None else None
        return roster.snapshot() if roster is not None else PresenceRoster().snapshot()

    def channel_info(self, app: App, name: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count`` and, for presence, ``user_count`` of a channel."""
        channel = self._states[app.id].channels.get(name)
        count = len(channel.subscribers) if channel is not None else 0
        info: dict[str, Any] = {"occupied": count > 0, "subscription_count": count}
        if protocol.channel_kind(name).presence:
            info["user_count"] = len(channel.roster) if channel and channel.roster else 0
        return info

    def occupied_channels(self, app: App, prefix: str = "") -> dict[str, dict[str, Any]]:
        """:meth:`channel_info` of every occupied channel whose name starts with ``prefix``."""
        return {name: self.channel_info(app, name)
                for name in self._states[app.id].channels if name.startswith(prefix)}

    def presence_user_ids(self, app: App, name: str) -> list[str]:
        channel = self._states[app.id].channels.get(name)
        return channel.roster.user_ids() if channel is not None and channel.roster else []

    def terminate_user(self, app: App, user_id: str) -> None:
        """Close every connection of a signed-in user (4009: the client does not retry)."""
        for session in self._states[app.id].users.connections(user_id):
            session.close(ErrorCode.UNAUTHORIZED, "Connection terminated by the app")

    # -- publishing --------------------------------------------------------------

    async def trigger(self, app: App, channels: Iterable[str], event: str, data: str,
                      exclude: str | None = None) -> None:
        """Publish a server event (HTTP API) on each channel, in order; caches where due."""
        for name in channels:
            if protocol.channel_kind(name).cache:
                self._cache.put(app.id, name, event, data, app.cache_ttl, self.clock())
            await self._broker.publish(Publication(app.id, name, event, data, exclude))

    async def relay(self, session: Session, name: str, event: str, data: str,
                    user_id: str | None) -> None:
        """Publish a client event to everyone on the channel but its sender."""
        self.webhooks.client_event(session.app, name, event, data, session.socket_id, user_id)
        await self._broker.publish(Publication(
            session.app.id, name, event, data, exclude=session.socket_id, user_id=user_id))

    def cached_event(self, app: App, name: str) -> CachedEvent | None:
        return self._cache.get(app.id, name, self.clock())

    def cache_info(self, app: App, name: str) -> dict[str, Any] | None:
        """The cached event's ``data`` and whole seconds of ``ttl`` left, as the HTTP API shows it."""
        now = self.clock()
        cached = self._cache.get(app.id, name, now)
        if cached is None:
            return None
        return {"event": cached.event, "data": cached.data, "ttl": int(cached.expires_at - now)}

    def deliver(self, publication: Publication) -> None:
        """Write one publication to this process's subscribers: encode once, send to each."""
        state = self._states.get(publication.app_id)
        channel = state.channels.get(publication.channel) if state else None
        if channel is None:
            return
        frame = protocol.encode_frame(
            publication.event, publication.data, publication.channel, publication.user_id)
        excluded = publication.exclude
        for socket_id, session in list(channel.subscribers.items()):
            if socket_id != excluded:
                session.send(frame)

    # -- control messages ----------------------------------------------------------

    def _on_control(self, message: dict[str, Any]) -> None:
        """A control message every process receives (none are defined yet)."""
        log.warning("unknown control message %r", message.get("type"))

    # -- users -------------------------------------------------------------------

    async def sign_in(self, session: Session) -> None:
        """Register a signed-in connection; tell watchers when its user comes online."""
        assert session.user_id is not None
        users = self._states[session.app.id].users
        if users.sign_in(session, session.user_id, session.watchlist):
            self._tell_watchers(users, session.user_id, "online")
        if session.watchlist:
            online = [user for user in session.watchlist if users.is_online(user)]
            offline = [user for user in session.watchlist if not users.is_online(user)]
            events = [{"name": name, "user_ids": ids}
                      for name, ids in (("online", online), ("offline", offline)) if ids]
            session.send(protocol.encode_event(protocol.WATCHLIST_EVENTS, {"events": events}))

    async def sign_out(self, session: Session) -> None:
        assert session.user_id is not None
        users = self._states[session.app.id].users
        if users.sign_out(session, session.user_id, session.watchlist):
            self._tell_watchers(users, session.user_id, "offline")

    def _tell_watchers(self, users: UserDirectory, user_id: str, name: str) -> None:
        watchers = users.watchers(user_id)
        if watchers:
            frame = protocol.encode_event(
                protocol.WATCHLIST_EVENTS, {"events": [{"name": name, "user_ids": [user_id]}]})
            for watcher in watchers:
                watcher.send(frame)
