"""Cluster state in Redis: counts, presence and online users shared by every process.

Each transition is one Lua script on keys of one hash slot (``{app:channel}``),
so exactly one process sees "first subscriber" or "last member" and
announces it. A presence transition publishes its ``member_added`` or
``member_removed`` itself, inside the script, on the channel's pub/sub name
(same slot; SPUBLISH on Redis Cluster): Redis runs scripts one at a time, so
every process receives a channel's presence events in the order its state
changed, however the processes that caused them race. (Published after the
script, a leave on one process and a rejoin on another could reach observers
as added, removed: a present user shown as gone.)

Every process also records what it registered under its node id and
refreshes a heartbeat; when a process dies, a survivor reaps its leftovers
when its deadline (two heartbeat intervals after its last heartbeat) passes,
and the same scripts announce the departures once.

Keys (``P`` is the prefix):
    P:node_seq                  INCR: node ids, so socket ids are unique
    P:nodes                     ZSET node id → heartbeat deadline (Redis time, s)
    P:node:{n}:subs             SET of [app, channel, socket] the node registered
    P:node:{n}:users            SET of [app, user, socket]
    P:reaped:{n}                a reaped node's tombstone, read once if it comes back
    P:{a:c}:subs                HASH socket → node
    P:{a:c}:members             HASH user → user_info JSON
    P:{a:c}:conns               HASH user → connections on the channel
    P:{a:c}:member_of           HASH socket → user
    P:{a:c}:cache               STRING [event, data], expiring
    P:{a:c}:pub                 the channel's pub/sub name (not a key)
    P:{a:#user:u}:sockets       HASH socket → node (a signed-in user's connections)
    P:{a}:channels              SET of occupied channel names (an index for GET /channels)
    P:{nodes}:records           HASH node id → the admin console's node record, JSON with its
                                expiry in Redis time (one key: works on Redis Cluster)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, AsyncIterator, Callable, Coroutine, Iterable, TypeVar

import redis.asyncio as aioredis

from .. import protocol
from ..errors import BrokerUnavailable
from ..presence import Member, member_added
from .broker import encode_publication
from .client import UNREACHABLE, channel_key, describe, pubsub_channel
from .scripts import CLOCK, JOIN, LEAVE, RAISE_SEQ, SIGN_IN, SIGN_OUT
from ..state import Arrival, CacheEntry, ChannelCounts, ClusterState, Departure, Orphan

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a reaped node's tombstone waits for the node to come back and read it.
_TOMBSTONE_SECONDS = 24 * 3600
#: Seconds a reaper wakes after a deadline, so that Redis's clock has passed it too.
_REAP_SLACK = 0.01


class _NodesAnswering:
    """Commands of one pass over many keys, skipping a node's keys once one of its
    commands found it unreachable: one wait per node that is down, not one per key."""

    def __init__(self, owner: Callable[[str], str]) -> None:
        self._owner = owner  # the name of the node holding a key
        self._down: set[str] = set()

    async def run(self, key: str, command: Coroutine[Any, Any, T]) -> T | None:
        """``command``'s answer, or None (``command`` not run, or failed) when ``key``'s
        node is unreachable."""
        try:
            owner = self._owner(key)
        except UNREACHABLE:  # a slot no node serves
            command.close()  # never awaited
            return None
        if owner in self._down:
            command.close()
            return None
        try:
            return await command
        except UNREACHABLE:
            self._down.add(owner)
            return None


@contextlib.asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    """Turn Redis connection failures into :class:`BrokerUnavailable`."""
    try:
        yield
    except UNREACHABLE as error:
        raise BrokerUnavailable(f"Redis is unreachable: {describe(error)}") from error


class RedisState(ClusterState):
    """:class:`~pubsub.state.ClusterState` in Redis, for one process per core and beyond."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "push",
                 heartbeat_interval: float = 15.0, sharded_pubsub: bool = False) -> None:
        """``sharded_pubsub`` (Redis Cluster): presence events go out with SPUBLISH,
        as the broker's publications do."""
        self._redis = client
        self._prefix = prefix
        self._publish_command = "SPUBLISH" if sharded_pubsub else "PUBLISH"
        self.heartbeat_interval = heartbeat_interval
        self.reap_interval = heartbeat_interval
        self.node_id = 0
        self._heartbeat: asyncio.Task[None] | None = None
        #: on_registration_lost, running beside the heartbeat.
        self._registering: asyncio.Task[None] | None = None
        # Loop times: the last heartbeat that got through, and the start of the
        # current run of heartbeats that got through on time (see _in_touch).
        self._beat_ok_at: float | None = None
        self._in_touch_since = 0.0
        self._join = client.register_script(JOIN)
        self._leave = client.register_script(LEAVE)
        self._sign_in = client.register_script(SIGN_IN)
        self._sign_out = client.register_script(SIGN_OUT)
        self._raise_seq = client.register_script(RAISE_SEQ)
        self._clock = client.register_script(CLOCK)

    # -- keys ----------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    def _channel_keys(self, app_id: str, channel: str) -> list[str]:
        """The keys of a transition script: the channel's state, then its pub/sub name
        (declared like a key so that Redis Cluster checks it is in the same slot)."""
        return [*(channel_key(self._prefix, app_id, channel, suffix)
                  for suffix in ("subs", "members", "conns", "member_of")),
                pubsub_channel(self._prefix, app_id, channel)]

    def _user_key(self, app_id: str, user_id: str) -> str:
        return channel_key(self._prefix, app_id, f"#user:{user_id}", "sockets")

    def _index_key(self, app_id: str) -> str:
        return self._key(f"{{{app_id}}}", "channels")

    def _node_key(self, node_id: int | str, kind: str) -> str:
        return self._key("node", str(node_id), kind)

    def _records_key(self) -> str:
        return self._key("{nodes}", "records")

    # -- node lifecycle ------------------------------------------------------------

    async def start(self) -> int:
        async with _reachable():
            self.node_id = int(await self._redis.incr(self._key("node_seq")))
            await self._beat()
        self._heartbeat = asyncio.ensure_future(self._beat_forever())
        return self.node_id

    async def close(self) -> None:
        for task in (self._heartbeat, self._registering):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(BrokerUnavailable):
            async with _reachable():
                await self._redis.zrem(self._key("nodes"), self.node_id)
                await self._redis.hdel(self._records_key(), str(self.node_id))
                await self._redis.delete(self._node_key(self.node_id, "subs"),
                                         self._node_key(self.node_id, "users"))

    async def _now(self, key: str) -> float:
        """Redis's clock, read on the node that holds ``key``: on Redis Cluster the
        node that is written next, not whichever node plain TIME goes to (it may be
        down while ``key``'s is not)."""
        seconds, micros = await self._clock(keys=[key])
        return int(seconds) + int(micros) / 1e6

    async def _beat(self) -> bool:
        """Refresh this node's deadline; True when the registration had vanished."""
        deadline = await self._now(self._key("nodes")) + 2 * self.heartbeat_interval
        added = await self._redis.zadd(self._key("nodes"), {str(self.node_id): deadline})
        if added:
            await self._raise_seq(keys=[self._key("node_seq")], args=[self.node_id])
        now = asyncio.get_running_loop().time()
        if self._beat_ok_at is None or now - self._beat_ok_at > self.heartbeat_interval:
            self._in_touch_since = now  # after a gap, the others may not have beaten yet either
        self._beat_ok_at = now
        return bool(added)

    def _in_touch(self) -> bool:
        """Whether this node's own heartbeats have got through on time for two intervals.

        When Redis stalls, or this process loses it or is paused, every node
        misses its deadline, the living ones too: only a node that has been
        beating regularly for as long as a deadline can tell the dead from the late.
        """
        now = asyncio.get_running_loop().time()
        return (self._beat_ok_at is not None
                and now - self._beat_ok_at <= self.heartbeat_interval
                and now - self._in_touch_since >= 2 * self.heartbeat_interval)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval / 3)
            try:
                async with _reachable():
                    lost = await self._beat()
                # Redis lost its data, or a survivor reaped us after a long pause.
                if lost and self.on_registration_lost is not None:
                    log.warning("node %d was missing from Redis: registering its state again",
                                self.node_id)
                    # Beside the heartbeat, not in its way: registering 15,000 connections
                    # can outlast a deadline, and a node that stopped beating meanwhile
                    # would be reaped by the others.
                    self._registering = asyncio.ensure_future(self._register_again())
            except BrokerUnavailable as outage:
                log.warning("node heartbeat failed: %s", outage.message)

    async def _register_again(self) -> None:
        try:
            await self.on_registration_lost()
        except BrokerUnavailable as outage:
            log.warning("registering this node's state again failed: %s", outage.message)

    async def put_node(self, node_id: int, record: dict[str, Any], ttl: float) -> None:
        async with _reachable():
            expires = await self._now(self._records_key()) + ttl
            await self._redis.hset(self._records_key(), str(node_id),
                                   json.dumps({"expires": expires, "record": record}))

    async def nodes(self) -> dict[int, dict[str, Any]]:
        async with _reachable():
            now = await self._now(self._records_key())
            stored = await self._redis.hgetall(self._records_key())
            live, expired = {}, []
            for node, value in stored.items():
                entry = json.loads(value)
                if entry["expires"] > now:
                    live[int(node)] = entry["record"]
                else:
                    expired.append(node)
            # A dead process's record: whoever reads first removes it. A live process whose
            # record was late (expired) and rewritten meanwhile may lose it until its next
            # report, 2 s later: it was not shown anyway while late.
            if expired:
                await self._redis.hdel(self._records_key(), *expired)
        return live

    # -- channels ------------------------------------------------------------------

    async def join(self, app_id: str, channel: str, socket_id: str,
                   member: Member | None = None, *, announce: bool = True) -> Arrival:
        user_id = member.user_id if member else ""
        info = json.dumps(member.user_info, separators=(",", ":")) if member else ""
        added_event = (encode_publication(member_added(app_id, channel, member, socket_id))
                       if member and announce else b"")
        async with _reachable():
            # Registered for reaping first: on Redis Cluster this node's set may live on a
            # master that is down while the channel's is up, and a join refused must
            # leave nothing in the channel (a leave of a socket never joined is a no-op).
            await self._redis.sadd(self._node_key(self.node_id, "subs"),
                                   json.dumps([app_id, channel, socket_id]))
            occupied, added = await self._join(
                keys=self._channel_keys(app_id, channel),
                args=[socket_id, self.node_id, user_id, info, self._publish_command, added_event])
            if occupied:
                await self._index_or_undo(app_id, channel, socket_id)
        return Arrival(bool(occupied), bool(added))

    async def _index_or_undo(self, app_id: str, channel: str, socket_id: str) -> None:
        """List a channel its first subscriber occupied, or take that join back and
        raise: nobody else is on the channel yet to see it come and go."""
        try:
            await self._redis.sadd(self._index_key(app_id), channel)
        except UNREACHABLE:
            with contextlib.suppress(*UNREACHABLE):
                await self._leave_keys(app_id, channel, socket_id)
            raise

    async def leave(self, app_id: str, channel: str, socket_id: str, *, again: bool = False,
                    user_id: str | None = None) -> Departure:
        async with _reachable():
            departure = await self._leave_keys(app_id, channel, socket_id, again=again,
                                               user_id=user_id)
            await self._redis.srem(self._node_key(self.node_id, "subs"),
                                   json.dumps([app_id, channel, socket_id]))
        return departure

    async def _leave_keys(self, app_id: str, channel: str, socket_id: str, *,
                          again: bool = False, user_id: str | None = None) -> Departure:
        keys = self._channel_keys(app_id, channel)
        vacated, user = await self._leave(
            keys=keys, args=[socket_id, self._publish_command, protocol.MEMBER_REMOVED,
                             "1" if again else "", user_id or ""])
        if vacated:
            index = self._index_key(app_id)
            await self._redis.srem(index, channel)
            # A join that occupied the channel after the script listed it before this
            # SREM (it lives on another slot): put it back rather than hide the channel.
            if await self._redis.hlen(keys[0]):
                await self._redis.sadd(index, channel)
        return Departure(bool(vacated), user.decode() if user else None)

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        async with _reachable():
            members = await self._redis.hgetall(channel_key(self._prefix, app_id, channel, "members"))
        return {user.decode(): json.loads(info) for user, info in members.items()}

    async def counts(self, app_id: str, channel: str) -> ChannelCounts:
        subs, members = self._channel_keys(app_id, channel)[:2]
        async with _reachable():
            return ChannelCounts(await self._redis.hlen(subs), await self._redis.hlen(members))

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, ChannelCounts]:
        async with _reachable():
            names = [name.decode() for name in await self._redis.smembers(self._index_key(app_id))]
            result = {}
            for name in sorted(n for n in names if n.startswith(prefix)):
                counts = await self.counts(app_id, name)
                if counts.subscriptions:
                    result[name] = counts
        return result

    # -- users ---------------------------------------------------------------------

    async def sign_in(self, app_id: str, user_id: str, socket_id: str) -> bool:
        async with _reachable():
            # Registered for reaping first, as in join().
            await self._redis.sadd(self._node_key(self.node_id, "users"),
                                   json.dumps([app_id, user_id, socket_id]))
            first = await self._sign_in(keys=[self._user_key(app_id, user_id)],
                                        args=[socket_id, self.node_id])
        return bool(first)

    async def sign_out(self, app_id: str, user_id: str, socket_id: str, *,
                       again: bool = False) -> bool:
        async with _reachable():
            last = await self._sign_out(keys=[self._user_key(app_id, user_id)],
                                        args=[socket_id, "1" if again else ""])
            await self._redis.srem(self._node_key(self.node_id, "users"),
                                   json.dumps([app_id, user_id, socket_id]))
        return bool(last)

    async def online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        async with _reachable():
            return {user_id for user_id in user_ids
                    if await self._redis.exists(self._user_key(app_id, user_id))}

    # -- cache channels ------------------------------------------------------------

    async def cache_put(self, app_id: str, channel: str, event: str, data: str,
                        ttl: float) -> None:
        async with _reachable():
            await self._redis.set(channel_key(self._prefix, app_id, channel, "cache"),
                                  json.dumps([event, data]), px=max(1, int(ttl * 1000)))

    async def cache_get(self, app_id: str, channel: str) -> CacheEntry | None:
        key = channel_key(self._prefix, app_id, channel, "cache")
        async with _reachable():
            value, ttl_ms = await self._redis.get(key), await self._redis.pttl(key)
        if value is None or ttl_ms <= 0:
            return None
        event, data = json.loads(value)
        return CacheEntry(event, data, ttl_ms / 1000)

    # -- dead processes ------------------------------------------------------------

    async def until_reap(self) -> float:
        """Until just after the earliest node deadline: a node that dies is reaped
        when its deadline passes, not up to a whole interval later. When that
        deadline has passed already (another survivor is reaping the node, or this
        one is not in touch yet), a tenth of an interval."""
        async with _reachable():
            earliest = await self._redis.zrange(self._key("nodes"), 0, 0, withscores=True)
            now = await self._now(self._key("nodes"))
        if not earliest:
            return self.reap_interval
        wait = earliest[0][1] - now
        if wait <= 0:
            return self.heartbeat_interval / 10
        return min(wait + _REAP_SLACK, self.reap_interval)

    async def reap(self) -> list[Orphan]:
        """Remove every dead node's registrations; each node is reaped by one survivor."""
        if not self._in_touch():
            return []
        async with _reachable():
            nodes = self._key("nodes")
            dead = await self._redis.zrangebyscore(nodes, "-inf", await self._now(nodes))
            orphans: list[Orphan] = []
            for raw in dead:
                node = raw.decode()
                lock = self._key("reaping", node)
                if not await self._redis.set(lock, self.node_id, nx=True, ex=60):
                    continue  # another survivor has it
                # If the node was only paused, it must learn that its members were
                # announced as gone (see was_reaped).
                await self._redis.set(self._key("reaped", node), 1, ex=_TOMBSTONE_SECONDS)
                reaped, complete = await self._reap_node(node)
                orphans.extend(reaped)
                if complete:
                    await self._redis.zrem(self._key("nodes"), node)
                else:  # the next round, by any survivor, does the rest
                    await self._redis.delete(lock)
        return orphans

    def _owner(self, key: str) -> str:
        """The Redis node that holds ``key``: on Redis Cluster its master, else the one."""
        find = getattr(self._redis, "get_node_from_key", None)
        return find(key).name if find is not None else "redis"

    async def was_reaped(self) -> bool:
        async with _reachable():
            return bool(await self._redis.getdel(self._key("reaped", str(self.node_id))))

    async def _reap_node(self, node: str) -> tuple[list[Orphan], bool]:
        """Take a dead node's registrations out of the channels and users they name;
        True when every one is done. On Redis Cluster some may wait for a master
        that is down: those done are removed from the node's sets, the others
        stay for a later round, and the rest of the cluster is cleaned meanwhile."""
        orphans: list[Orphan] = []
        subs_key, users_key = self._node_key(node, "subs"), self._node_key(node, "users")
        subscriptions, sign_ins = await self._redis.smembers(subs_key), await self._redis.smembers(users_key)
        done_subs, done_users = [], []
        round_ = _NodesAnswering(self._owner)
        for raw in subscriptions:
            app_id, channel, socket_id = json.loads(raw)
            departure = await round_.run(channel_key(self._prefix, app_id, channel, "subs"),
                                         self._leave_keys(app_id, channel, socket_id))
            if departure is not None:
                orphans.append(Orphan(app_id, channel, departure))
                done_subs.append(raw)
        for raw in sign_ins:
            app_id, user_id, socket_id = json.loads(raw)
            key = self._user_key(app_id, user_id)
            last = await round_.run(key, self._sign_out(keys=[key], args=[socket_id]))
            if last is not None:
                if last:
                    orphans.append(Orphan(app_id, offline_user=user_id))
                done_users.append(raw)
        left = len(subscriptions) + len(sign_ins) - len(done_subs) - len(done_users)
        if left:
            for key, done in ((subs_key, done_subs), (users_key, done_users)):
                if done:
                    await self._redis.srem(key, *done)
            log.warning("reaped dead node %s in part: %d registration(s) wait for a Redis node "
                        "that is unreachable", node, left)
            return orphans, False
        await self._redis.delete(subs_key, users_key)
        log.warning("reaped dead node %s: %d subscription(s), %d sign-in(s)",
                    node, len(subscriptions), len(sign_ins))
        return orphans, True
