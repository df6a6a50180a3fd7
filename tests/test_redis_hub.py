"""The in-process server on the Redis broker and state: bursts and outages seen by clients."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from tornado.httpclient import AsyncHTTPClient

from conftest import APPS
from tornado_push.pubsub.apps import AppRegistry
from tornado_push.pubsub.errors import BrokerUnavailable
from tornado_push.pubsub.hub import Hub, HubOptions
from tornado_push.pubsub.redis.broker import RedisBroker
from tornado_push.pubsub.redis.client import RedisConfig, connect
from tornado_push.pubsub.redis.state import RedisState


@pytest.fixture
def hub(io_loop, fresh_redis, hub_options: HubOptions) -> Hub:
    config = RedisConfig(url=fresh_redis.url, heartbeat_interval=1.0)
    hub = Hub(AppRegistry(APPS), broker=RedisBroker(config),
              state=RedisState(connect(config), heartbeat_interval=1.0), options=hub_options)
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@pytest.mark.gen_test(timeout=60)
async def test_a_burst_of_subscribes_all_succeed(raw):
    """More simultaneous subscribes than Redis connections: they queue, none is refused."""
    sockets = await asyncio.gather(*(raw() for _ in range(150)))
    for socket in sockets:
        await socket.send({"event": "pusher:subscribe", "data": {"channel": "burst"}})
    replies = await asyncio.gather(*(socket.receive() for socket in sockets))
    assert {reply["event"] for reply in replies} == {"pusher_internal:subscription_succeeded"}


@pytest.mark.gen_test(timeout=60)
async def test_redis_outage_refuses_subscribes_with_503_and_keeps_the_connection(raw, fresh_redis, hub):
    socket = await raw()
    fresh_redis.kill()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "x"}})
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    # private-x is refused on its bad signature before Redis is asked.
    assert json.loads((await socket.expect("pusher:subscription_error"))["data"])["status"] == 401
    error = await socket.expect("pusher:subscription_error")
    assert error["channel"] == "news" and json.loads(error["data"])["status"] == 503
    await socket.send({"event": "pusher:ping", "data": {}})
    await socket.expect("pusher:pong")
    # The refused subscription left nothing behind to deliver to.
    assert "news" not in hub._states["1"].channels


@pytest.mark.gen_test(timeout=30)
async def test_a_process_reaped_while_out_of_touch_reconnects_its_clients(raw, hub, fresh_redis):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    # What survivors leave when they reap a process that was only paused.
    client = aioredis.from_url(fresh_redis.url)
    await client.set(f"push:reaped:{hub.node_id}", 1)
    await client.aclose()
    await hub.register_again()
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4200
    assert await socket.closed() == 4200


@pytest.mark.gen_test(timeout=30)
async def test_registering_again_runs_once_at_a_time_and_retries_what_redis_did_not_answer(
        raw, hub, fresh_redis):
    sockets = [await raw() for _ in range(3)]
    for socket in sockets:
        await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
        await socket.expect("pusher_internal:subscription_succeeded")
    client = aioredis.from_url(fresh_redis.url)
    await client.flushall()  # what a Redis restart without persistence does
    await client.aclose()
    # Joins wait for the gate; the first two then fail as a Redis past its deadline would.
    join, calls, failures, gate = hub.state.join, [], [2], asyncio.Event()

    async def held_join(*args, **kwargs):
        calls.append(args)
        await gate.wait()
        if failures[0]:
            failures[0] -= 1
            raise BrokerUnavailable("Redis is unreachable: no answer within 3 s")
        return await join(*args, **kwargs)

    hub.state.join = held_join
    # Both the heartbeat (its node went missing) and the broker's reconnect ask.
    both = asyncio.gather(hub.register_again(), hub.register_again())
    deadline = asyncio.get_running_loop().time() + 10
    while len(calls) < 3:
        assert asyncio.get_running_loop().time() < deadline, calls
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert len(calls) == 3  # one registration, not two
    gate.set()
    await asyncio.wait_for(both, 10)
    assert len(calls) == 5  # the two refused joins were tried again
    assert (await hub.state.counts("1", "news")).subscriptions == 3


@pytest.mark.gen_test(timeout=30)
async def test_health_reports_the_redis_link_and_counts_reconnects(server_port, fresh_redis, hub):
    async def health() -> tuple[int, dict]:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server_port}/health",
                                                 raise_error=False)
        return response.code, json.loads(response.body)

    assert await health() == (200, {"status": "ok", "node": hub.node_id, "connections": 0,
                                    "draining": False, "slow_consumers": 0, "messages_sent": 0,
                                    "broker": {"kind": "redis", "connected": True, "reconnects": 0}})
    lost, back = asyncio.Event(), asyncio.Event()

    async def reconnected() -> None:
        back.set()

    hub._broker.add_disconnect_listener(lambda reason: lost.set())
    hub._broker.add_reconnect_listener(reconnected)
    fresh_redis.kill()
    await asyncio.wait_for(lost.wait(), 10)
    code, body = await health()
    assert code == 503 and body["status"] == "degraded"
    fresh_redis.restart()
    await asyncio.wait_for(back.wait(), 10)
    assert (await health())[1]["broker"] == {"kind": "redis", "connected": True, "reconnects": 1}
