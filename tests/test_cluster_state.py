"""The cluster-state contract, held by the memory state and by the Redis state alike."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from tornado_push.pubsub import protocol
from tornado_push.pubsub.broker import Publication
from tornado_push.pubsub.errors import BrokerUnavailable
from tornado_push.pubsub.presence import Member
from tornado_push.pubsub.redis.broker import _publication
from tornado_push.pubsub.redis.client import RedisConfig, connect, pubsub_channel
from tornado_push.pubsub.redis.state import RedisState
from tornado_push.pubsub.state import Arrival, ChannelCounts, Departure, MemoryState, Orphan


@pytest.fixture
def redis_client(io_loop, redis_server):
    client = aioredis.from_url(redis_server.url)
    io_loop.run_sync(client.flushall)
    yield client
    io_loop.run_sync(client.aclose)


@pytest.fixture(params=["memory", "redis"])
def state(request, io_loop):
    if request.param == "memory":
        made = MemoryState()
    else:
        made = RedisState(request.getfixturevalue("redis_client"), prefix="test")
    io_loop.run_sync(made.start)
    yield made
    io_loop.run_sync(made.close)


@pytest.mark.gen_test
async def test_first_subscriber_occupies_and_last_vacates(state):
    assert await state.join("1", "news", "1.1") == Arrival(True)
    assert await state.join("1", "news", "1.2") == Arrival(False)
    assert await state.join("1", "news", "1.2") == Arrival(False)  # idempotent
    assert await state.counts("1", "news") == ChannelCounts(2)
    assert await state.leave("1", "news", "1.1") == Departure(False)
    assert await state.leave("1", "news", "1.1") == Departure(False)  # idempotent
    assert await state.leave("1", "news", "1.2") == Departure(True)
    assert await state.counts("1", "news") == ChannelCounts(0)


@pytest.mark.gen_test
async def test_presence_counts_users_not_connections(state):
    alice = Member("alice", {"name": "Alice"})
    assert await state.join("1", "presence-r", "1.1", alice) == Arrival(True, True)
    assert await state.join("1", "presence-r", "1.2", alice) == Arrival(False, False)
    assert await state.join("1", "presence-r", "1.3", Member("bob")) == Arrival(False, True)
    assert await state.members("1", "presence-r") == {"alice": {"name": "Alice"}, "bob": None}
    assert await state.counts("1", "presence-r") == ChannelCounts(3, 2)
    assert await state.leave("1", "presence-r", "1.1") == Departure(False)
    assert await state.leave("1", "presence-r", "1.2") == Departure(False, "alice")
    assert await state.leave("1", "presence-r", "1.3") == Departure(True, "bob")


@pytest.mark.gen_test
async def test_presence_transitions_publish_their_own_events(state, request):
    """What subscribers of the channel receive, in the order of the transitions
    (Redis: published by the scripts, on the channel's pub/sub name)."""
    if isinstance(state, MemoryState):
        published: list[Publication] = []

        async def publish(publication: Publication) -> None:
            published.append(publication)

        state.publish = publish

        async def heard(count: int) -> list[Publication]:
            return published
    else:
        listener = request.getfixturevalue("redis_client").pubsub()
        await listener.subscribe(pubsub_channel("test", "1", "presence-r"))

        async def heard(count: int) -> list[Publication]:
            got = []
            while len(got) < count:  # bounded by the test's timeout
                message = await listener.get_message(timeout=5)
                if message is not None and message["type"] == "message":
                    got.append(_publication(("1", "presence-r"), message["data"]))
            await listener.aclose()
            return got

    alice = Member("al/ice", {"name": "Alice"})
    await state.join("1", "presence-r", "1.1", alice)
    await state.join("1", "presence-r", "1.2", alice)  # not a new member: nothing
    await state.join("1", "presence-r", "1.3", Member("bob"), announce=False)
    await state.leave("1", "presence-r", "1.1")
    await state.leave("1", "presence-r", "1.2")
    events = [(publication.event, json.loads(publication.data), publication.exclude)
              for publication in await heard(2)]
    assert events == [
        (protocol.MEMBER_ADDED, {"user_id": "al/ice", "user_info": {"name": "Alice"}}, "1.1"),
        (protocol.MEMBER_REMOVED, {"user_id": "al/ice"}, None),  # the script writes "al\/ice"
    ]


@pytest.mark.gen_test
async def test_channels_lists_occupied_ones_per_app_by_prefix(state):
    await state.join("1", "presence-a", "1.1", Member("u"))
    await state.join("1", "news", "1.1")
    await state.join("2", "news-elsewhere", "1.2")
    assert set(await state.channels("1")) == {"presence-a", "news"}
    assert await state.channels("1", "presence-") == {"presence-a": ChannelCounts(1, 1)}
    await state.leave("1", "news", "1.1")
    assert set(await state.channels("1")) == {"presence-a"}


@pytest.mark.gen_test
async def test_users_are_online_from_first_sign_in_to_last_sign_out(state):
    assert await state.sign_in("1", "alice", "1.1") is True
    assert await state.sign_in("1", "alice", "1.2") is False
    assert await state.online("1", ["alice", "bob"]) == {"alice"}
    assert await state.sign_out("1", "alice", "1.1") is False
    assert await state.sign_out("1", "alice", "1.2") is True
    assert await state.sign_out("1", "alice", "1.2") is False
    assert await state.online("1", ["alice"]) == set()


@pytest.mark.gen_test
async def test_a_call_made_again_reports_what_an_unanswered_one_did(state):
    """``again``: the first call ran but its answer was lost, so the second finds the
    subscription or sign-in gone, and reads the departure from the state as it is now."""
    alice, bob = Member("alice"), Member("bob")
    await state.join("1", "presence-r", "1.1", alice)
    await state.join("1", "presence-r", "1.2", alice)
    await state.join("1", "presence-r", "1.3", bob)
    await state.leave("1", "presence-r", "1.3")  # bob's last connection: its answer lost
    assert await state.leave("1", "presence-r", "1.3") == Departure(False)  # a plain repeat
    assert await state.leave("1", "presence-r", "1.3", again=True,
                              user_id="bob") == Departure(False, "bob")
    await state.leave("1", "presence-r", "1.1")  # alice still has 1.2: nobody removed
    assert await state.leave("1", "presence-r", "1.1", again=True,
                              user_id="alice") == Departure(False)
    await state.leave("1", "presence-r", "1.2")  # the last one: vacated, alice removed
    assert await state.leave("1", "presence-r", "1.2", again=True,
                              user_id="alice") == Departure(True, "alice")
    assert await state.join("1", "news", "1.4") == Arrival(True)
    await state.leave("1", "news", "1.4")
    assert await state.leave("1", "news", "1.4", again=True) == Departure(True)
    assert await state.channels("1") == {}

    await state.sign_in("1", "carol", "1.5")
    await state.sign_in("1", "carol", "1.6")
    await state.sign_out("1", "carol", "1.5")
    assert await state.sign_out("1", "carol", "1.5", again=True) is False  # 1.6 is on
    await state.sign_out("1", "carol", "1.6")
    assert await state.sign_out("1", "carol", "1.6") is False
    assert await state.sign_out("1", "carol", "1.6", again=True) is True


@pytest.mark.gen_test
async def test_a_join_between_a_vacating_leave_and_its_index_update_stays_listed(redis_client):
    """The channel index lives on another slot than the channel, so a leave that
    vacates updates it after its script: a join on another process that occupies the
    channel in between (and lists it) must not be unlisted by that update."""
    leaving, joining = RedisState(redis_client, prefix="race"), RedisState(redis_client,
                                                                          prefix="race")
    await leaving.start()
    await joining.start()
    unlist = redis_client.srem

    async def join_first(*args):  # the other process's join lands right here, once
        redis_client.srem = unlist
        assert await joining.join("1", "news", "2.1") == Arrival(True)
        return await unlist(*args)

    try:
        await leaving.join("1", "news", "1.1")
        redis_client.srem = join_first
        assert await leaving.leave("1", "news", "1.1") == Departure(True)
        assert await leaving.channels("1") == {"news": ChannelCounts(1)}
    finally:
        redis_client.srem = unlist
        await leaving.close()
        await joining.close()


@pytest.mark.gen_test
async def test_cache_keeps_the_last_event_for_its_ttl(state):
    assert await state.cache_get("1", "cache-x") is None
    await state.cache_put("1", "cache-x", "tick", '{"n":1}', 60)
    await state.cache_put("1", "cache-x", "tick", '{"n":2}', 60)
    cached = await state.cache_get("1", "cache-x")
    assert (cached.event, cached.data) == ("tick", '{"n":2}') and 0 < cached.ttl <= 60


@pytest.mark.gen_test(timeout=20)
async def test_a_dead_nodes_registrations_are_reaped_once(redis_client):
    # Long enough that a loaded machine does not make a survivor look dead too.
    beat = 1.0
    dying = RedisState(redis_client, prefix="test", heartbeat_interval=beat)
    survivors = [RedisState(redis_client, prefix="test", heartbeat_interval=beat) for _ in range(2)]
    for node in (dying, *survivors):
        await node.start()
    await dying.join("1", "presence-room", f"{dying.node_id}.1", Member("alice"))
    await survivors[0].join("1", "presence-room", f"{survivors[0].node_id}.1", Member("bob"))
    await dying.join("1", "lonely", f"{dying.node_id}.1")
    await dying.sign_in("1", "alice", f"{dying.node_id}.1")
    dying._heartbeat.cancel()  # the process dies: no close(), no more heartbeats

    orphans: list[Orphan] = []
    while not orphans:  # reaping starts once the deadline (two intervals) has passed
        await asyncio.sleep(0.1)
        for survivor in survivors:
            orphans += await survivor.reap()
    assert sorted(orphans, key=repr) == sorted([
        Orphan("1", "presence-room", Departure(False, "alice")),
        Orphan("1", "lonely", Departure(True)),
        Orphan("1", offline_user="alice"),
    ], key=repr)
    assert await survivors[1].reap() == [] and await survivors[0].reap() == []
    assert await survivors[0].members("1", "presence-room") == {"bob": None}
    for node in survivors:
        await node.close()


@pytest.mark.gen_test(timeout=20)
async def test_lost_registration_is_reported_so_the_hub_registers_again(redis_client):
    node = RedisState(redis_client, prefix="test", heartbeat_interval=0.3)
    lost = asyncio.Event()

    async def register_again() -> None:
        lost.set()

    node.on_registration_lost = register_again
    first_id = await node.start()
    await redis_client.flushall()  # what a Redis restart without persistence does
    await asyncio.wait_for(lost.wait(), 5)
    later = RedisState(redis_client, prefix="test")
    assert await later.start() > first_id  # ids stay unique after the loss
    await node.close()
    await later.close()


@pytest.mark.gen_test(timeout=20)
async def test_heartbeats_go_on_while_the_hub_registers_again(redis_client):
    """Registering thousands of connections may outlast a deadline: the node must not look dead."""
    node = RedisState(redis_client, prefix="test", heartbeat_interval=0.3)
    lost, done = asyncio.Event(), asyncio.Event()

    async def register_again() -> None:
        lost.set()
        await done.wait()  # a registration that takes its time

    node.on_registration_lost = register_again
    await node.start()
    await redis_client.flushall()
    await asyncio.wait_for(lost.wait(), 5)
    first = await redis_client.zscore("test:nodes", str(node.node_id))
    deadline = asyncio.get_running_loop().time() + 5
    while await redis_client.zscore("test:nodes", str(node.node_id)) == first:
        assert asyncio.get_running_loop().time() < deadline, "no heartbeat while registering"
        await asyncio.sleep(0.05)
    done.set()
    await node.close()


@pytest.mark.gen_test(timeout=20)
async def test_node_records_are_kept_until_they_expire(state):
    await state.put_node(7, {"node": 7, "address": "127.0.0.1:6001"}, ttl=30)
    await state.put_node(8, {"node": 8, "address": "127.0.0.1:6002"}, ttl=0.3)
    await state.put_node(7, {"node": 7, "address": "127.0.0.1:6003"}, ttl=30)  # replaces
    assert await state.nodes() == {7: {"node": 7, "address": "127.0.0.1:6003"},
                                   8: {"node": 8, "address": "127.0.0.1:6002"}}
    deadline = asyncio.get_running_loop().time() + 10
    while 8 in await state.nodes():  # expiry is time passing: poll it, within a deadline
        assert asyncio.get_running_loop().time() < deadline, "node 8's record never expired"
        await asyncio.sleep(0.05)
    assert list(await state.nodes()) == [7]


@pytest.mark.gen_test(timeout=30)
async def test_node_records_work_on_redis_cluster(redis_cluster):
    client = aioredis.RedisCluster.from_url(redis_cluster.url)
    first, second = RedisState(client, prefix="test-records"), RedisState(client, prefix="test-records")
    ids = [await first.start(), await second.start()]
    for node_id in ids:
        await first.put_node(node_id, {"node": node_id}, ttl=30)
    assert await second.nodes() == {node_id: {"node": node_id} for node_id in ids}
    await first.close()  # a node that leaves takes its record with it
    assert list(await second.nodes()) == [ids[1]]
    await second.close()
    await client.aclose()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("down_key", ["registration", "index"])
async def test_a_join_refused_by_a_down_master_leaves_nothing_in_the_channel(
        fresh_cluster, down_key):
    """On Redis Cluster a join also writes this node's registration set and the
    app's channel index, which may live on a master that is down while the
    channel's is up: the join is refused and the channel holds nothing of it."""
    client = connect(RedisConfig(url=fresh_cluster.url, cluster=True, timeout=1.0))
    for attempt in range(50):  # a prefix that puts the two keys on different masters
        state = RedisState(client, prefix=f"test-down-{attempt}")
        node_id = await state.start()
        registration = fresh_cluster.master_for(state._node_key(node_id, "subs"))
        index = fresh_cluster.master_for(state._index_key("1"))
        if registration is not index:
            break
        await state.close()
    down = registration if down_key == "registration" else index
    channel = next(name for number in range(1000) if (name := f"room-{number}")
                   and fresh_cluster.master_for(pubsub_channel("any", "1", name)) is not down)
    down.kill()
    try:
        with pytest.raises(BrokerUnavailable):
            await state.join("1", channel, f"{node_id}.1", Member("alice"))
        assert await state.counts("1", channel) == ChannelCounts(0, 0)
        assert await state.members("1", channel) == {}
    finally:
        await state.close()
        await client.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_scripts_never_run_before_work_on_the_masters_that_are_up(fresh_cluster):
    """A script's first run goes to its keys' master alone, not to every master
    (redis-py's SCRIPT LOAD would, and fail while one is down)."""
    client = connect(RedisConfig(url=fresh_cluster.url, cluster=True, timeout=1.0))
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    down = fresh_cluster.nodes[0]
    key = next(key for number in range(1000) if (key := f"counter-{number}")
               and fresh_cluster.master_for(key) is not down)
    await client.initialize()  # the layout, learnt from the URL's master (the one to go down)
    down.kill()
    try:
        assert [await script(keys=[key]), await script(keys=[key])] == [1, 2]
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_a_dead_node_is_reaped_on_the_masters_that_are_up_and_on_the_rest_later(
        fresh_cluster):
    """A process dies while a master is down: its subscriptions on the other masters
    are reaped on time, those on the down master once it is back."""
    client = connect(RedisConfig(url=fresh_cluster.url, cluster=True, timeout=1.0))
    await client.initialize()
    beat = 1.0
    for attempt in range(50):  # node keys away from the master that goes down
        prefix = f"test-reap-{attempt}"
        dying, survivor = (RedisState(client, prefix=prefix, heartbeat_interval=beat)
                           for _ in range(2))
        for node in (dying, survivor):
            await node.start()
        down = fresh_cluster.nodes[0]
        if all(fresh_cluster.master_for(key) is not down for key in (
                dying._key("nodes"), dying._node_key(dying.node_id, "subs"),
                dying._node_key(dying.node_id, "users"), dying._key("reaping", str(dying.node_id)),
                dying._key("reaped", str(dying.node_id)))):
            break
        for node in (dying, survivor):
            await node.close()
    up, stalled = (next(name for number in range(1000) if (name := f"room-{number}")
                        and (fresh_cluster.master_for(pubsub_channel("any", "1", name))
                             is down) == on_down) for on_down in (False, True))
    for channel in (up, stalled):
        await dying.join("1", channel, f"{dying.node_id}.1")
    dying._heartbeat.cancel()  # the process dies: no close(), no more heartbeats
    down.pause()
    try:
        assert await reaped(survivor) == [Orphan("1", up, Departure(True))]
    finally:
        down.resume()
    fresh_cluster.wait_ok()
    # The survivor's own heartbeats may have waited on the stalled master (the cluster
    # client refreshes its layout after an error): it reaps once it is in touch again.
    assert await reaped(survivor) == [Orphan("1", stalled, Departure(True))]
    assert await survivor.reap() == []
    assert await survivor.counts("1", stalled) == ChannelCounts(0)
    await survivor.close()
    await client.aclose()


async def reaped(survivor: RedisState, timeout: float = 20) -> list[Orphan]:
    """What ``survivor`` reaps first, polled (bounded): reaping starts once a dead node's
    deadline has passed and the survivor has been in touch for two heartbeats."""
    deadline = time.monotonic() + timeout
    while not (orphans := await survivor.reap()):
        assert time.monotonic() < deadline, f"nothing reaped within {timeout:g} s"
        await asyncio.sleep(0.1)  # a polling period, not synchronisation
    return orphans
