"""A stalled Redis (SIGSTOP) under signed HTTP publishes: the command deadline holds.

The server is the in-process one (publishes through the HTTP front), on a
real redis-server of the test's own that is paused by its PID. Its Redis
deadline is short (:data:`DEADLINE`) so that a stall a few seconds longer
shows what clients see: every publish is answered within the deadline, none
with 200 after it, those in the stall with 503, and after SIGCONT
publishing and delivery work again with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import pytest
import redis.exceptions

from conftest import APPS
from test_http_front import Client, publish
from tornado_push.pubsub.apps import AppRegistry
from tornado_push.pubsub.history.redis import RedisHistoryStore
from tornado_push.pubsub.hub import Hub, HubOptions
from tornado_push.pubsub.redis.broker import RedisBroker
from tornado_push.pubsub.redis.client import RedisConfig, connect
from tornado_push.pubsub.redis.state import RedisState

#: The Redis command deadline of the server under test (PUSH_REDIS_TIMEOUT).
DEADLINE = 1.0
#: What an answer may take beyond the deadline on a loaded test machine.
MARGIN = 1.0
#: How long Redis stays stopped: longer than the deadline, and than the
#: subscriber's PING (every heartbeat, answered within the deadline) needs to notice.
STALL = 3.5
#: Publishers at once, each on its own keep-alive connection: a plain and a history channel.
PUBLISHERS = {"news": 4, "history-news": 2}


@pytest.fixture
def redis_config(fresh_redis) -> RedisConfig:
    return RedisConfig(url=fresh_redis.url, heartbeat_interval=1.0, timeout=DEADLINE)


@pytest.fixture
def history_store(redis_config: RedisConfig) -> RedisHistoryStore:
    return RedisHistoryStore(connect(redis_config), prefix="stall")


@pytest.fixture
def hub(io_loop, redis_config: RedisConfig, history_store, hub_options: HubOptions) -> Hub:
    hub = Hub(AppRegistry(APPS), broker=RedisBroker(redis_config),
              state=RedisState(connect(redis_config), heartbeat_interval=1.0),
              options=hub_options, history=history_store)
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@dataclass
class Answered:
    number: int
    channel: str
    sent: float
    answered: float
    status: int

    @property
    def took(self) -> float:
        return self.answered - self.sent


class Publishers:
    """Signed publishes, back to back on each connection, every answer timed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[Answered] = []
        self._numbers = iter(range(1_000_000))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._publish(channel))
                       for channel, count in PUBLISHERS.items() for _ in range(count)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def acknowledged(self, since: float = 0.0) -> set[int]:
        return {answer.number for answer in self.answers
                if answer.status == 200 and answer.sent >= since}

    async def wait_for_acknowledged(self, count: int, since: float, timeout: float = 20.0) -> None:
        """Poll (publishers give no event to await) until ``count`` publishes sent
        after ``since`` got 200."""
        deadline = time.monotonic() + timeout
        while len(self.acknowledged(since)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} publishes succeeded"
            await asyncio.sleep(0.05)

    async def _publish(self, channel: str) -> None:
        client = await Client.connect(self.port)
        try:
            while not self._stop.is_set():
                number = next(self._numbers)
                sent = time.monotonic()
                await client.send(publish(payload={"name": "tick", "channel": channel,
                                                   "data": json.dumps(number)}))
                # Far longer than any bound: the answer's time is what is asserted.
                answer = await client.answer(timeout=60)
                self.answers.append(Answered(number, channel, sent, time.monotonic(),
                                             answer.status))
                if answer.status != 200:
                    await asyncio.sleep(0.05)  # a client's backoff, which keeps the count bounded
        finally:
            client.close()


