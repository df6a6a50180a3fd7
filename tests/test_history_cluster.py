"""History across ``python server.py`` processes on one Redis: resume anywhere, in order.

The processes run the default app (conftest's ``MAIN``) with history on
``history-*`` channels, stored in Redis unless a test gives them MongoDB.
Clients are :class:`history_client.HistoryClient`, which checks that every
offset follows the last one it saw, through replays and live messages alike.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import tornado.web

from app_server import auth_routes, sdk_client
from conftest import MAIN, in_thread
from history_client import HistoryClient, numbers
from server_processes import ServerProcess

#: History channels; a stop does not hold the departures of clients left connected.
HISTORY = {"PUSH_APP_HISTORY_CHANNELS": "history-*,private-history-*", "PUSH_DRAIN_GRACE": "0"}


@pytest.fixture
def app() -> tornado.web.Application:
    """Overrides conftest's: no in-process hub (the servers are subprocesses)."""
    return tornado.web.Application(auth_routes([MAIN]))


async def publish(server: ServerProcess, channel: str, *ns: int) -> None:
    """SDK triggers through ``server``, one after the other."""
    client = sdk_client(MAIN, server.port)
    for n in ns:
        await in_thread(client.trigger, channel, "message", {"n": n})


async def client_that_received(server: ServerProcess, *ns: int,
                               publisher: ServerProcess) -> HistoryClient:
    """A client on ``server``, subscribed to ``history-room``, that has received the
    numbers ``ns``, published through ``publisher``."""
    client = await HistoryClient.open(server.port)
    await client.subscribe("history-room")
    await publish(publisher, "history-room", *ns)
    await client.events("history-room", len(ns))
    return client


async def resumes_exactly(client: HistoryClient, server: ServerProcess, missed: list[int], *,
                          publisher: ServerProcess) -> None:
    """Reopened on ``server``, ``client`` resumes ``history-room`` with exactly the
    ``missed`` numbers, then gets the next one, published through ``publisher``, live."""
    client = await client.reopen(server.port)
    resumed = await client.subscribe("history-room")
    assert (resumed.outcome, numbers(resumed.replayed)) == ("resume_succeeded", missed)
    await publish(publisher, "history-room", missed[-1] + 1)
    assert numbers(await client.events("history-room", 1)) == [missed[-1] + 1]


async def redis_restarted(redis: Any, servers: list[ServerProcess]) -> None:
    """Restart Redis empty; return once every process has reconnected to it."""
    marks = [server.mark() for server in servers]
    await in_thread(redis.restart)
    for server, mark in zip(servers, marks):
        await server.wait_for_log("subscriber reconnected", after=mark, timeout=15)


@pytest.mark.gen_test(timeout=60)
async def test_resume_on_another_process_gets_exactly_the_missed_messages(
        redis_server, server_processes):
    first, second = await server_processes(2, PUSH_REDIS_URL=redis_server.url, **HISTORY)
    client = await client_that_received(first, 1, 2, publisher=second)
    client.close()
    await publish(first, "history-room", 3, 4, 5)
    await resumes_exactly(client, second, [3, 4, 5], publisher=first)


@pytest.mark.gen_test(timeout=60)
async def test_resume_after_the_process_was_killed_gets_exactly_the_missed_messages(
        redis_server, server_processes):
    doomed, survivor = await server_processes(2, PUSH_REDIS_URL=redis_server.url, **HISTORY)
    client = await client_that_received(doomed, 1, publisher=survivor)
    assert await doomed.kill() == -9
    await client.socket.closed()  # the connection dropped with the process (no close code)
    await publish(survivor, "history-room", 2, 3)
    await resumes_exactly(client, survivor, [2, 3], publisher=survivor)


@pytest.mark.gen_test(timeout=60)
async def test_publishers_on_several_processes_reach_every_client_in_offset_order(
        redis_server, server_processes):
    servers = await server_processes(2, PUSH_REDIS_URL=redis_server.url, **HISTORY)
    clients = [await HistoryClient.open(server.port) for server in servers]
    for client in clients:
        await client.subscribe("history-busy")
    # Each process publishes its own numbers at the same time as the other.
    await asyncio.gather(*(publish(server, "history-busy", *range(start, 120, 2))
                           for start, server in enumerate(servers)))
    for client in clients:
        frames = await client.events("history-busy", 120)  # offsets 1..120, none skipped
        assert sorted(numbers(frames)) == list(range(120))
        assert [frame["offset"] for frame in frames] == list(range(1, 121))


@pytest.mark.gen_test(timeout=60)
async def test_after_redis_restarts_empty_history_in_redis_cannot_be_recovered(
        fresh_redis, server_processes):
    first, second = await server_processes(2, PUSH_REDIS_URL=fresh_redis.url, **HISTORY)
    away = await HistoryClient.open(first.port)
    staying = await HistoryClient.open(second.port)
    for client in (away, staying):
        await client.subscribe("history-room")
    await publish(first, "history-room", 1)
    for client in (away, staying):
        await client.events("history-room", 1)
    away.close()
    await redis_restarted(fresh_redis, [first, second])
    # The connected client is told its history is gone, then messages go on.
    lost = await staying.socket.expect("pusher_internal:continuity_lost", timeout=10)
    assert lost["channel"] == "history-room"
    await publish(first, "history-room", 2)
    frame = await staying.socket.expect("message")
    assert frame["epoch"] != staying.positions["history-room"][0]
    # The client that was away cannot resume: the epoch it knew is gone.
    away = await away.reopen(second.port)
    resumed = await away.subscribe("history-room")
    assert resumed.outcome == "resume_failed" and resumed.replayed == []
    assert resumed.outcome_data["reason"] == "epoch_changed"
    await publish(second, "history-room", 3)
    assert numbers(await away.events("history-room", 1)) == [3]


@pytest.mark.gen_test(timeout=90)
async def test_history_in_mongodb_survives_a_redis_restart(
        fresh_redis, mongo_server, server_processes):
    first, second = await server_processes(
        2, PUSH_REDIS_URL=fresh_redis.url, PUSH_MONGO_URL=mongo_server.url,
        PUSH_MONGO_DATABASE=f"resume_{uuid.uuid4().hex[:8]}", **HISTORY)
    client = await HistoryClient.open(first.port)
    await client.subscribe("history-room")
    await publish(first, "history-room", 1)
    await client.events("history-room", 1)
    client.close()
    await publish(second, "history-room", 2)
    await redis_restarted(fresh_redis, [first, second])
    await publish(second, "history-room", 3)
    client = await client.reopen(first.port)
    resumed = await client.subscribe("history-room")
    assert (resumed.outcome, numbers(resumed.replayed)) == ("resume_succeeded", [2, 3])
    await publish(second, "history-room", 4)
    assert numbers(await client.events("history-room", 1)) == [4]
