"""The hub: this process's channels, connections and users, and the broadcast path.

Every publication, whatever its origin (HTTP API, client event, presence
change), goes through the broker and comes back to :meth:`Hub.deliver`, which
encodes the Pusher frame once and hands the same bytes to each local
subscriber. On a history channel the origin first appends the publication to
the history store, which gives it its offset, and each process delivers in
offset order (see :mod:`.history_channels`). What spans processes (counts,
presence, online users, cache) is asked of the :class:`~pubsub.state.ClusterState`,
whose presence transitions publish their own member events (in the cluster's
order); the process whose call changed it cluster-wide sends the webhook
(see :mod:`.announcements`), so each goes out once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Iterator

from . import protocol
from .announcements import Announcer
from .apps import App, AppChanges, AppRegistry
from .broker import Broker, MemoryBroker, Publication
from .channels import LocalChannel
from .control import ControlDispatcher
from .counters import AppCounters
from .errors import BrokerUnavailable, ConnectionRefused, ErrorCode, SubscriptionRefused
from .history import HistoryStore
from .history.memory import MemoryHistoryStore
from .history_channels import HistoryChannels
from .observe import CLOSED_ABNORMALLY, SOURCE_CLIENT_EVENT, SOURCE_SERVER, Observers
from .presence import Member
from .protocol import ChannelKind
from .queries import ChannelQueries
from .state import CacheEntry, ClusterState, MemoryState
from .streams import Position
from .timing import PublishTimer
from .users import Users
from .writes import StateWrites
from .webhooks import Webhooks

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)
#: Connections handed at once to :class:`StateWrites` when re-registering after Redis lost
#: its data (which paces what is really in flight): a batch, not all, so that the
#: writes owed meanwhile by connections that close are not queued behind every one.
REGISTER_BATCH = 64


@dataclass(frozen=True, slots=True)
class HubOptions:
    """Process-wide connection settings (per-app limits live on :class:`App`)."""

    #: Seconds of client silence before the server sends ``pusher:ping``; told to clients.
    activity_timeout: float = 120
    #: Seconds to wait for any reply to that ping before closing with 4201.
    pong_timeout: float = 30
    #: Connections this process accepts over all apps (close 4100 beyond); 0 is unlimited.
    max_connections: int = 0
    #: Connections this process accepts from one client address (close 4004 beyond); 0 is unlimited.
    max_connections_per_ip: int = 0
    #: Inbound messages per second per connection, and the burst allowed above it.
    max_inbound_rate: float = 100
    max_inbound_burst: int = 200
    #: Seconds bytes written to a connection may wait unread in this process's buffer (the
    #: kernel's being full) before it is closed 4100 as a slow consumer, however few they
    #: are. It is closed between this and 1.5 times this (this + 10 s at most) after the
    #: first byte began to wait; ``App.max_outbound_bytes`` bounds the bytes meanwhile.
    max_outbound_delay: float = 10


class AppState:
    """What this process holds of one app."""

    __slots__ = ("app", "channels", "sessions", "counters")

    def __init__(self, app: App) -> None:
        self.app = app
        self.channels: dict[str, LocalChannel] = {}
        self.sessions: dict[str, Session] = {}
        self.counters = AppCounters()


class Hub:
    """Channels → local connections for every app, and the publish path.

    It delegates what history channels do differently to
    :class:`HistoryChannels`, the events and webhooks of cluster-wide changes
    to :class:`Announcer`, signed-in users to :class:`Users`, and the HTTP
    API's channel queries to :attr:`queries`.

    ``clock`` is monotonic seconds. Socket ids are ``{node_id}.{n}``, unique
    across processes because the cluster state hands out node ids.
    """

    def __init__(self, apps: AppRegistry, *, broker: Broker | None = None,
                 state: ClusterState | None = None, options: HubOptions | None = None,
                 webhooks: Webhooks | None = None, history: HistoryStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.apps = apps
        self.options = options or HubOptions()
        self.clock = clock
        self.node_id = 0
        self._socket_numbers = count(1)
        self._states = {app.id: AppState(app) for app in apps}
        self._connection_count = 0
        self._connections_per_ip: dict[str, int] = {}
        #: Set by :meth:`drain`: closing down, with departures held for a grace window.
        self.draining = False
        #: Set by :meth:`close`: publishes are refused (503), the broker being gone.
        self.closed = False
        self._drain_grace = 0.0
        #: Told what happens here (connections, subscriptions, publishes, webhooks):
        #: metrics and the debug console add themselves (see :mod:`.observe`).
        self.observers = Observers()
        #: Set by metrics: times each publication's way through this process (None: untimed).
        self.timer: PublishTimer | None = None
        self._broker = broker or MemoryBroker()
        self.state = state or MemoryState(clock)
        self.state.publish = self._broker.publish
        self.users = Users(apps, self._broker, self.state)
        #: The HTTP API's channel queries (cluster-wide).
        self.queries = ChannelQueries(self.state)
        #: Control messages every process receives, to the handler of their type.
        self.control = ControlDispatcher()
        self.users.register_control(self.control)
        self._broker.attach(self.deliver, self.control)
        self.webhooks = webhooks or Webhooks()
        self.webhooks.cluster = self.state
        self.webhooks.observers = self.observers
        self.history = history or MemoryHistoryStore()
        self._history_channels = HistoryChannels(self.history, self._broker)
        #: Whether the broker, the cluster state and the history store all live in this
        #: process (the embedded default): a publish then waits on no I/O, and needs no
        #: task of its own (the HTTP front runs it in its callback). Read per publish.
        self.in_process = (isinstance(self._broker, MemoryBroker)
                           and isinstance(self.state, MemoryState)
                           and isinstance(self.history, MemoryHistoryStore))
        self._announcer = Announcer(apps, self._broker, self.state, self.webhooks, self.users,
                                    self.spawn, clock)
        self._tasks: set[asyncio.Task[Any]] = set()
        #: The registration after Redis lost its data, while it runs (see register_again).
        self._registering: asyncio.Future[None] | None = None
        #: Leaves, sign-outs and registrations owed to the cluster state, paced and retried.
        self._writes = StateWrites()
        #: Socket id → channels it left (or failed to join) whose leave Redis has not
        #: answered yet (see _owe_leave).
        self._owed_leaves: dict[str, set[str]] = {}
        self._periodic: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster and start background work; call on the running loop."""
        self.state.on_registration_lost = self.register_again
        self.node_id = await self.state.start()
        await self._broker.start()
        await self.history.start()
        await self.webhooks.start()
        self._periodic.append(asyncio.ensure_future(self._check_activity_forever()))
        if self.state.reap_interval is not None:
            self._periodic.append(asyncio.ensure_future(self._announcer.reap_forever()))

    async def close(self) -> None:
        """Stop background work and leave the cluster; later publishes are refused."""
        self.closed = True
        self._writes.close()
        for task in self._periodic:
            task.cancel()
        if self._registering is not None:
            self._registering.cancel()
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)
        self._announcer.close()
        for channel in self._local_channels():
            if channel.stream is not None:
                channel.stream.close()
        await self.webhooks.close()
        await self.history.close()
        await self._broker.close()
        await self.state.close()

    def spawn(self, work: Awaitable[Any], what: str) -> None:
        """Run ``work`` in the background, logging (never raising) its failure."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def finished(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            error = None if task.cancelled() else task.exception()
            if isinstance(error, BrokerUnavailable):  # expected while Redis is away
                log.warning("%s failed: %s", what, error.message)
            elif error is not None:
                log.error("%s failed", what, exc_info=error)

        task.add_done_callback(finished)

    # -- connections -------------------------------------------------------------

    def new_socket_id(self) -> str:
        return f"{self.node_id}.{next(self._socket_numbers)}"

    def admit(self, session: Session) -> None:
        """Register a new connection, or raise :class:`ConnectionRefused` (4004, 4100)."""
        limit = self.options.max_connections
        if limit and self._connection_count >= limit:
            raise ConnectionRefused(ErrorCode.OVER_CAPACITY, "Server is over capacity: retry later",
                                    "over_capacity")
        if self.draining:
            raise ConnectionRefused(ErrorCode.RECONNECT, "Server is restarting: reconnect",
                                    "draining")
        state = self._states[session.app.id]
        quota = session.app.max_connections
        if quota and len(state.sessions) >= quota:
            raise ConnectionRefused(ErrorCode.OVER_CONNECTION_QUOTA,
                                    "App is over its connection quota", "over_quota")
        per_ip = self.options.max_connections_per_ip
        from_ip = self._connections_per_ip.get(session.remote_ip, 0)
        if per_ip and from_ip >= per_ip:
            raise ConnectionRefused(ErrorCode.OVER_CONNECTION_QUOTA,
                                    f"Too many connections from {session.remote_ip}",
                                    "too_many_from_ip")
        state.sessions[session.socket_id] = session
        self._connections_per_ip[session.remote_ip] = from_ip + 1
        self._connection_count += 1

    def release(self, session: Session, code: int = CLOSED_ABNORMALLY) -> None:
        """Forget a connection closed with ``code``: it leaves its channels and its user
        signs out. A connection that was never admitted is not told to observers."""
        state = self._states[session.app.id]
        if state.sessions.pop(session.socket_id, None) is None:
            return
        self.observers.connection_closed(session, code)
        self._connection_count -= 1
        remaining = self._connections_per_ip.pop(session.remote_ip) - 1
        if remaining:
            self._connections_per_ip[session.remote_ip] = remaining
        # Stop deliveries now; the shared bookkeeping may wait on I/O.
        for name in session.channels:
            channel = state.channels.get(name)
            if channel is not None:
                channel.remove(session.socket_id)
        # While draining, the client is reconnecting to another process: keep its
        # presence here a little, so that others see it stay rather than leave and rejoin.
        delay = self._drain_grace if self.draining else 0
        self.spawn(self._leave_everything(session, delay), f"cleanup of {session.socket_id}")

    async def _leave_everything(self, session: Session, delay: float) -> None:
        """A closed connection's leaves and sign-out, each until the cluster state has it
        (:class:`StateWrites`: a crowd closing at once is paced, not timed out)."""
        if delay:
            await asyncio.sleep(delay)
        app = session.app
        for name, member in list(session.channels.items()):
            self.observers.unsubscribed(session, name)
            channel = self._states[app.id].channels.get(name)
            await self._writes.run(functools.partial(
                self._record_leave, app, name, session.socket_id, channel, member))
        session.channels.clear()
        if session.user_id is not None:
            await self._writes.run(functools.partial(self.users.sign_out, session))

    async def register_again(self) -> None:
        """Put this process's connections back into the cluster state.

        After Redis lost its data nothing changed for clients, so it is done
        silently. But if survivors reaped this process (it was paused or cut
        off for longer than the deadline), its members were announced as gone:
        its clients are closed with 4200 instead, and rejoin with due events.

        The heartbeat and the broker's reconnect both ask after a restart: a
        call while a registration runs waits for that one instead of doing the
        work again. Connections Redis does not answer for in time are tried
        again until they are recorded or the hub closes; left out, they would
        stay uncounted until Redis next lost its data.
        """
        if self._registering is None or self._registering.done():
            self._registering = asyncio.ensure_future(self._register_everything())
        await asyncio.shield(self._registering)

    async def _register_everything(self) -> None:
        if await self.state.was_reaped():
            log.warning("this process was reaped while out of touch: reconnecting its clients")
            self.close_all(ErrorCode.RECONNECT, "Server lost touch with the cluster: reconnect")
            return
        registered = 0
        for sessions in _batches(self._all_sessions(), REGISTER_BATCH):
            registered += await self._register_batch(sessions)
        log.info("registered %d subscription(s) again", registered)

    async def _register_batch(self, sessions: list[Session]) -> int:
        """Register ``sessions``, each until the cluster state has it; their subscriptions.

        A session closed meanwhile is skipped, also on a retry: its leave has been (or
        will be) recorded. Registering twice records nothing twice (the join scripts
        check first).
        """
        async def register(session: Session, again: bool) -> int:
            # Idempotent: a registration Redis carried out unanswered adds nothing twice.
            return 0 if session.is_closed else await self._register(session)

        counts = await asyncio.gather(*(self._writes.run(functools.partial(register, session))
                                        for session in sessions))
        return sum(counts)

    async def _register(self, session: Session) -> int:
        """One connection's subscriptions and sign-in, back into the cluster state."""
        channels = list(session.channels.items())
        await asyncio.gather(*(self.state.join(session.app.id, name, session.socket_id, member,
                                               announce=False)
                               for name, member in channels))
        if session.user_id is not None:
            await self.state.sign_in(session.app.id, session.user_id, session.socket_id)
        return len(channels)

    def drain(self, grace: float) -> None:
        """Refuse new connections and close every client with 4200 (reconnect at once).

        Their departures wait ``grace`` seconds: a user who reconnects to
        another process within it is never seen to leave. :meth:`close`
        waits for them.
        """
        self.draining = True
        self._drain_grace = grace
        self.close_all(ErrorCode.RECONNECT, "Server is restarting: reconnect")

    def close_all(self, code: int = ErrorCode.RECONNECT,
                  message: str = "Server is restarting: reconnect") -> None:
        """Close every connection, by default with 4200 so that clients reconnect at once."""
        for session in self._all_sessions():
            session.close(code, message)

    def reload_apps(self, apps: Iterable[App]) -> AppChanges:
        """Serve ``apps`` from now on, without a restart.

        New apps are served at once; new requests and connections of a changed app get
        its new options (a connection keeps the version it was admitted with); the
        connections of a removed app are closed with 4001, those of an app now disabled
        with 4003. Raises ``ValueError`` (a duplicate id or key) with nothing changed.
        """
        changes = self.apps.replace(apps)
        for app in (*changes.added, *changes.changed):
            state = self._states.get(app.id)
            if state is None:
                self._states[app.id] = AppState(app)
                self.users.add_app(app)
            else:
                state.app = app
        for app in changes.removed:
            self._close_app(app, ErrorCode.NO_SUCH_APP, f"App key {app.key} does not exist")
        for app in changes.changed:
            if not app.enabled:
                self._close_app(app, ErrorCode.APP_DISABLED, "App is disabled")
        return changes

    def _close_app(self, app: App, code: int, message: str) -> None:
        # A removed app's state stays: its connections still unregister from it as they close.
        for session in list(self._states[app.id].sessions.values()):
            session.close(code, message)

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send a control message to every process, this one included (to :attr:`control`)."""
        await self._broker.broadcast(message)

    def local_counts(self, app: App) -> tuple[int, int, int]:
        """The app's connections, channels and subscriptions on this process."""
        state = self._states[app.id]
        channels = state.channels.values()
        return len(state.sessions), len(channels), sum(channel.size for channel in channels)

    @property
    def connection_count(self) -> int:
        return self._connection_count

    @property
    def slow_consumers(self) -> int:
        """Connections closed because they did not read what they were sent, over all apps."""
        return sum(state.counters.slow_consumers for state in self._states.values())

    @property
    def messages_sent(self) -> int:
        """Channel-event frames handed to this process's connections, ever, over all apps."""
        return sum(state.counters.deliveries for state in self._states.values())

    def health(self) -> dict[str, Any]:
        """This process's connections and its link to the other processes.

        ``status`` is ``ok``, ``partial`` (Redis Cluster with some masters down:
        only their channels fail, the same on every process, so a load
        balancer gains nothing by taking this one out) or ``degraded``.
        """
        broker = self._broker.status()
        return {"status": _health_status(broker), "node": self.node_id,
                "connections": self._connection_count, "draining": self.draining,
                "slow_consumers": self.slow_consumers, "messages_sent": self.messages_sent,
                "broker": broker}

    def sessions(self, app: App) -> Iterable[Session]:
        """The app's connections on this process."""
        return self._states[app.id].sessions.values()

    def app_states(self) -> Iterable[AppState]:
        """What this process holds of each app (for metrics, read at scrape time)."""
        return self._states.values()

    def counters(self, app: App) -> AppCounters:
        """The app's counters on this process."""
        return self._states[app.id].counters

    def broker_status(self) -> dict[str, Any]:
        """The broker's ``status()``: ``connected`` and ``reconnects`` among it."""
        return self._broker.status()

    def _all_sessions(self) -> list[Session]:
        """Every app's connections on this process, copied: the caller may close them."""
        return [session for state in self._states.values() for session in state.sessions.values()]

    async def _check_activity_forever(self) -> None:
        opts = self.options
        # A quarter of the shortest bound apart (5 s at most): a bound passed is noticed
        # one check later, or two for max_outbound_delay (see PusherSocketHandler.unread_for).
        shortest = min(opts.activity_timeout, opts.pong_timeout, opts.max_outbound_delay)
        interval = min(max(shortest / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for session in self._all_sessions():
                session.check_activity(now)

    # -- channels ----------------------------------------------------------------

    async def subscribe(self, session: Session, name: str, kind: ChannelKind,
                        member: Member | None = None) -> dict[str, Any] | None:
        """Add the session to a channel; for presence, return the roster snapshot.

        Raises :class:`SubscriptionRefused` when a presence channel is full.
        """
        app = session.app
        if session.socket_id in self._owed_leaves:
            # A join now could be recorded before an owed leave of the channel, which would
            # undo it; and refusing every join meanwhile bounds what one connection owes.
            raise BrokerUnavailable("an earlier leave of this connection is not recorded yet")
        if member is not None:
            await self._check_room(app, name, member)
        channel = await self._local_channel(app, name, kind)
        try:
            arrival = await self.state.join(app.id, name, session.socket_id, member)
        except BrokerUnavailable:
            # Redis may have carried the join out unanswered: take it back once it answers.
            self._owe_leave(app, name, session.socket_id, member)
            await self._drop_if_empty(app, channel)
            raise
        channel.add(session)
        self.observers.subscribed(session, name)
        try:
            self._announcer.arrived(app, channel, arrival, member)
            return await self.presence_snapshot(app, name) if member is not None else None
        except Exception:
            await self.unsubscribe(session, name, member)  # recorded: take it back, then refuse
            raise

    async def _check_room(self, app: App, name: str, member: Member) -> None:
        members = await self.state.members(app.id, name)
        if member.user_id not in members and len(members) >= app.max_presence_members:
            raise SubscriptionRefused(
                f"Presence channel {name} is full ({app.max_presence_members} members)",
                kind="LimitReached", status=403)

    async def _local_channel(self, app: App, name: str, kind: ChannelKind) -> LocalChannel:
        """This process's entry for the channel, subscribed at the broker before it is used."""
        channels = self._states[app.id].channels
        channel = channels.get(name)
        if channel is None:
            channel = channels[name] = LocalChannel(name, kind,
                                                    self._states[app.id].counters)
            subscribed = False
            try:
                await self._broker.subscribe(app.id, name)
                subscribed = True
                await self._history_channels.open_stream(
                    app, channel, send=functools.partial(self._broadcast, channel))
            except Exception as error:
                del channels[name]
                channel.ready.set_exception(error)
                channel.ready.exception()  # retrieved: the waiters below re-raise it
                if subscribed:
                    await self._broker.unsubscribe(app.id, name)
                raise
            channel.ready.set_result(None)
        else:
            await asyncio.shield(channel.ready)
        return channel

    async def catch_up(self, session: Session, name: str, resume: Position | None) -> None:
        """Make a session joining a history channel live, after sending it what it
        missed since ``resume`` and ``resume_succeeded`` (or ``resume_failed``)."""
        channel = self._states[session.app.id].channels.get(name)
        if channel is not None:
            await self._history_channels.catch_up(session, channel, resume)

    def joining_position(self, session: Session, name: str) -> Position | None:
        """Where a session joining a history channel starts; None on other channels."""
        channel = self._states[session.app.id].channels.get(name)
        joiner = channel.joining.get(session.socket_id) if channel is not None else None
        return joiner.start if joiner is not None else None

    async def resync_history(self) -> None:
        """After a broker reconnect: deliver what pub/sub dropped meanwhile, from the store."""
        for channel in self._local_channels():
            if channel.stream is not None:
                channel.stream.resync()

    def _local_channels(self) -> Iterable[LocalChannel]:
        """Every app's channels on this process."""
        for state in self._states.values():
            yield from state.channels.values()

    async def unsubscribe(self, session: Session, name: str, member: Member | None = None) -> None:
        """Remove the session from a channel (and from its presence members, ``member``).

        Never raises :class:`BrokerUnavailable`: a leave Redis does not answer is owed,
        retried in the background (:meth:`_owe_leave`)."""
        app = session.app
        channel = self._states[app.id].channels.get(name)
        if channel is not None:
            channel.remove(session.socket_id)
        self.observers.unsubscribed(session, name)
        try:
            await self._record_leave(app, name, session.socket_id, channel, member)
        except BrokerUnavailable:
            if channel is not None:
                await self._left_locally(app, channel)
            self._owe_leave(app, name, session.socket_id, member)

    def _owe_leave(self, app: App, name: str, socket_id: str, member: Member | None) -> None:
        """Record a leave (or undo a join) that Redis did not answer, though it may have
        carried it out: retried until Redis answers, each time ``again``, so that what
        it did is still announced. Until then the connection joins nothing: each can owe at
        most a leave per channel it was on, plus one join."""
        owed = self._owed_leaves.setdefault(socket_id, set())
        owed.add(name)

        async def leave() -> None:
            try:
                await self._writes.run(lambda _: self._record_leave(
                    app, name, socket_id, None, member, again=True))
            finally:
                owed.discard(name)
                if not owed and self._owed_leaves.get(socket_id) is owed:
                    del self._owed_leaves[socket_id]

        self.spawn(leave(), f"leave of {name} by {socket_id}")

    async def _record_leave(self, app: App, name: str, socket_id: str,
                            channel: LocalChannel | None, member: Member | None = None,
                            again: bool = False) -> None:
        """The cluster-wide side of leaving a channel (``channel``: its local subscribers,
        if any; ``member``: the presence member it was). Idempotent: run again, it records
        nothing twice; ``again`` (a retry of one Redis did not answer) announces what the
        first attempt would have if Redis carried it out (see ClusterState.leave)."""
        departure = await self.state.leave(app.id, name, socket_id, again=again,
                                           user_id=member.user_id if member else None)
        self._announcer.departed(app, name, departure)
        if channel is not None:
            await self._left_locally(app, channel)

    async def _left_locally(self, app: App, channel: LocalChannel) -> None:
        """A subscriber left ``channel`` here: drop it if nobody is left, count it."""
        await self._drop_if_empty(app, channel)
        self._announcer.subscribers_changed(app, channel)

    async def _drop_if_empty(self, app: App, channel: LocalChannel) -> None:
        """Stop receiving a channel that has no local subscriber left."""
        channels = self._states[app.id].channels
        if not channel.size and channels.get(channel.name) is channel:
            del channels[channel.name]
            if channel.stream is not None:
                channel.stream.close()
            await self._broker.unsubscribe(app.id, channel.name)

    async def presence_snapshot(self, app: App, name: str) -> dict[str, Any]:
        """The ``presence`` object of ``subscription_succeeded``."""
        members = await self.state.members(app.id, name)
        return {"ids": list(members), "hash": members, "count": len(members)}

    # -- publishing --------------------------------------------------------------

    async def trigger(self, app: App, channels: Iterable[str], event: str, data: str,
                      exclude: str | None = None, *, source: str = SOURCE_SERVER) -> None:
        """Publish a server event on each channel, in order; caches where due.

        ``source`` says where it came from, for observers (``observe.SOURCE_*``).

        Raises :class:`BrokerUnavailable` once the hub is closed (a keep-alive
        connection may still publish during a drain): the SDK retries elsewhere.
        """
        self._check_open()
        accepted = time.time()
        for name in channels:
            if protocol.channel_kind(name).cache:
                await self.state.cache_put(app.id, name, event, data, app.cache_ttl)
            await self._publish(app, Publication(app.id, name, event, data, exclude,
                                                 origin_time=accepted), source)

    async def relay(self, session: Session, name: str, event: str, data: str,
                    user_id: str | None) -> None:
        """Publish a client event to everyone on the channel but its sender."""
        self.webhooks.client_event(session.app, name, event, data, session.socket_id, user_id)
        await self._publish(session.app, Publication(
            session.app.id, name, event, data, exclude=session.socket_id, user_id=user_id,
            origin_time=time.time()), SOURCE_CLIENT_EVENT)

    def _check_open(self) -> None:
        if self.closed:
            raise BrokerUnavailable("the server is shutting down: nothing was published")

    async def _publish(self, app: App, publication: Publication, source: str) -> None:
        """Hand a publication to the broker; on a history channel, store it first,
        which gives it its offset. Observers hear of it once the broker took it."""
        self._check_open()
        stamped = await self._history_channels.stamp(app, publication)
        counters = self._states[app.id].counters
        if stamped.offset is not None:
            counters.history_appends += 1
        await self._broker.publish(stamped)
        counters.publications[source] += 1
        self.observers.published(app, stamped, source)

    async def cached_event(self, app: App, name: str) -> CacheEntry | None:
        return await self.state.cache_get(app.id, name)

    def deliver(self, publication: Publication) -> None:
        """A publication from the broker for this process's subscribers; on a history
        channel it goes through the stream, which delivers in offset order."""
        state = self._states.get(publication.app_id)
        channel = state.channels.get(publication.channel) if state else None
        if channel is None:
            return
        timer = self.timer
        if timer is not None and publication.origin_time is not None:
            timer.received(publication.origin_time)
        if channel.stream is not None and publication.offset is not None:
            channel.stream.receive(publication)
        else:
            self._broadcast(channel, publication)

    def _broadcast(self, channel: LocalChannel, publication: Publication) -> None:
        timer = self.timer
        if timer is None:
            channel.send(publication)
        else:
            timer.fan_out(channel, publication)


def _health_status(broker: dict[str, Any]) -> str:
    if broker["connected"]:
        return "ok"
    return "partial" if broker.get("nodes_up") else "degraded"


def _batches(items: list[Session], size: int) -> Iterator[list[Session]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
