"""Presence across two ``python server.py`` processes on one Redis: events in cluster order.

A user who reconnects to the other process (what nginx does after any drop)
makes two transitions on two processes: the new connection's join and the old
one's leave. Whatever their order, every observer's member list, kept from the
events it receives, must end equal to the cluster's (the HTTP API's), and
the webhooks must leave the app believing the right final state.

"Ended" is proven with a sentinel: once both transitions are recorded (the
channel's subscription count says so), a publication on the channel comes
after every announcement they made, on every process, because an
announcement is published by the transition itself.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient

from app_server import sdk_client
from conftest import MAIN, RawSocket, in_thread
from server_processes import ServerProcess
from test_cluster_processes import receiver  # noqa: F401  (fixture)
from webhook_receiver import WebhookReceiver

CHANNEL = "presence-room"
#: Webhook settings: leaves held long enough that a rejoin elsewhere lands inside the hold.
HELD_WEBHOOKS = {"PUSH_WEBHOOK_LEAVE_DELAY": "1.0", "PUSH_WEBHOOK_BATCH_SECONDS": "0.05"}


# -- clients -----------------------------------------------------------------------------

async def connect(server: ServerProcess) -> RawSocket:
    """A bare WebSocket to ``server``, its ``connection_established`` read."""
    connection = await tornado.websocket.websocket_connect(
        f"ws://127.0.0.1:{server.port}/app/{MAIN.key}?protocol=7")
    socket = RawSocket(connection)
    frame = await socket.receive(timeout=10)
    assert frame is not None and frame["event"] == "pusher:connection_established", frame
    socket.socket_id = json.loads(frame["data"])["socket_id"]
    return socket


async def join(socket: RawSocket, user: str, channel: str = CHANNEL) -> None:
    """Send a presence subscription as ``user``, signed as the app's server would."""
    signed = sdk_client(MAIN, 0).authenticate(channel, socket.socket_id,
                                              {"user_id": user, "user_info": {"name": user}})
    await socket.send({"event": "pusher:subscribe", "data": {
        "channel": channel, "auth": signed["auth"], "channel_data": signed["channel_data"]}})


async def present(server: ServerProcess, user: str) -> RawSocket:
    """A connection to ``server`` that is a member of the channel as ``user``."""
    socket = await connect(server)
    await join(socket, user)
    await socket.expect("pusher_internal:subscription_succeeded", timeout=10)
    return socket


class Observer:
    """A member of the channel that keeps its member list from the events, as pusher-js does."""

    def __init__(self, socket: RawSocket) -> None:
        self.socket = socket
        self.members: set[str] = set()

    @classmethod
    async def on(cls, server: ServerProcess, name: str) -> Observer:
        observer = cls(await connect(server))
        await join(observer.socket, name)
        await observer.until("pusher_internal:subscription_succeeded")
        return observer

    async def until(self, event: str, timeout: float = 10.0) -> None:
        """Apply every presence event up to the next ``event`` (which is applied too)."""
        while True:
            frame = await self.socket.receive(timeout)
            assert frame is not None, f"closed while waiting for {event}"
            data = frame.get("data")
            if frame["event"] == "pusher_internal:subscription_succeeded":
                self.members = set(json.loads(data)["presence"]["ids"])
            elif frame["event"] == "pusher_internal:member_added":
                self.members.add(json.loads(data)["user_id"])
            elif frame["event"] == "pusher_internal:member_removed":
                self.members.discard(json.loads(data)["user_id"])
            if frame["event"] == event:
                return


# -- the cluster's answers ---------------------------------------------------------------

async def cluster_members(server: ServerProcess) -> set[str]:
    users = await in_thread(sdk_client(MAIN, server.port).users_info, CHANNEL)
    return {user["id"] for user in users["users"]}


async def subscriptions(server: ServerProcess, channel: str = CHANNEL) -> int:
    info = await in_thread(sdk_client(MAIN, server.port).channel_info, channel,
                           ["subscription_count"])
    return info.get("subscription_count", 0)


