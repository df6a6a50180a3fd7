"""The process's subscriber connections to Redis, kept alive across outages.

One connection per Redis node in use (one node unless Redis Cluster) carries
every pub/sub name this process wants that the node serves, and one reader
task per connection hands each message on. The wanted names are the truth;
the connections are reconciled with them after each change. Each node's
health is its own: when one drops, only its names wait for it to come back
(and only they are :meth:`Subscriber.unreachable`), the other connections go
on carrying theirs.

redis-py's own reconnect-and-resubscribe is switched off (see
:func:`~pubsub.redis.client.connect_subscriber`): it would hide the gap, so
nobody would re-register what Redis forgot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import defaultdict
from typing import Awaitable, Callable, NamedTuple

import redis.asyncio
import redis.exceptions

from ..errors import BrokerUnavailable
from .client import RedisConfig, connect_subscriber, control_channel, deadline, describe
from .link import Link, OnMessage

log = logging.getLogger(__name__)

ReconnectListener = Callable[[], Awaitable[None]]
DisconnectListener = Callable[[str], None]

_FIRST_DELAY, _MAX_DELAY = 0.05, 2.0
#: Whatever a subscriber connection can fail with; each means "reconnect".
_LINK_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)


class _Node(NamedTuple):
    """A Redis node as the subscriber connects to it (host and port None: the configured one)."""

    name: str
    host: str | None
    port: int | None


class Subscriber:
    """Keeps this process subscribed to the names it wants, whatever Redis does.

    A node whose connection drops, or does not answer a PING within the
    heartbeat's timeout (a PING every min(heartbeat, 5 s), answered within
    min(that, ``config.timeout``): a stalled node is noticed within 8 s by
    default), is marked down: disconnect listeners hear of it, and its names
    are :meth:`unreachable` until the supervisor has reconnected it with
    backoff (after refreshing the cluster layout: its slots may have moved)
    and subscribed them again. Names on other nodes are not touched. Once no
    node is down, every reconnect listener is awaited.
    """

    def __init__(self, config: RedisConfig, on_message: OnMessage) -> None:
        self.reconnects = 0
        self._started = False
        self._config = config
        self._on_message = on_message
        self._control = control_channel(config.prefix)
        self._wanted: set[str] = {self._control}
        self._changed: set[str] = set()  # names whose wish may differ from Redis's state
        self._links: dict[str, Link] = {}  # node name → its live link
        self._placed: dict[str, Link] = {}  # name → the link subscribed to it
        self._down: dict[str, tuple[_Node, str]] = {}  # node name → (node, why it is down)
        self._clients: dict[str, redis.asyncio.Redis] = {}  # node name → client, kept
        self._cluster: redis.asyncio.RedisCluster | None = None
        self._lock = asyncio.Lock()  # one reconciliation at a time
        self._lost = asyncio.Event()  # a node went down: the supervisor has work
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()  # dropped links being closed
        self._reconnect_listeners: list[ReconnectListener] = []
        self._disconnect_listeners: list[DisconnectListener] = []
        self._ping_every = min(config.heartbeat_interval, 5.0)
        self._ping_timeout = min(self._ping_every, config.timeout)

    @property
    def connected(self) -> bool:
        """Whether every node in use is reachable (False before :meth:`start`)."""
        return self._started and not self._down

    @property
    def nodes_down(self) -> list[str]:
        """The nodes known to be down, by name (on Redis Cluster, ``host:port``)."""
        return sorted(self._down)

    @property
    def nodes_up(self) -> int:
        """How many nodes this process has a live link to."""
        return len(self._links)

    def unreachable(self, name: str) -> str | None:
        """Why ``name`` cannot be published now (its node is down), or None.

        Cheap when no node is down: publishes check it every time.
        """
        if not self._started:
            return "Redis is unreachable: not connected"
        if not self._down:
            return None
        try:
            node = self._node_of(name)
        except _LINK_ERRORS as error:  # a slot no node serves
            return f"Redis is unreachable: {describe(error)}"
        if node.name not in self._down:
            return None
        reason = self._down[node.name][1]
        if self._cluster is None:
            return f"Redis is unreachable: {reason}"
        return f"Redis node {node.name}, which serves this channel, is unreachable: {reason}"

    def node_for(self, name: str) -> str:
        """The name of the node that carries ``name`` (on Redis Cluster, ``host:port``)."""
        return self._node_of(name).name

    def add_reconnect_listener(self, callback: ReconnectListener) -> None:
        self._reconnect_listeners.append(callback)

    def add_disconnect_listener(self, callback: DisconnectListener) -> None:
        self._disconnect_listeners.append(callback)

    async def start(self, cluster: redis.asyncio.RedisCluster | None = None) -> None:
        """Connect and subscribe; raises what redis-py raises when Redis is unreachable.

        ``cluster``, an initialized cluster client, says which node serves which name.
        """
        self._cluster = cluster
        self._changed = set(self._wanted)
        try:
            await self._sync()
        except _LINK_ERRORS:
            await self._close_links()
            raise
        if self._down:
            reason = next(iter(self._down.values()))[1]
            await self._close_links()
            raise redis.exceptions.ConnectionError(reason)
        self._started = True
        self._tasks = [asyncio.create_task(self._supervise(), name="redis-supervisor"),
                       asyncio.create_task(self._heartbeat(), name="redis-heartbeat")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._started = False
        await self._close_links()
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
        self._clients = {}

    async def subscribe(self, name: str) -> None:
        """Receive ``name`` once Redis confirms it; while its node is down, from its return on."""
        self._wanted.add(name)
        self._changed.add(name)
        await self._reconcile()

    async def unsubscribe(self, name: str) -> None:
        self._wanted.discard(name)
        self._changed.add(name)
        await self._reconcile()

    async def _reconcile(self) -> None:
        if self._started:  # before, start() subscribes exactly what is wanted then
            await self._sync()

    async def _sync(self) -> None:
        """Subscribe the changed names now wanted, unsubscribe those no longer wanted.

        A name whose node is down waits for the supervisor; a node that fails
        here is marked down and the other nodes' names are synced all the same.
        """
        async with self._lock:
            while self._changed:  # names may change while we wait on Redis
                changed, self._changed = self._changed, set()
                drop = [name for name in changed if name not in self._wanted and name in self._placed]
                for (link, sharded), names in self._group(drop).items():
                    for name in names:
                        del self._placed[name]
                    try:
                        await link.remove(names, sharded)
                    except _LINK_ERRORS as error:
                        link.fail(describe(error))
                add: defaultdict[_Node, list[str]] = defaultdict(list)
                for name in changed:
                    if name in self._wanted and name not in self._placed:
                        try:
                            node = self._node_of(name)
                        except _LINK_ERRORS as error:  # a slot no node serves: the layout moves
                            log.info("Redis: no node for %r yet: %s", name, describe(error))
                            self._lost.set()  # the supervisor refreshes the layout and retries
                            continue
                        if node.name not in self._down:
                            add[node].append(name)
                for node, names in add.items():
                    await self._place(node, names)

    def _group(self, names: list[str]) -> dict[tuple[Link, bool], list[str]]:
        """Placed names by link and kind: each group is one command."""
        groups: defaultdict[tuple[Link, bool], list[str]] = defaultdict(list)
        for name in names:
            groups[(self._placed[name], self._sharded(name))].append(name)
        return groups

    def _sharded(self, name: str) -> bool:
        return self._cluster is not None and name != self._control

    async def _place(self, node: _Node, names: list[str]) -> None:
        """Subscribe ``names`` on ``node``'s link, opened first if need be; on failure
        the node is marked down and the names wait for its return."""
        try:
            link = await self._link_for(node)
            for sharded in (False, True):
                group = [name for name in names if self._sharded(name) == sharded]
                if group:
                    await link.add(group, sharded, self._config.timeout)
                    self._placed.update(dict.fromkeys(group, link))
        except _LINK_ERRORS as error:
            self._node_lost(node, describe(error))

    def _node_of(self, name: str) -> _Node:
        """The node whose link carries ``name``.

        In a cluster, a channel's name goes to the node serving its slot (its
        sharded messages exist only there). Plain PUBLISH reaches subscribers
        on every node, so the control channel goes to its slot's node unless
        that is down, and then to any node that is not.
        """
        if self._cluster is None:
            return _Node("redis", None, None)
        found = self._cluster.get_node_from_key(name)
        if name == self._control and found.name in self._down:
            found = next((node for node in self._cluster.get_primaries()
                          if node.name not in self._down), found)
        return _Node(found.name, found.host, found.port)

    async def _link_for(self, node: _Node) -> Link:
        """The link to ``node``, opened on first use."""
        link = self._links.get(node.name)
        if link is None:
            link = self._links[node.name] = self._new_link(node)
            await link.open(self._config.timeout)
        return link

    def _new_link(self, node: _Node) -> Link:
        client = self._clients.get(node.name)
        if client is None:
            client = self._clients[node.name] = connect_subscriber(self._config, node.host, node.port)
        link: Link = Link(client, self._on_message, lambda reason: self._link_lost(node, link, reason))
        return link

    def _link_lost(self, node: _Node, link: Link, reason: str) -> None:
        if self._links.get(node.name) is link:  # not a link already replaced
            self._node_lost(node, reason)

    def _node_lost(self, node: _Node, reason: str) -> None:
        """Mark ``node`` down: its link is dropped and its names wait for the supervisor."""
        link = self._links.pop(node.name, None)
        if link is not None:
            link.abandon()  # a wait on it fails fast and frees the lock
            self._placed = {name: placed for name, placed in self._placed.items() if placed is not link}
            self._close_later(link)
        first = node.name not in self._down
        self._down[node.name] = (node, reason)
        self._lost.set()
        if not (first and self._started):
            return
        log.warning("Redis: subscriber connection lost (%s) to %s: its channels are unreachable "
                    "until it is back; reconnecting", reason, node.name)
        for listener in self._disconnect_listeners:
            try:
                listener(reason)
            except Exception:  # another module's callback must not stop the reconnect
                log.exception("Redis: a disconnect listener failed")

    def _close_later(self, link: Link) -> None:
        task = asyncio.ensure_future(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_links(self) -> None:
        for link in self._links.values():
            link.abandon()  # a reconciliation in progress fails fast and frees the lock
        async with self._lock:
            links, self._links, self._placed, self._down = list(self._links.values()), {}, {}, {}
        await asyncio.gather(*(link.close() for link in links), *self._closing)

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            await self._recover()
            self.reconnects += 1
            log.warning("Redis: subscriber reconnected (reconnect #%d), %d name(s) subscribed: "
                        "every node is back", self.reconnects, len(self._wanted))
            await self._tell_reconnected()

    async def _tell_reconnected(self) -> None:
        """Await every reconnect listener; one that finds Redis unreachable still (a
        cluster settling) is tried again with backoff, until it succeeds or a node
        is lost again (the next reconnect tells every listener anew)."""
        pending, delay = list(self._reconnect_listeners), _FIRST_DELAY
        while pending and not self._lost.is_set():
            failed = []
            for listener in pending:
                try:
                    await listener()
                except BrokerUnavailable as outage:
                    log.warning("Redis: after the reconnect, %s failed: %s; trying again",
                                getattr(listener, "__qualname__", listener), outage.message)
                    failed.append(listener)
                except Exception:  # one failing listener must not starve the others
                    log.exception("Redis: a reconnect listener failed")
            pending = failed
            if pending:
                await asyncio.sleep(delay)  # backoff, not synchronisation
                delay = min(2 * delay, _MAX_DELAY)

    async def _recover(self) -> None:
        """Reconnect every down node and subscribe what waits, with backoff, until none is down."""
        delay = _FIRST_DELAY
        for attempt in itertools.count(1):
            await asyncio.sleep(delay)  # backoff, not synchronisation
            self._lost.clear()
            try:
                await self._refresh_layout()
            except _LINK_ERRORS as error:  # the old layout may do: try the nodes anyway
                log.info("Redis: cluster layout not refreshed: %s", describe(error))
            for node, _ in list(self._down.values()):
                try:
                    await self._reopen(node)
                except _LINK_ERRORS as error:
                    log.info("Redis: reconnect attempt %d to %s failed: %s",
                             attempt, node.name, describe(error))
            self._changed |= self._wanted - self._placed.keys()
            await self._sync()
            if not (self._down or self._lost.is_set() or self._wanted - self._placed.keys()):
                return
            delay = min(2 * delay, _MAX_DELAY)

    async def _refresh_layout(self) -> None:
        """Learn where the slots are now; forget down nodes a failover replaced
        (their names map to the new masters)."""
        if self._cluster is None:
            return
        async with deadline(self._config.timeout, "cluster layout"):
            await self._cluster.nodes_manager.initialize()
        serving = {node.name for node in self._cluster.get_primaries()}
        for name in [name for name in self._down if name not in serving]:
            del self._down[name]

    async def _reopen(self, node: _Node) -> None:
        """Connect to a down node and subscribe the names waiting for it; only then is
        it up, so this process publishes there only once it hears the answers.

        The connection is made outside the lock: a node that does not answer
        must not hold up subscribes to the others.
        """
        link = self._new_link(node)
        try:
            await link.open(self._config.timeout)
            await self._check_serving(node)
        except _LINK_ERRORS:
            await link.close()
            raise
        async with self._lock:
            self._links[node.name] = link
            await self._place(node, self._waiting_for(node))
            if self._links.get(node.name) is link:  # not lost again meanwhile
                self._down.pop(node.name, None)

    def _waiting_for(self, node: _Node) -> list[str]:
        """The wanted names that ``node`` serves and no link carries."""
        waiting = []
        for name in self._wanted - self._placed.keys():
            with contextlib.suppress(*_LINK_ERRORS):  # no node for it yet: the next round
                if self._node_of(name).name == node.name:
                    waiting.append(name)
        return waiting

    async def _check_serving(self, node: _Node) -> None:
        """On Redis Cluster, raise unless ``node`` says the cluster is ok: a master
        that has just restarted answers PING (and SSUBSCRIBE) before it serves
        commands again, and the reconnect listeners need its commands."""
        if self._cluster is None:
            return
        async with deadline(self._config.timeout, "answer to CLUSTER INFO"):
            info = await self._clients[node.name].execute_command("CLUSTER", "INFO")
        text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            raise redis.exceptions.ConnectionError(f"{node.name} does not serve its slots yet")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._ping_every)  # a period, not synchronisation
            await asyncio.gather(*(self._ping(link) for link in list(self._links.values())))

    async def _ping(self, link: Link) -> None:
        try:
            await link.ping(self._ping_timeout)
        except _LINK_ERRORS as error:
            link.fail(describe(error))
