"""The Redis broker: publications and control messages between processes.

Each Pusher channel has its own Redis pub/sub name, subscribed only while a
local socket listens to it, so a process reads just the traffic it delivers.
Every publication comes back through the subscription, the publisher's own
included: Redis then gives every process the same order.

Wire format (compact JSON; app id and channel are in the pub/sub name):
    publication       ``[event, data, exclude, user_id]``, and ``epoch, offset`` after
                      them on a history channel (older processes read the four alone),
                      and then ``origin_time`` (seconds, the origin's wall clock) when
                      there is one (``epoch, offset`` null off history channels);
                      presence events are published in the four-field format by the
                      cluster state's Lua transitions (:mod:`.state`), not by this module
    control message   a JSON object
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import redis.asyncio
import redis.exceptions

from ..broker import Broker, Publication
from ..errors import BrokerUnavailable
from .client import (
    UNREACHABLE, RedisConfig, connect, control_channel, deadline, describe, pubsub_channel,
)
from .subscriber import DisconnectListener, ReconnectListener, Subscriber

log = logging.getLogger(__name__)


class RedisBroker(Broker):
    """Redis pub/sub between processes; sharded pub/sub on Redis Cluster.

    ``connected`` is False from a detected outage until the subscriber is back.
    An outage is a node's: on Redis Cluster one master down leaves the
    others' channels publishing and delivering. Meanwhile :meth:`publish`
    (and :meth:`broadcast` when no node is left for it) raise at once for
    the channels that node serves (:meth:`unreachable`), and :meth:`subscribe`
    to one of them only records the wish, fulfilled when the node is back.
    """

    def __init__(self, config: RedisConfig) -> None:
        super().__init__()
        self.config = config
        self._control_name = control_channel(config.prefix)
        self._channels: dict[str, tuple[str, str]] = {}  # pub/sub name → (app id, channel)
        self._subscriber = Subscriber(config, self._receive)
        self._client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None

    def status(self) -> dict[str, Any]:
        """``connected``: every node in use is up. On Redis Cluster also ``nodes_down``
        (``host:port`` of each master known to be down) and ``nodes_up`` (masters
        this process reads from): with both, only the down masters' channels fail."""
        status = {"kind": "redis", "connected": self.connected, "reconnects": self.reconnects}
        if self.config.cluster:
            status.update(nodes_down=self._subscriber.nodes_down,
                          nodes_up=self._subscriber.nodes_up)
        return status

    @property
    def connected(self) -> bool:
        return self._subscriber.connected

    def unreachable(self, app_id: str, channel: str) -> str | None:
        return self._subscriber.unreachable(pubsub_channel(self.config.prefix, app_id, channel))

    @property
    def reconnects(self) -> int:
        """How many times the subscriber connection was lost and made again."""
        return self._subscriber.reconnects

    def add_reconnect_listener(self, callback: ReconnectListener) -> None:
        """Await ``callback()`` after each reconnect, once every channel is subscribed again."""
        self._subscriber.add_reconnect_listener(callback)

    def add_disconnect_listener(self, callback: DisconnectListener) -> None:
        """Call ``callback(reason)`` when an outage is detected."""
        self._subscriber.add_disconnect_listener(callback)

    async def start(self) -> None:
        """Connect and subscribe the control channel; BrokerUnavailable if Redis is unreachable."""
        self._client = connect(self.config)
        try:
            if isinstance(self._client, redis.asyncio.RedisCluster):
                async with deadline(self.config.timeout, "cluster layout"):
                    await self._client.initialize()
                await self._subscriber.start(self._client)
            else:
                await self._subscriber.start()
        except (*UNREACHABLE, redis.exceptions.RedisError) as error:  # e.g. a wrong password
            await self.close()
            raise BrokerUnavailable(f"Redis is unreachable: {describe(error)}") from error

    async def close(self) -> None:
        await self._subscriber.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, publication: Publication) -> None:
        name = pubsub_channel(self.config.prefix, publication.app_id, publication.channel)
        await self._send(name, encode_publication(publication), sharded=self.config.cluster)

    async def broadcast(self, message: dict[str, Any]) -> None:
        # Plain PUBLISH reaches subscribers on every node, in a cluster too.
        await self._send(self._control_name, _encode(message), sharded=False)

    def _publish_node(self, name: str) -> dict[str, Any]:
        """Where a plain PUBLISH goes: on Redis Cluster the node the subscriber reads
        ``name`` on, a node that is up (redis-py would pick its slot's node, down or not)."""
        if not isinstance(self._client, redis.asyncio.RedisCluster):
            return {}
        return {"target_nodes": self._client.get_node(node_name=self._subscriber.node_for(name))}

    async def subscribe(self, app_id: str, channel: str) -> None:
        name = pubsub_channel(self.config.prefix, app_id, channel)
        self._channels[name] = (app_id, channel)
        await self._subscriber.subscribe(name)

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        name = pubsub_channel(self.config.prefix, app_id, channel)
        # Forgetting the name first drops what is still on its way.
        self._channels.pop(name, None)
        await self._subscriber.unsubscribe(name)

    async def _send(self, name: str, payload: bytes, *, sharded: bool) -> None:
        assert self._client is not None, "start() the broker first"
        why = self._subscriber.unreachable(name)
        if why is not None:
            raise BrokerUnavailable(why)
        try:
            if sharded:
                await self._client.spublish(name, payload)
            else:
                await self._client.publish(name, payload, **self._publish_node(name))
        except UNREACHABLE as error:
            raise BrokerUnavailable(f"Redis is unreachable: {describe(error)}") from error

    def _receive(self, name: bytes, payload: bytes) -> None:
        """Called by the subscriber's reader for each message, in Redis's order."""
        text = name.decode()
        if text == self._control_name:
            message = _decode(payload, dict)
            if message is not None and self._control is not None:
                self._control(message)
            return
        where = self._channels.get(text)
        if where is None:
            return  # unsubscribed while the message was on its way
        publication = _publication(where, payload)
        if publication is not None and self._deliver is not None:
            self._deliver(publication)