async def poll_until(condition: Callable[[], Awaitable[bool]], what: str,
                     timeout: float = 10.0) -> None:
    """Poll ``condition`` (bounded): for a change that announces nothing, such as a
    connection's leave that removed nobody."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        await asyncio.sleep(0.01)  # a polling period, not synchronisation


async def settled(server: ServerProcess, observers: list[Observer], connections: int) -> None:
    """Wait until the channel has ``connections`` subscriptions (every join and leave
    recorded), then until every observer has seen a sentinel published after them."""
    async def recorded() -> bool:
        return await subscriptions(server) == connections

    await poll_until(recorded, f"{connections} subscriptions on {CHANNEL}")
    await in_thread(sdk_client(MAIN, server.port).trigger, CHANNEL, "sentinel", {})
    for observer in observers:
        await observer.until("sentinel")


# -- handover ----------------------------------------------------------------------------

ROUNDS = 300


@pytest.mark.gen_test(timeout=120)
async def test_observers_lists_stay_right_over_hundreds_of_handovers(
        redis_server, server_processes):
    servers = list(await server_processes(2, PUSH_REDIS_URL=redis_server.url))
    observers = [await Observer.on(server, f"observer-{number}")
                 for number, server in enumerate(servers)]
    old = await present(servers[0], "alice")
    await settled(servers[0], observers, 3)
    wrong: list[tuple[int, str, set[str], set[str]]] = []
    started = time.monotonic()
    for number in range(ROUNDS):
        # alice moves to the other process: new connection first, or old one closed first.
        target = servers[(number + 1) % 2]
        new = await connect(target)
        if number % 2:
            await join(new, "alice")
            await new.expect("pusher_internal:subscription_succeeded", timeout=10)
            old.close()
        else:
            old.close()
            await join(new, "alice")
            await new.expect("pusher_internal:subscription_succeeded", timeout=10)
        old = new
        await settled(target, observers, 3)
        cluster = await cluster_members(target)
        assert "alice" in cluster, f"round {number}: the cluster lost alice"
        for index, observer in enumerate(observers):
            if observer.members != cluster:
                wrong.append((number, f"observer-{index}", observer.members, cluster))
                observer.members = set(cluster)  # count each wrong list once
    elapsed = time.monotonic() - started
    assert not wrong, f"{len(wrong)} wrong list(s) in {ROUNDS} handovers: {wrong[:5]}"
    assert elapsed < 90, f"{ROUNDS} handovers took {elapsed:.1f} s"


# -- churn -------------------------------------------------------------------------------

CHURN_USERS = 5
CHECKPOINTS = 12
STEPS_PER_CHECKPOINT = 24


@pytest.mark.gen_test(timeout=120)
async def test_observers_lists_match_the_cluster_through_churn_over_two_processes(
        redis_server, server_processes):
    servers = list(await server_processes(2, PUSH_REDIS_URL=redis_server.url))
    observers = [await Observer.on(server, f"observer-{number}")
                 for number, server in enumerate(servers)]
    shuffle = random.Random(13)
    sockets: dict[str, list[RawSocket]] = {f"user-{n}": [] for n in range(CHURN_USERS)}

    async def step() -> None:
        """A user opens a connection on either process, drops one, or both at once
        (a reconnect); nobody waits for a close to be recorded."""
        user = shuffle.choice(list(sockets))
        mine = sockets[user]
        leaving = joining = None
        if mine and shuffle.random() < 0.7:
            leaving = mine.pop(shuffle.randrange(len(mine)))
        if not mine or shuffle.random() < 0.7:
            joining = await connect(shuffle.choice(servers))
        if leaving is not None:
            leaving.close()
        if joining is not None:
            await join(joining, user)
            await joining.expect("pusher_internal:subscription_succeeded", timeout=10)
            mine.append(joining)

    started = time.monotonic()
    wrong = []
    for checkpoint in range(CHECKPOINTS):
        for _ in range(STEPS_PER_CHECKPOINT // 4):
            await asyncio.gather(*(step() for _ in range(4)))
        connections = sum(len(mine) for mine in sockets.values()) + len(observers)
        await settled(servers[checkpoint % 2], observers, connections)
        cluster = await cluster_members(servers[0])
        assert cluster == {user for user, mine in sockets.items() if mine} | {
            f"observer-{number}" for number in range(len(observers))}
        for number, observer in enumerate(observers):
            if observer.members != cluster:
                wrong.append((checkpoint, number, observer.members ^ cluster))
                observer.members = set(cluster)
    assert not wrong, f"wrong lists (checkpoint, observer, difference): {wrong}"
    assert time.monotonic() - started < 90


# -- webhooks ----------------------------------------------------------------------------

class AppView:
    """What the app believes from its webhooks, applied in the order they arrive."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver
        self.occupied: set[str] = set()
        self.members: set[tuple[str, str]] = set()

    async def until(self, name: str, channel: str, timeout: float = 10.0) -> None:
        """Apply every accepted webhook event up to the first ``name`` on ``channel``."""
        events = await self.receiver.events_until("hooks", name, timeout, channel=channel)
        for event in events:
            key = event["channel"]
            if event["name"] == "channel_occupied":
                self.occupied.add(key)
            elif event["name"] == "channel_vacated":
                self.occupied.discard(key)
            elif event["name"] == "member_added":
                self.members.add((key, event["user_id"]))
            elif event["name"] == "member_removed":
                self.members.discard((key, event["user_id"]))

    async def flushed(self, server: ServerProcess, marker: RawSocket) -> None:
        """Every webhook ``server`` holds or has queued has been sent or dropped:
        its marker channel's vacated, held as long, comes after them."""
        name = f"marker-{server.port}"
        marker.close()
        await self.until("channel_vacated", name)


