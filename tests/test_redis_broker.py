"""The Redis broker against real redis-server processes: two brokers stand for two processes.

"Nothing else arrived" is proven with a marker: a later publication on a channel
the broker still receives. One subscriber connection delivers in Redis's order,
so anything unwanted would have come before the marker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis.asyncio

from tornado_push.pubsub.broker import Publication
from tornado_push.pubsub.errors import BrokerUnavailable
from tornado_push.pubsub.redis.broker import RedisBroker
from tornado_push.pubsub.redis.client import RedisConfig, pubsub_channel


PASSWORD = "p#$%@:/?&="
ENCODED = "p%23%24%25%40%3A%2F%3F%26%3D"
USER = "push-user"


class Node:
    """A broker as one server process uses it; what it delivers lands in queues."""

    def __init__(self, config: RedisConfig) -> None:
        self.broker = RedisBroker(config)
        self.publications: asyncio.Queue[Publication] = asyncio.Queue()
        self.controls: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reconnected: asyncio.Queue[int] = asyncio.Queue()
        self.lost: asyncio.Queue[str] = asyncio.Queue()
        self.broker.attach(self.publications.put_nowait, self.controls.put_nowait)
        self.broker.add_disconnect_listener(self.lost.put_nowait)
        self.broker.add_reconnect_listener(self._on_reconnect)

    async def _on_reconnect(self) -> None:
        self.reconnected.put_nowait(self.broker.reconnects)

    async def publish(self, channel: str, data: str, **fields: Any) -> None:
        await self.broker.publish(Publication("1", channel, "update", data, **fields))

    async def next(self, timeout: float = 5.0) -> Publication:
        return await asyncio.wait_for(self.publications.get(), timeout)

    async def next_data(self, count: int) -> list[str]:
        return [(await self.next()).data for _ in range(count)]


def config(url: str | None = None, **options: Any) -> RedisConfig:
    """A prefix of its own, so no other test's traffic can reach this one."""
    return RedisConfig(url=url, prefix=f"test-{uuid.uuid4().hex[:8]}", **options)


@pytest.fixture
def start(io_loop):
    """``await start(config)``: a started Node, closed after the test."""
    nodes: list[Node] = []

    async def start_node(node_config: RedisConfig) -> Node:
        node = Node(node_config)
        await node.broker.start()
        nodes.append(node)
        return node

    yield start_node
    for node in nodes:
        io_loop.run_sync(node.broker.close)


# -- delivery -------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=15)
async def test_publication_reaches_only_subscribed_brokers_exactly_once(start, redis_server):
    shared = config(redis_server.url)
    a, b = await start(shared), await start(shared)
    await a.broker.subscribe("1", "news")
    await b.broker.subscribe("1", "sport")
    await b.publish("news", "headline", exclude="1.7", user_id="alice")
    received = await a.next()
    assert received == Publication("1", "news", "update", "headline", "1.7", "alice")
    await b.publish("sport", "marker-b")
    await a.broker.subscribe("1", "sport")
    await b.publish("sport", "marker-a")
    assert await b.next_data(2) == ["marker-b", "marker-a"]  # no "headline": b is not on news
    assert await a.next_data(1) == ["marker-a"]  # the headline came once


@pytest.mark.gen_test(timeout=15)
async def test_origin_time_travels_with_plain_and_history_publications(start, redis_server):
    shared = config(redis_server.url)
    a, b = await start(shared), await start(shared)
    await a.broker.subscribe("1", "news")
    await b.publish("news", "plain", origin_time=1234.5)
    await b.publish("news", "stored", epoch="e1", offset=3, origin_time=1235.25)
    await b.publish("news", "untimed", epoch="e1", offset=4)
    assert [await a.next() for _ in range(3)] == [
        Publication("1", "news", "update", "plain", origin_time=1234.5),
        Publication("1", "news", "update", "stored", epoch="e1", offset=3, origin_time=1235.25),
        Publication("1", "news", "update", "untimed", epoch="e1", offset=4)]


