"""State shared by every process of a deployment: who is subscribed where, who is online.

The hub keeps its own connections; what spans processes (subscription and
presence counts per channel, each user's connections, cache channels' last
events) lives behind :class:`ClusterState`. :class:`MemoryState` is the
embedded default; the Redis state implements the same interface so that
every HTTP API answer and every webhook is cluster-wide.

Every transition method answers whether it changed something cluster-wide
(first subscriber, last member...), so that exactly one process, the one
that caused it, sends the webhook or watchlist notice. The presence events
themselves (``member_added``, ``member_removed``) are part of the transition:
:meth:`ClusterState.join` and :meth:`ClusterState.leave` publish them, so that
every process receives a user's events in the order the cluster state changed.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

from .broker import Publication
from .cache import MemoryCache
from .presence import Member, PresenceRoster, member_added, member_removed


@dataclass(frozen=True, slots=True)
class Arrival:
    """What one subscription changed cluster-wide."""

    occupied: bool  # the channel's first subscriber anywhere
    member_added: bool = False  # presence: the user's first connection on the channel


@dataclass(frozen=True, slots=True)
class Departure:
    """What one unsubscription changed cluster-wide."""

    vacated: bool  # the channel's last subscriber anywhere
    removed_user: str | None = None  # presence: the user whose last connection this was


@dataclass(frozen=True, slots=True)
class Orphan:
    """A subscription or sign-in left behind by a process that died, now removed."""

    app_id: str
    channel: str | None = None  # with ``departure``: a subscription
    departure: Departure | None = None
    offline_user: str | None = None  # a sign-in whose user is now offline


class CacheEntry(NamedTuple):
    """A cache channel's last event and the seconds it has left."""

    event: str
    data: str
    ttl: float


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscriptions: int
    users: int = 0


class ClusterState(ABC):
    """The shared bookkeeping; every method may raise BrokerUnavailable."""

    #: The longest wait between two :meth:`reap` calls; None when no process can die unseen.
    reap_interval: float | None = None
    #: Set by the hub: called when this process's registrations were lost, so
    #: that it registers its connections again.
    on_registration_lost: Callable[[], Awaitable[None]] | None = None
    #: Set by the hub: the broker's publish, for a state whose transitions cannot
    #: publish their presence events themselves (the memory state, in one process).
    publish: Callable[[Publication], Awaitable[None]] | None = None

    async def start(self) -> int:
        """Register this process; return its node id (unique in the deployment)."""
        return 1

    async def close(self) -> None:
        """Deregister this process and release connections."""

    @abstractmethod
    async def join(self, app_id: str, channel: str, socket_id: str,
                   member: Member | None = None, *, announce: bool = True) -> Arrival:
        """Count a subscription (idempotent per socket_id).

        When it adds ``member``'s user to the channel cluster-wide, ``member_added``
        goes to everyone on the channel but ``socket_id``, on every process, in
        the order of the channel's transitions; ``announce=False`` sends nothing
        (re-registering after Redis lost its data: nothing changed for clients).
        """

    @abstractmethod
    async def leave(self, app_id: str, channel: str, socket_id: str, *, again: bool = False,
                    user_id: str | None = None) -> Departure:
        """Forget a subscription (idempotent per socket_id).

        When it removes a user's last connection on the channel, ``member_removed``
        goes to everyone on the channel, in the order of the transitions, as in :meth:`join`.

        ``again`` says that an earlier call for this subscription got no answer (Redis
        may have carried it out): if the subscription is gone, the departure is read from
        the channel as it is now, vacated if nobody is on it, and ``user_id`` (the
        subscription's presence user) removed if that user has no connection on it.
        That announces what the unanswered call would have; no event is published again.
        """

    @abstractmethod
    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        """A presence channel's members: user_id → user_info."""

    @abstractmethod
    async def counts(self, app_id: str, channel: str) -> ChannelCounts:
        """Subscriptions and, for presence, distinct users of one channel."""

    @abstractmethod
    async def channels(self, app_id: str, prefix: str = "") -> dict[str, ChannelCounts]:
        """Every occupied channel of the app whose name starts with ``prefix``."""

    @abstractmethod
    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """Count a signed-in connection; True if the user just came online."""

    @abstractmethod
    async def sign_out(self, app_id: str, user_id: str, socket_id: str, *,
                       again: bool = False) -> bool:
        """Forget a signed-in connection; True if the user just went offline.

        ``again``, as in :meth:`leave`: if the connection is gone already, True if
        the user has no signed-in connection now."""

    @abstractmethod
    async def online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        """Which of ``user_ids`` have a signed-in connection anywhere."""

    @abstractmethod
    async def cache_put(self, app_id: str, channel: str, event: str, data: str,
                        ttl: float) -> None:
        """Keep a cache channel's last event for ``ttl`` seconds."""

    @abstractmethod
    async def cache_get(self, app_id: str, channel: str) -> CacheEntry | None:
        """The cached event, if it has not expired."""

    @abstractmethod
    async def put_node(self, node_id: int, record: dict[str, Any], ttl: float) -> None:
        """Keep this process's node record (JSON-able, for the admin console) for ``ttl``
        seconds, replacing its previous one."""

    @abstractmethod
    async def nodes(self) -> dict[int, dict[str, Any]]:
        """Every node record that has not expired, by node id."""

    async def until_reap(self) -> float:
        """Seconds until :meth:`reap` may find a dead process, at most :attr:`reap_interval`."""
        return self.reap_interval or 0.0

    async def reap(self) -> list[Orphan]:
        """Remove what dead processes left behind, announcing the ``member_removed``
        it causes as :meth:`leave` does; what that changed."""
        return []

    async def was_reaped(self) -> bool:
        """True once after survivors reaped this process (it was paused or cut off)."""
        return False