async def subscribe(socket: RawSocket, channel: str) -> None:
    await socket.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    await socket.expect("pusher_internal:subscription_succeeded", timeout=10)


@pytest.mark.gen_test(timeout=90)
async def test_webhooks_leave_the_app_with_the_cluster_state_after_a_handover(
        redis_server, receiver, server_processes):
    first, second = await server_processes(2, PUSH_REDIS_URL=redis_server.url,
                                           PUSH_APP_WEBHOOKS=receiver.url("hooks"),
                                           **HELD_WEBHOOKS)
    view = AppView(receiver)

    async def marker(server: ServerProcess) -> RawSocket:
        socket = await connect(server)
        await subscribe(socket, f"marker-{server.port}")
        await view.until("channel_occupied", f"marker-{server.port}")
        return socket

    async def absent_from_the_cluster() -> bool:
        info = await in_thread(sdk_client(MAIN, second.port).channel_info, "news")
        return not info["occupied"] and "alice" not in await cluster_members(second)

    old = await present(first, "alice")
    await subscribe(old, "news")
    await view.until("channel_occupied", "news")  # after alice's member_added: one process
    assert ("news" in view.occupied, (CHANNEL, "alice") in view.members) == (True, True)

    # alice drops off the first process; the cluster records her leave there (its
    # webhooks are held), and she comes back through the second within the hold.
    first_marker = await marker(first)
    old.close()
    await poll_until(absent_from_the_cluster, "alice's leave recorded")
    new = await present(second, "alice")
    await subscribe(new, "news")
    await view.until("channel_occupied", "news")
    await view.flushed(first, first_marker)
    assert "news" in view.occupied and (CHANNEL, "alice") in view.members

    # She leaves for good: the app ends believing it.
    second_marker = await marker(second)
    new.close()
    await view.flushed(second, second_marker)
    assert "news" not in view.occupied and (CHANNEL, "alice") not in view.members


# -- a process killed ----------------------------------------------------------------------

#: A longer heartbeat than the other tests', so that the margin below is small beside it.
BEAT = 2.0


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_process_is_reaped_when_its_deadline_passes(redis_server, server_processes):
    """Members of a process killed with SIGKILL are removed within two heartbeats of its
    last one, so within two of its death: as its deadline passes, not up to an interval later."""
    survivor, *doomed = await server_processes(3, PUSH_REDIS_URL=redis_server.url,
                                               PUSH_NODE_HEARTBEAT=str(BEAT))
    started = time.monotonic()
    observer = await Observer.on(survivor, "observer")
    members = {f"doomed-{number}": server for number, server in enumerate(doomed)}
    for user, server in members.items():
        await present(server, user)
    await settled(survivor, [observer], 3)
    nodes = {user: json.loads((await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/health")).body)["node"] for user, server in members.items()}
    # A survivor reaps only once its own heartbeats have got through for two intervals,
    # and the doomed processes' deadlines are at least 5/3 of one away: the survivor
    # must have run a third of an interval by the kill (a whole one, for a loaded machine).
    await asyncio.sleep(max(0.0, started + BEAT - time.monotonic()))

    client = aioredis.from_url(redis_server.url)
    nodes_key = f"{survivor.env['PUSH_REDIS_PREFIX']}:nodes"

    async def deadline(user: str) -> float:
        return await client.zscore(nodes_key, nodes[user])

    first, second = members
    killed_at = {first: time.time()}
    await members[first].kill()
    deadlines = {first: await deadline(first)}
    # The second dies just after a heartbeat that puts its deadline a quarter to three
    # quarters of an interval after the first's. A reaper that looks once an interval,
    # whatever its phase, is then over a quarter of an interval late for one of them.
    while await deadline(second) < deadlines[first] + BEAT / 4:
        await asyncio.sleep(0.01)  # a polling period: heartbeats announce nothing
    killed_at[second] = time.time()
    await members[second].kill()
    deadlines[second] = await deadline(second)
    await client.aclose()
    assert BEAT / 4 <= deadlines[second] - deadlines[first] <= 3 * BEAT / 4, deadlines
    removed_at: dict[str, float] = {}
    while len(removed_at) < len(members):
        await observer.until("pusher_internal:member_removed", timeout=4 * BEAT)
        for user in set(members) - observer.members - set(removed_at):
            removed_at[user] = time.time()

    for user in members:
        assert deadlines[user] - killed_at[user] <= 2 * BEAT
        # Reaped as the deadline passed (before: up to an interval later, 40.6 s after a
        # kill with the defaults). The margin is for a loaded machine.
        assert removed_at[user] - deadlines[user] < BEAT / 4, (user, removed_at, deadlines)
        assert removed_at[user] - killed_at[user] < 2 * BEAT + BEAT / 4