def encode_publication(publication: Publication) -> bytes:
    """A publication as its channel's pub/sub name carries it (see the wire format above)."""
    fields: list[Any] = [publication.event, publication.data, publication.exclude,
                         publication.user_id]
    if publication.origin_time is not None:
        fields += [publication.epoch, publication.offset, publication.origin_time]
    elif publication.epoch is not None:
        fields += [publication.epoch, publication.offset]
    return _encode(fields)


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _decode(payload: bytes, kind: type) -> Any:
    """The JSON value of ``payload`` if it is a ``kind``; else log and None."""
    try:
        value = json.loads(payload)
    except ValueError:  # includes UnicodeDecodeError
        value = None
    if not isinstance(value, kind):
        log.warning("Redis: skipped a malformed message: %.200r", payload)
        return None
    return value


def _publication(where: tuple[str, str], payload: bytes) -> Publication | None:
    fields = _decode(payload, list)
    if fields is None:
        return None
    if (len(fields) not in (4, 6, 7) or not all(isinstance(field, str) for field in fields[:2])
            or not all(field is None or isinstance(field, str) for field in fields[2:4])
            or (len(fields) == 6 and not _is_position(*fields[4:6]))
            or (len(fields) == 7 and not _is_timed(*fields[4:]))):
        log.warning("Redis: skipped a malformed publication: %.200r", payload)
        return None
    return Publication(where[0], where[1], *fields)


def _is_position(epoch: Any, offset: Any) -> bool:
    return (isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool)
            and offset > 0)


def _is_timed(epoch: Any, offset: Any, origin_time: Any) -> bool:
    """The last three of seven fields: a position (or none) and a finite origin time."""
    return ((_is_position(epoch, offset) or (epoch is None and offset is None))
            and isinstance(origin_time, (int, float)) and not isinstance(origin_time, bool)
            and math.isfinite(origin_time))