@pytest.mark.gen_test(timeout=15)
async def test_after_unsubscribe_nothing_arrives(start, redis_server):
    shared = config(redis_server.url)
    a, b = await start(shared), await start(shared)
    for channel in ("news", "marker"):
        await a.broker.subscribe("1", channel)
    await a.broker.unsubscribe("1", "news")
    await b.publish("news", "too late")
    await b.publish("marker", "marker")
    assert await a.next_data(1) == ["marker"]


@pytest.mark.gen_test(timeout=15)
async def test_unsubscribe_then_subscribe_again_receives_again(start, redis_server):
    a = await start(config(redis_server.url))
    await a.broker.subscribe("1", "news")
    await a.broker.unsubscribe("1", "news")
    await a.broker.subscribe("1", "news")
    await a.publish("news", "back")
    assert await a.next_data(1) == ["back"]


@pytest.mark.gen_test(timeout=20)
async def test_interleaved_publishers_are_seen_in_one_order_by_everyone(start, redis_server):
    shared = config(redis_server.url)
    a, b = await start(shared), await start(shared)
    for node in (a, b):
        await node.broker.subscribe("1", "chat")

    async def publish_all(node: Node, name: str) -> None:
        for number in range(50):
            await node.publish("chat", f"{name}{number}")

    await asyncio.gather(publish_all(a, "a"), publish_all(b, "b"))
    seen_by_a, seen_by_b = await a.next_data(100), await b.next_data(100)
    assert seen_by_a == seen_by_b
    assert [data for data in seen_by_a if data[0] == "a"] == [f"a{n}" for n in range(50)]
    assert [data for data in seen_by_a if data[0] == "b"] == [f"b{n}" for n in range(50)]


@pytest.mark.gen_test(timeout=15)
async def test_broadcast_reaches_every_broker_including_the_sender(start, redis_server):
    shared = config(redis_server.url)
    a, b = await start(shared), await start(shared)
    await a.broker.broadcast({"kind": "terminate", "user": "alice"})
    await b.broker.broadcast({"kind": "online", "user": "bob"})
    for node in (a, b):
        assert await asyncio.wait_for(node.controls.get(), 5) == {"kind": "terminate", "user": "alice"}
        assert await asyncio.wait_for(node.controls.get(), 5) == {"kind": "online", "user": "bob"}


@pytest.mark.gen_test(timeout=15)
async def test_malformed_messages_are_logged_and_skipped(start, redis_server, caplog):
    node_config = config(redis_server.url)
    a = await start(node_config)
    await a.broker.subscribe("1", "news")
    name = pubsub_channel(node_config.prefix, "1", "news")
    raw = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        for junk in (b"not json", b'{"an": "object"}', b'["event", 5, null, null]', b"\xff",
                     b'["e", "d", null, null, null, null, "soon"]',
                     b'["e", "d", null, null, "epoch", null, 1.5]',
                     b'["e", "d", null, null, null, null, Infinity]'):
            await raw.publish(name, junk)
        await raw.publish(f"{node_config.prefix}:control", b"[1, 2]")
    finally:
        await raw.aclose()
    await a.publish("news", "fine")
    await a.broker.broadcast({"still": "listening"})
    assert await a.next_data(1) == ["fine"]
    assert await asyncio.wait_for(a.controls.get(), 5) == {"still": "listening"}
    skipped = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(skipped) == 8


@pytest.mark.gen_test(timeout=15)
async def test_close_leaves_no_task_behind(redis_server):
    broker = RedisBroker(config(redis_server.url))
    broker.attach(lambda publication: None, lambda message: None)
    await broker.start()
    await broker.subscribe("1", "news")
    await broker.close()
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("redis-")]


