"""A history store that cannot be reached: publishes refused with 503, nothing delivered.

The hub keeps its history in a real Redis (``fresh_redis``) that the tests stop
and start again; the broker is the in-process one, so only the store is away.
"""

from __future__ import annotations

import json

import pusher.errors
import pytest

from conftest import MAIN, in_thread
from history_client import HistoryClient, numbers
from tornado_push.pubsub.history.redis import RedisHistoryStore
from tornado_push.pubsub.redis.client import RedisConfig, connect


@pytest.fixture
def history_store(fresh_redis) -> RedisHistoryStore:
    """Overrides conftest's: history in a Redis of the test's own."""
    return RedisHistoryStore(connect(RedisConfig(url=fresh_redis.url)), prefix="outage")


@pytest.mark.gen_test(timeout=30)
async def test_a_publish_the_store_cannot_take_is_refused_with_503_and_never_delivered(
        server_port, sdk, fresh_redis):
    client = await HistoryClient.open(server_port)
    await client.subscribe("history-room")
    await in_thread(sdk.trigger, "history-room", "message", {"n": 1})
    assert numbers(await client.events("history-room", 1)) == [1]

    fresh_redis.stop()
    with pytest.raises(pusher.errors.PusherBadStatus, match="503") as refused:
        await in_thread(sdk.trigger, "history-room", "message", {"n": 2})
    assert "Service unavailable: Redis is unreachable" in str(refused.value)
    await in_thread(sdk.trigger, "news", "message", {"n": 0})  # channels without history go on

    await in_thread(fresh_redis.start)  # empty: the channel's history starts a new epoch
    await in_thread(sdk.trigger, "history-room", "message", {"n": 3})
    lost = await client.socket.expect("pusher_internal:continuity_lost")
    assert json.loads(lost["data"])["reason"] == "epoch_changed"
    frame = await client.socket.expect("message")  # the first since n=1: n=2 never came
    assert json.loads(frame["data"]) == {"n": 3} and frame["offset"] == 1


@pytest.mark.gen_test(timeout=30)
async def test_subscribing_to_a_history_channel_while_the_store_is_away_is_refused_with_503(
        server_port, fresh_redis):
    fresh_redis.stop()
    client = await HistoryClient.open(server_port, MAIN)
    await client.socket.send({"event": "pusher:subscribe", "data": {"channel": "history-room"}})
    error = await client.socket.expect("pusher:subscription_error")
    assert json.loads(error["data"])["status"] == 503
