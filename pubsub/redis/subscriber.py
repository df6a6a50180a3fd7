"""The process's subscriber connections to Redis, kept alive across outages.

One connection per Redis node in use (one node unless Redis Cluster) carries
every pub/sub name this process wants, and one reader task per connection
hands each message on. The wanted names are the truth; the connections are
reconciled with them after each change, and rebuilt from them after a drop.

redis-py's own reconnect-and-resubscribe is switched off (see
:func:`~pubsub.redis.client.connect_subscriber`): it would hide the gap, so
nobody would re-register what Redis forgot.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import defaultdict
from typing import Awaitable, Callable

import redis.asyncio
import redis.exceptions

from .client import RedisConfig, connect_subscriber, control_channel, deadline, describe
from .link import Link, OnMessage

log = logging.getLogger(__name__)

ReconnectListener = Callable[[], Awaitable[None]]
DisconnectListener = Callable[[str], None]

_FIRST_DELAY, _MAX_DELAY = 0.05, 2.0
#: Whatever a subscriber connection can fail with; each means "reconnect".
_LINK_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)


class Subscriber:
    """Keeps this process subscribed to the names it wants, whatever Redis does.

    On a dropped connection, or a PING not answered within the heartbeat's
    timeout (a PING every min(heartbeat, 5 s), answered within
    min(that, ``config.timeout``): a stalled Redis is noticed within 8 s by
    default), it marks itself disconnected, reconnects with backoff, subscribes
    every wanted name again and then awaits each reconnect listener.
    """

    def __init__(self, config: RedisConfig, on_message: OnMessage) -> None:
        self.connected = False
        self.reconnects = 0
        self.last_error = ""
        self._config = config
        self._on_message = on_message
        self._control = control_channel(config.prefix)
        self._wanted: set[str] = {self._control}
        self._changed: set[str] = set()  # names whose wish may differ from Redis's state
        self._links: dict[str, Link] = {}  # node name → link, this connection only
        self._placed: dict[str, Link] = {}  # name → the link subscribed to it
        self._clients: dict[str, redis.asyncio.Redis] = {}  # node name → client, kept
        self._cluster: redis.asyncio.RedisCluster | None = None
        self._lock = asyncio.Lock()  # one reconciliation at a time
        self._lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reconnect_listeners: list[ReconnectListener] = []
        self._disconnect_listeners: list[DisconnectListener] = []
        self._ping_every = min(config.heartbeat_interval, 5.0)
        self._ping_timeout = min(self._ping_every, config.timeout)

    def add_reconnect_listener(self, callback: ReconnectListener) -> None:
        self._reconnect_listeners.append(callback)

    def add_disconnect_listener(self, callback: DisconnectListener) -> None:
        self._disconnect_listeners.append(callback)

    async def start(self, cluster: redis.asyncio.RedisCluster | None = None) -> None:
        """Connect and subscribe; raises what redis-py raises when Redis is unreachable.

        ``cluster``, an initialized cluster client, says which node serves which name.
        """
        self._cluster = cluster
        try:
            await self._open()
        except _LINK_ERRORS as error:
            self.last_error = describe(error)
            await self._close_links()
            raise
        self._tasks = [asyncio.create_task(self._supervise(), name="redis-supervisor"),
                       asyncio.create_task(self._heartbeat(), name="redis-heartbeat")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.connected = False
        await self._close_links()
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
        self._clients = {}

    async def subscribe(self, name: str) -> None:
        """Receive ``name`` once Redis confirms it; while disconnected, from the reconnect on."""
        self._wanted.add(name)
        self._changed.add(name)
        await self._reconcile()

    async def unsubscribe(self, name: str) -> None:
        self._wanted.discard(name)
        self._changed.add(name)
        await self._reconcile()

    async def _reconcile(self) -> None:
        if not self.connected:
            return  # the reconnect subscribes exactly what is wanted then
        try:
            await self._sync()
        except _LINK_ERRORS as error:
            if self.connected:  # otherwise the drop is being handled already
                self._link_lost(describe(error))

    async def _sync(self) -> None:
        """Subscribe the changed names now wanted, unsubscribe those no longer wanted."""
        async with self._lock:
            while self._changed:  # names may change while we wait on Redis
                changed, self._changed = self._changed, set()
                drop = [name for name in changed if name not in self._wanted and name in self._placed]
                add = [name for name in changed if name in self._wanted and name not in self._placed]
                for (link, sharded), names in self._group(drop, self._placed).items():
                    for name in names:
                        del self._placed[name]
                    await link.remove(names, sharded)
                links = {name: await self._link_for(name) for name in add}
                for (link, sharded), names in self._group(add, links).items():
                    await link.add(names, sharded, self._config.timeout)
                    self._placed.update(dict.fromkeys(names, link))

    def _group(self, names: list[str], links: dict[str, Link]) -> dict[tuple[Link, bool], list[str]]:
        """Names by link and kind: each group is one command."""
        groups: defaultdict[tuple[Link, bool], list[str]] = defaultdict(list)
        for name in names:
            sharded = self._cluster is not None and name != self._control
            groups[(links[name], sharded)].append(name)
        return groups

    async def _link_for(self, name: str) -> Link:
        """The link to the node serving ``name``, opened on first use."""
        if self._cluster is None:
            node, host, port = "redis", None, None
        else:
            found = self._cluster.get_node_from_key(name)
            node, host, port = found.name, found.host, found.port
        link = self._links.get(node)
        if link is None:
            client = self._clients.get(node)
            if client is None:
                client = self._clients[node] = connect_subscriber(self._config, host, port)
            link = self._links[node] = Link(client, self._on_message, self._link_lost)
            await link.open(self._config.timeout)
        return link

    def _link_lost(self, reason: str) -> None:
        was_connected, self.connected = self.connected, False
        self.last_error = reason
        self._lost.set()
        if not was_connected:
            return
        log.warning("Redis: subscriber connection lost (%s); reconnecting", reason)
        for listener in self._disconnect_listeners:
            try:
                listener(reason)
            except Exception:  # another module's callback must not stop the reconnect
                log.exception("Redis: a disconnect listener failed")

    async def _open(self) -> None:
        self._lost.clear()
        self._changed = set(self._wanted)  # a new connection has nothing yet
        await self._sync()
        if self._lost.is_set():  # a link broke while the others were subscribing
            raise redis.exceptions.ConnectionError(self.last_error)
        self.connected = True

    async def _close_links(self) -> None:
        for link in self._links.values():
            link.abandon()  # a reconciliation in progress fails fast and frees the lock
        async with self._lock:
            links, self._links, self._placed = list(self._links.values()), {}, {}
        await asyncio.gather(*(link.close() for link in links))

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            await self._close_links()
            await self._reconnect()
            self.reconnects += 1
            log.warning("Redis: subscriber reconnected (reconnect #%d), %d name(s) subscribed",
                        self.reconnects, len(self._wanted))
            for listener in list(self._reconnect_listeners):
                try:
                    await listener()
                except Exception:  # one failing listener must not starve the others
                    log.exception("Redis: a reconnect listener failed")

    async def _reconnect(self) -> None:
        delay = _FIRST_DELAY
        for attempt in itertools.count(1):
            await asyncio.sleep(delay)  # backoff, not synchronisation
            try:
                if self._cluster is not None:  # shards may have moved meanwhile
                    async with deadline(self._config.timeout, "cluster layout"):
                        await self._cluster.nodes_manager.initialize()
                await self._open()
                return
            except _LINK_ERRORS as error:
                self.last_error = describe(error)
                log.info("Redis: reconnect attempt %d failed: %s", attempt, self.last_error)
                await self._close_links()
                delay = min(2 * delay, _MAX_DELAY)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._ping_every)  # a period, not synchronisation
            if self.connected:
                await asyncio.gather(*(self._ping(link) for link in list(self._links.values())))

    async def _ping(self, link: Link) -> None:
        try:
            await link.ping(self._ping_timeout)
        except _LINK_ERRORS as error:
            link.fail(describe(error))
