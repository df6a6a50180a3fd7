"""Liveness and capacity: server pings, 4201 on silence, 4100 when the process is full."""

from __future__ import annotations

import json

import pytest

from tornado_push.pubsub.hub import HubOptions


CAPACITY = 4


@pytest.fixture
def hub_options() -> HubOptions:
    return HubOptions(activity_timeout=0.2, pong_timeout=0.2, max_connections=CAPACITY)


@pytest.mark.gen_test(timeout=10)
async def test_connection_established_tells_the_activity_timeout(raw):
    socket = await raw(established=False)
    frame = await socket.receive()
    assert json.loads(frame["data"])["activity_timeout"] == 0.2


@pytest.mark.gen_test(timeout=10)
async def test_silent_client_is_pinged_then_closed_4201(raw):
    socket = await raw()
    await socket.expect("pusher:ping")
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4201
    assert await socket.closed() == 4201


@pytest.mark.gen_test(timeout=10)
async def test_client_that_answers_pings_stays_connected(raw):
    socket = await raw()
    for _ in range(3):  # each round outlasts the pong timeout
        await socket.expect("pusher:ping")
        await socket.send({"event": "pusher:pong", "data": {}})
    await socket.send({"event": "pusher:ping", "data": {}})
    await socket.expect("pusher:pong")


@pytest.mark.gen_test(timeout=10)
async def test_websocket_level_ping_counts_as_activity(raw):
    socket = await raw()
    for _ in range(3):
        await socket.expect("pusher:ping")
        await socket.barrier()  # a protocol-level ping, answered by the server's WebSocket layer
    frame = await socket.receive()
    assert frame["event"] == "pusher:ping", frame


@pytest.mark.gen_test(timeout=10)
async def test_full_process_refuses_with_4100_until_a_connection_leaves(raw, hub):
    sockets = [await raw() for _ in range(CAPACITY)]
    refused = await raw(established=False)
    error = await refused.receive()
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4100
    assert await refused.closed() == 4100
    sockets[0].close()
    await sockets[1].barrier()
    while hub.connection_count == CAPACITY:  # the close reaches the server on its own time
        await sockets[1].barrier()
    await raw()  # admitted again
