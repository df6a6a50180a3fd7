"""Reaping against a Redis that stalls: a late heartbeat is not a dead process.

When Redis stops answering for longer than a deadline (two heartbeat
intervals), every node misses its deadline, the living ones too. A node that
has just got Redis back must not take the others' stale deadlines for deaths;
it judges again once its own heartbeats have got through for two intervals.
"""

from __future__ import annotations

import asyncio
import time
from typing import Iterator

import pytest
import redis.asyncio as aioredis

from tornado_push.pubsub.presence import Member
from tornado_push.pubsub.redis.state import RedisState
from tornado_push.pubsub.state import Orphan

# A node only reaps while its own heartbeats land within an interval of each
# other; at 0.3 s, a loaded CI machine's loop stalls kept resetting that.
HEARTBEAT = 1.0


@pytest.fixture
def two_nodes(io_loop, fresh_redis) -> Iterator[tuple[RedisState, RedisState]]:
    """Two started nodes on one fresh Redis, each beating every ``HEARTBEAT`` seconds."""
    client = aioredis.from_url(fresh_redis.url)
    nodes = (RedisState(client, prefix="test", heartbeat_interval=HEARTBEAT),
             RedisState(client, prefix="test", heartbeat_interval=HEARTBEAT))
    for node in nodes:
        io_loop.run_sync(node.start)
    yield nodes
    for node in nodes:
        io_loop.run_sync(node.close)
    io_loop.run_sync(client.aclose)


@pytest.mark.gen_test(timeout=20)
async def test_node_back_from_a_redis_stall_reaps_nobody_until_it_has_beaten_for_a_deadline(
        fresh_redis, two_nodes):
    reaper, other = two_nodes
    await other.join("1", "presence-room", f"{other.node_id}.1", Member("bob"))
    # The other node's next heartbeat is late: it has not reached Redis yet when the
    # reaper looks, as happens to some node whenever a stall ends.
    other._heartbeat.cancel()
    fresh_redis.pause()
    await asyncio.sleep(3 * HEARTBEAT)  # the stall outlasts every deadline
    fresh_redis.resume()
    resumed = time.monotonic()

    assert await reaper.reap() == []
    assert await reaper.members("1", "presence-room") == {"bob": None}

    # A node that stays silent is still reaped, once the reaper's own heartbeats
    # have got through for two intervals.
    orphans = await reaped_soon(reaper)
    assert time.monotonic() - resumed >= 2 * HEARTBEAT
    assert [orphan.departure.removed_user for orphan in orphans] == ["bob"]


@pytest.mark.gen_test(timeout=20)
async def test_a_reaped_node_learns_it_once_when_it_comes_back(two_nodes):
    survivor, paused = two_nodes
    await paused.join("1", "presence-room", f"{paused.node_id}.1", Member("alice"))
    paused._heartbeat.cancel()  # frozen, not dead: it will be back
    await reaped_soon(survivor)
    assert await paused.was_reaped() is True
    assert await paused.was_reaped() is False  # told once
    assert await survivor.was_reaped() is False


async def reaped_soon(reaper: RedisState) -> list[Orphan]:
    """What ``reaper`` reaps in its first round that finds anything; bounded by the
    test's timeout (a reap round is one call)."""
    while True:
        await asyncio.sleep(HEARTBEAT / 3)
        orphans = await reaper.reap()
        if orphans:
            return orphans