# -- outages --------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_killed_redis_makes_publish_fail_then_restart_reconnects_both(start, fresh_redis):
    shared = config(fresh_redis.url)
    a, b = await start(shared), await start(shared)
    for node in (a, b):
        await node.broker.subscribe("1", "news")
    fresh_redis.kill()
    with pytest.raises(BrokerUnavailable, match="Redis is unreachable"):
        await a.publish("news", "lost")
    for node in (a, b):
        await asyncio.wait_for(node.lost.get(), 5)
        assert not node.broker.connected
    with pytest.raises(BrokerUnavailable, match="Redis is unreachable"):
        await b.broker.broadcast({"kind": "lost"})

    fresh_redis.restart()
    for node in (a, b):
        assert await asyncio.wait_for(node.reconnected.get(), 10) == 1
        assert node.broker.connected and node.broker.reconnects == 1
    await a.publish("news", "after the restart")
    await b.publish("news", "from b too")
    for node in (a, b):
        assert await node.next_data(2) == ["after the restart", "from b too"]


@pytest.mark.gen_test(timeout=30)
async def test_subscribe_during_outage_takes_effect_at_reconnect(start, fresh_redis):
    a = await start(config(fresh_redis.url))
    fresh_redis.kill()
    await asyncio.wait_for(a.lost.get(), 5)
    await a.broker.subscribe("1", "joined-meanwhile")  # returns at once: clients are not held
    fresh_redis.restart()
    await asyncio.wait_for(a.reconnected.get(), 10)
    await a.publish("joined-meanwhile", "hello")
    assert await a.next_data(1) == ["hello"]


@pytest.mark.gen_test(timeout=30)
async def test_paused_redis_is_detected_by_the_heartbeat(start, fresh_redis):
    quick = config(fresh_redis.url, heartbeat_interval=0.2, timeout=1.0)
    a, b = await start(quick), await start(quick)
    for node in (a, b):
        await node.broker.subscribe("1", "news")
    fresh_redis.pause()
    paused_at = time.monotonic()
    for node in (a, b):
        reason = await asyncio.wait_for(node.lost.get(), 5)
        assert "PING" in reason
    # Two ping periods at most, plus scheduling slack.
    assert time.monotonic() - paused_at < 1.5
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await a.publish("news", "lost")
    assert time.monotonic() - started < 0.1  # refused at once, not after a timeout

    fresh_redis.resume()
    for node in (a, b):
        await asyncio.wait_for(node.reconnected.get(), 10)
    await b.publish("news", "awake")
    for node in (a, b):
        assert await node.next_data(1) == ["awake"]


@pytest.mark.gen_test(timeout=15)
async def test_start_fails_with_broker_unavailable_when_redis_is_down(fresh_redis):
    fresh_redis.kill()
    broker = RedisBroker(config(fresh_redis.url))
    with pytest.raises(BrokerUnavailable, match="Redis is unreachable"):
        await broker.start()
    await broker.close()


# -- credentials ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def password_redis(tmp_path_factory):
    from redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis-password"), password=PASSWORD,
                         user=(USER, PASSWORD)).start()
    yield server
    server.stop()


def credential_forms(port: int) -> dict[str, RedisConfig]:
    return {
        "url": config(f"redis://:{ENCODED}@127.0.0.1:{port}/0"),
        "url with user": config(f"redis://{USER}:{ENCODED}@127.0.0.1:{port}/0"),
        "fields": config(host="127.0.0.1", port=port, password=PASSWORD),
        "fields with user": config(host="127.0.0.1", port=port, username=USER, password=PASSWORD),
    }


@pytest.mark.parametrize("form", ["url", "url with user", "fields", "fields with user"])
@pytest.mark.gen_test(timeout=15)
async def test_special_character_password_works_encoded_in_url_and_raw_in_fields(
        start, password_redis, form):
    node = await start(credential_forms(password_redis.port)[form])
    await node.broker.subscribe("1", "news")
    await node.publish("news", "authenticated")
    assert await node.next_data(1) == ["authenticated"]