@dataclass
class _Channel:
    sockets: set[str] = field(default_factory=set)
    roster: PresenceRoster = field(default_factory=PresenceRoster)
    member_of: dict[str, str] = field(default_factory=dict)  # socket_id → user_id


class MemoryState(ClusterState):
    """One process: the state is this process's own view.

    A transition and its presence event are one step: nothing is awaited between
    them (the memory broker delivers at once), so no other transition comes between.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._users: dict[tuple[str, str], set[str]] = {}
        self._cache = MemoryCache()
        self._nodes: dict[int, tuple[float, dict[str, Any]]] = {}  # node → (expires, record)

    async def join(self, app_id: str, channel: str, socket_id: str,
                   member: Member | None = None, *, announce: bool = True) -> Arrival:
        entry = self._channels.setdefault((app_id, channel), _Channel())
        if socket_id in entry.sockets:
            return Arrival(False)
        entry.sockets.add(socket_id)
        added = False
        if member is not None:
            entry.member_of[socket_id] = member.user_id
            added = entry.roster.join(member)
            if added and announce and self.publish is not None:
                await self.publish(member_added(app_id, channel, member, socket_id))
        return Arrival(len(entry.sockets) == 1, added)

    async def leave(self, app_id: str, channel: str, socket_id: str, *, again: bool = False,
                    user_id: str | None = None) -> Departure:
        entry = self._channels.get((app_id, channel))
        if entry is None or socket_id not in entry.sockets:
            if not again:
                return Departure(False)
            present = entry is not None and user_id is not None and user_id in entry.roster
            return Departure(entry is None, None if present else user_id)
        entry.sockets.discard(socket_id)
        user_id = entry.member_of.pop(socket_id, None)
        removed = user_id if user_id is not None and entry.roster.leave(user_id) else None
        if not entry.sockets:
            del self._channels[(app_id, channel)]
        if removed is not None and self.publish is not None:
            await self.publish(member_removed(app_id, channel, removed))
        return Departure(not entry.sockets, removed)

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        entry = self._channels.get((app_id, channel))
        return entry.roster.members() if entry is not None else {}

    async def counts(self, app_id: str, channel: str) -> ChannelCounts:
        entry = self._channels.get((app_id, channel))
        return ChannelCounts(len(entry.sockets), len(entry.roster)) if entry else ChannelCounts(0)

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, ChannelCounts]:
        return {name: ChannelCounts(len(entry.sockets), len(entry.roster))
                for (owner, name), entry in self._channels.items()
                if owner == app_id and name.startswith(prefix)}

    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users.setdefault((app_id, user_id), set())
        first = not sockets
        sockets.add(socket_id)
        return first

    async def sign_out(self, app_id: str, user_id: str, socket_id: str, *,
                       again: bool = False) -> bool:
        sockets = self._users.get((app_id, user_id))
        if not sockets or socket_id not in sockets:
            return again and not sockets
        sockets.discard(socket_id)
        if sockets:
            return False
        del self._users[(app_id, user_id)]
        return True

    async def online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        return {user_id for user_id in user_ids if (app_id, user_id) in self._users}

    async def cache_put(self, app_id: str, channel: str, event: str, data: str,
                        ttl: float) -> None:
        now = self._clock()
        self._cache.expire(now)
        self._cache.put(app_id, channel, event, data, ttl, now)

    async def cache_get(self, app_id: str, channel: str) -> CacheEntry | None:
        now = self._clock()
        cached = self._cache.get(app_id, channel, now)
        return CacheEntry(cached.event, cached.data, cached.expires_at - now) if cached else None

    async def put_node(self, node_id: int, record: dict[str, Any], ttl: float) -> None:
        self._nodes[node_id] = (self._clock() + ttl, record)

    async def nodes(self) -> dict[int, dict[str, Any]]:
        now = self._clock()
        for node_id in [n for n, (expires, _) in self._nodes.items() if expires <= now]:
            del self._nodes[node_id]
        return {node_id: record for node_id, (_, record) in self._nodes.items()}