async def received_numbers(socket, wanted: set[int], timeout: float = 20.0) -> set[int]:
    """The published numbers a subscriber received, read until ``wanted`` are all in."""
    got: set[int] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= got and time.monotonic() < deadline:
        try:
            frame = await socket.receive(timeout=max(0.1, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        assert frame is not None, f"subscriber closed ({socket.close_code})"
        if frame["event"] == "tick":
            got.add(json.loads(frame["data"]))
    return got


async def subscribe(socket, channel: str) -> dict:
    await socket.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    while True:
        frame = await socket.receive(timeout=15)
        assert frame is not None, f"closed ({socket.close_code})"
        if frame["event"] in ("pusher_internal:subscription_succeeded",
                              "pusher:subscription_error") and frame.get("channel") == channel:
            return frame


@pytest.mark.gen_test(timeout=90)
async def test_publishes_in_a_stall_answer_503_within_the_deadline_and_none_acknowledged_is_lost(
        raw, server_port, fresh_redis):
    subscriber = await raw()
    for channel in PUBLISHERS:
        assert (await subscribe(subscriber, channel))["event"].endswith("subscription_succeeded")
    publishers = Publishers(server_port)
    publishers.start()
    try:
        await publishers.wait_for_acknowledged(20, since=0.0)
        paused = time.monotonic()
        fresh_redis.pause()
        await asyncio.sleep(STALL)  # the stall itself: Redis answers nothing meanwhile
        resumed = time.monotonic()
        fresh_redis.resume()
        await publishers.wait_for_acknowledged(20, since=resumed)
    finally:
        fresh_redis.resume()
        await publishers.stop()

    answers = publishers.answers
    assert {answer.status for answer in answers} <= {200, 503}, answers
    slowest = max(answers, key=lambda answer: answer.took)
    assert slowest.took <= DEADLINE + MARGIN, slowest
    late_successes = [answer for answer in answers
                      if answer.status == 200 and answer.took > DEADLINE]
    assert not late_successes
    # Sent and answered while Redis was stopped: nothing could have been acknowledged.
    in_stall = [answer for answer in answers
                if answer.sent >= paused and answer.answered <= resumed]
    assert in_stall and {answer.status for answer in in_stall} == {503}
    # Each publisher was answered again and again during the stall, not held for it.
    assert len(in_stall) >= sum(PUBLISHERS.values()) * int(STALL / (DEADLINE + MARGIN))

    acknowledged = publishers.acknowledged()
    received = await received_numbers(subscriber, acknowledged)
    lost = [answer for answer in answers if answer.number in acknowledged - received]
    # Redis flushes a PUBLISH's reply before the message to subscribers, so a stop
    # between the two acknowledges a message the subscriber connection has not got;
    # that connection is replaced after the stall, and plain pub/sub does not replay.
    # A history channel gets it back from the store.
    in_flight_at_the_stop = [answer for answer in lost if answer.channel == "news"
                             and answer.sent < paused < answer.answered]
    assert lost == in_flight_at_the_stop, (paused, resumed, lost)


@pytest.mark.gen_test(timeout=60)
async def test_a_subscribe_in_a_stall_is_refused_with_503_promptly_and_works_after(
        raw, server_port, fresh_redis):
    socket = await raw()
    fresh_redis.pause()
    try:
        asked = time.monotonic()
        refusal = await subscribe(socket, "stalled")
        took = time.monotonic() - asked
    finally:
        fresh_redis.resume()
    assert refusal["event"] == "pusher:subscription_error"
    assert json.loads(refusal["data"])["status"] == 503
    # The broker's subscription wait and the state's join each have the deadline.
    assert took <= 2 * DEADLINE + MARGIN

    # After SIGCONT the subscriber reconnects; until then subscribes are refused.
    deadline = time.monotonic() + 20
    while (await subscribe(socket, "stalled"))["event"] != "pusher_internal:subscription_succeeded":
        assert time.monotonic() < deadline, "subscribes still refused after the stall"
        await asyncio.sleep(0.2)  # retry, as pusher-js does after a subscription_error
    client = await Client.connect(server_port)
    try:
        await client.send(publish(payload={"name": "tick", "channel": "stalled", "data": "7"}))
        assert (await client.answer()).status == 200
    finally:
        client.close()
    assert await received_numbers(socket, {7}) == {7}


@pytest.mark.gen_test(timeout=60)
async def test_commands_cut_by_the_deadline_leave_no_stale_reply_in_the_pool(
        redis_config, fresh_redis):
    """A command cancelled after it was sent must not leave its late reply on a pooled
    connection, where the next command would read it as its own."""
    client = connect(redis_config)
    try:
        await client.ping()  # connections open on first use
        fresh_redis.pause()
        try:
            started = time.monotonic()
            cut = await asyncio.gather(*(client.echo(f"stalled {n}") for n in range(10)),
                                       return_exceptions=True)
            took = time.monotonic() - started
        finally:
            fresh_redis.resume()
        assert all(isinstance(error, redis.exceptions.TimeoutError) for error in cut), cut
        assert took <= DEADLINE + MARGIN
        replies = await asyncio.gather(*(client.echo(f"after {n}") for n in range(50)))
        assert replies == [f"after {n}".encode() for n in range(50)]
    finally:
        await client.aclose()


@pytest.mark.gen_test(timeout=60)
async def test_leaves_owed_during_a_stall_are_recorded_once_redis_answers(raw, hub, fresh_redis):
    """Connections that close while Redis answers nothing owe it their leaves: each is
    tried again until recorded, so the cluster stops counting them once Redis is back
    (before, a leave past the deadline was dropped and counted the connection forever)."""
    app = APPS[0]
    sockets = [await raw() for _ in range(20)]
    for socket in sockets:
        for channel in ("news", "sport"):
            await socket.send({"event": "pusher:subscribe", "data": {"channel": channel}})
            await socket.expect("pusher_internal:subscription_succeeded")
    assert (await hub.state.counts(app.id, "news")).subscriptions == 20
    fresh_redis.pause()
    try:
        for socket in sockets:
            socket.close()
        deadline = time.monotonic() + 10
        while list(hub.sessions(app)):
            assert time.monotonic() < deadline, "the connections did not close"
            await asyncio.sleep(0.05)
        # What is tested is time passing: the leaves' first attempts reach their deadline.
        await asyncio.sleep(DEADLINE + MARGIN)
    finally:
        fresh_redis.resume()
    deadline = time.monotonic() + 30
    while [(await hub.state.counts(app.id, channel)).subscriptions
           for channel in ("news", "sport")] != [0, 0]:
        assert time.monotonic() < deadline, "leaves were lost"
        await asyncio.sleep(0.1)