@pytest.mark.gen_test(timeout=15)
async def test_wrong_password_is_refused_without_showing_it(password_redis):
    broker = RedisBroker(RedisConfig(host="127.0.0.1", port=password_redis.port, password="wrong#1"))
    with pytest.raises(BrokerUnavailable) as refused:
        await broker.start()
    await broker.close()
    assert "wrong#1" not in str(refused.value)


# -- Redis Cluster --------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_sharded_pubsub_through_the_cluster_delivers_across_brokers(start, redis_cluster):
    shared = config(redis_cluster.url, cluster=True)
    a, b = await start(shared), await start(shared)
    channels = [f"room-{number}" for number in range(8)]
    for node in (a, b):
        for channel in channels:
            await node.broker.subscribe("1", channel)

    client = redis.asyncio.RedisCluster.from_url(redis_cluster.url)
    try:
        await client.initialize()
        names = [pubsub_channel(shared.prefix, "1", channel) for channel in channels]
        assert len({client.get_node_from_key(name).name for name in names}) >= 2
        for name in names:  # sharded subscriptions, on the shard that owns each name
            owner = client.get_node_from_key(name)
            counts = await client.execute_command("PUBSUB SHARDNUMSUB", name, target_nodes=owner)
            assert counts == [(name.encode(), 2)]
    finally:
        await client.aclose()

    for channel in channels:
        await a.publish(channel, f"{channel} from a")
        await b.publish(channel, f"{channel} from b")
    for node in (a, b):
        received = await node.next_data(2 * len(channels))
        assert sorted(received) == sorted(f"{c} from {n}" for c in channels for n in "ab")
    await a.broker.broadcast({"kind": "everyone"})
    for node in (a, b):
        assert await asyncio.wait_for(node.controls.get(), 5) == {"kind": "everyone"}


@pytest.mark.gen_test(timeout=60)
async def test_a_cluster_master_down_costs_only_its_channels_and_control_moves(start, fresh_cluster):
    """The master serving the control channel's slot is killed: control messages
    move to another master at once (plain PUBLISH reaches every node), other
    masters' channels carry on, its own channels are refused at once by name;
    when it is back, its channels are subscribed again."""
    shared = config(fresh_cluster.url, cluster=True, heartbeat_interval=0.2, timeout=1.0)
    down = fresh_cluster.master_for(f"{shared.prefix}:control")
    doomed, healthy = (next(name for number in range(1000) if (name := f"room-{number}")
                            and (fresh_cluster.master_for(pubsub_channel(shared.prefix, "1", name))
                                 is down) == on_down) for on_down in (True, False))
    a, b = await start(shared), await start(shared)
    for node in (a, b):
        for channel in (doomed, healthy):
            await node.broker.subscribe("1", channel)

    down.kill()
    for node in (a, b):
        await asyncio.wait_for(node.lost.get(), 5)
        assert not node.broker.connected
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{down.port}.*unreachable"):
        await a.publish(doomed, "lost")
    assert time.monotonic() - started < 0.1  # refused at once, by the node's known outage
    await a.publish(healthy, "carried on")
    for node in (a, b):
        assert await node.next_data(1) == ["carried on"]

    # Control messages move with the control subscription: those sent before a
    # broker has moved it are lost, as during any reconnect. So send until both hear one.
    heard: set[int] = set()
    deadline = time.monotonic() + 10
    while len(heard) < 2:
        assert time.monotonic() < deadline, "control messages never moved off the dead master"
        await a.broker.broadcast({"kind": "meanwhile"})
        for number, node in enumerate((a, b)):
            try:
                assert await asyncio.wait_for(node.controls.get(), 0.2) == {"kind": "meanwhile"}
                heard.add(number)
            except asyncio.TimeoutError:
                pass

    down.start()
    fresh_cluster.wait_ok()
    for node in (a, b):
        assert await asyncio.wait_for(node.reconnected.get(), 15) == 1
        assert node.broker.connected
    await b.publish(doomed, "back")
    for node in (a, b):
        assert await node.next_data(1) == ["back"]
