"""A cluster-state write Redis carried out but never answered, then retried.

A closed connection's leaves and sign-out are retried until Redis answers
(pubsub/writes.py), and so are an unsubscribe's leave and the undoing of a join
whose answer never came (Hub._owe_leave). When the first attempt ran and only its
answer was lost, the retry finds the subscription gone already; it must still
report the departure that attempt made, or nobody sends ``channel_vacated`` and
``member_removed`` (the app would think the channel occupied and the user present
for good), and the channel stays in the channel index. A join carried out
unanswered would leave a member nobody's connection holds.

The hub's cluster state reaches a real redis-server through
:class:`ReplyDroppingProxy`, which lets commands through and drops Redis's
answers while told to; its broker connects directly, so delivery is untouched.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import tornado.web

from app_server import auth_routes
from conftest import MAX_MESSAGE_BYTES, subscribed, until
from pusherjs import JSClient
from redis_proxy import ReplyDroppingProxy
from tornado_push.embed import make_poster
from tornado_push.handlers import routes
from tornado_push.pubsub.apps import App, AppRegistry, WebhookTarget
from tornado_push.pubsub.hub import Hub, HubOptions
from tornado_push.pubsub.redis.broker import RedisBroker
from tornado_push.pubsub.redis.client import RedisConfig, connect as connect_redis
from tornado_push.pubsub.redis.state import RedisState
from tornado_push.pubsub.webhooks import WebhookOptions, Webhooks
from webhook_receiver import WebhookReceiver, receiver  # noqa: F401 (fixture)

#: The state's Redis deadline: a lost answer fails the write this quickly.
DEADLINE = 0.3
FAST = WebhookOptions(batch_seconds=0.05, leave_delay=0.3, first_retry=0.1, retry_for=5)
PREFIX = "unanswered"


@pytest.fixture
def hooked(receiver: WebhookReceiver) -> App:
    app = App(id="31", key="unanswered-key", secret="unanswered-secret",
              webhooks=(WebhookTarget(receiver.url("hooks")),))
    receiver.trust(app)
    return app


@pytest.fixture
def proxy(io_loop, fresh_redis) -> ReplyDroppingProxy:
    proxy = io_loop.run_sync(lambda: ReplyDroppingProxy.start(fresh_redis.port))
    yield proxy
    io_loop.run_sync(proxy.close)


@pytest.fixture
def hub(io_loop, hooked: App, fresh_redis, proxy: ReplyDroppingProxy,
        hub_options: HubOptions) -> Hub:
    direct = RedisConfig(url=fresh_redis.url)
    through_proxy = RedisConfig(url=proxy.url, timeout=DEADLINE)
    hub = Hub(AppRegistry([hooked]), broker=RedisBroker(direct),
              state=RedisState(connect_redis(through_proxy), prefix=PREFIX),
              options=hub_options, webhooks=Webhooks(make_poster(5), options=FAST))
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@pytest.fixture
def app(hub: Hub, hooked: App) -> tornado.web.Application:
    return tornado.web.Application(routes(hub) + auth_routes([hooked]),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


@pytest.fixture
def redis(io_loop, fresh_redis) -> aioredis.Redis:
    """The test's own client, straight to Redis: what the cluster state holds."""
    client = aioredis.from_url(fresh_redis.url)
    yield client
    io_loop.run_sync(client.aclose)


def key(app: App, channel: str, kind: str) -> str:
    return f"{PREFIX}:{{{app.id}:{channel}}}:{kind}"


def index(app: App) -> str:
    return f"{PREFIX}:{{{app.id}}}:channels"


async def alice_with_scripts_loaded(connect, receiver: WebhookReceiver, hooked: App) -> JSClient:
    """Alice, connected after a subscribe and an unsubscribe: Redis has run the join and
    leave scripts once, so later calls run at once rather than answer NOSCRIPT first
    (an answer lost too, and the script would not have run)."""
    alice = await connect("alice", app=hooked, user="alice")
    await subscribed(alice, "warm-up")
    await alice.unsubscribe("warm-up")
    await receiver.events_until("hooks", "channel_vacated", channel="warm-up")
    return alice


async def until_subscribers(redis: aioredis.Redis, subs: str, count: int,
                            timeout: float = 5.0) -> None:
    """Poll Redis until the channel ``subs`` names has ``count`` subscribers."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await redis.hlen(subs) != count:
        assert asyncio.get_running_loop().time() < deadline, f"never {count} in {subs}"
        await asyncio.sleep(0.02)


async def answers_lost_after_a_timeout(proxy: ReplyDroppingProxy) -> None:
    """Once the hub's write has timed out: its retry starts on a new connection, whose
    HELLO is unanswered too. Then answers flow again."""
    await until(lambda: any(b"HELLO" in sent for sent in proxy.sent_unanswered))
    proxy.dropping = False


@pytest.mark.gen_test(timeout=40)
async def test_a_leave_carried_out_unanswered_is_still_announced_when_retried(
        connect, receiver: WebhookReceiver, hooked: App, redis, proxy: ReplyDroppingProxy):
    alice = await alice_with_scripts_loaded(connect, receiver, hooked)
    await subscribed(alice, "presence-room")  # left first (subscription order)
    await subscribed(alice, "news")
    await receiver.events_until("hooks", "member_added", user_id="alice")
    assert await redis.sismember(index(hooked), "presence-room")

    proxy.dropping = True
    await alice.disconnect()
    # The leave runs in Redis (alice is off the channel there), but its answer is lost.
    await until_subscribers(redis, key(hooked, "presence-room", "subs"), 0)
    await answers_lost_after_a_timeout(proxy)

    events = await receiver.events_until("hooks", "channel_vacated", channel="news", timeout=15)
    assert {"name": "member_removed", "channel": "presence-room",
            "user_id": "alice"} in events, events
    assert {"name": "channel_vacated", "channel": "presence-room"} in events, events
    assert not await redis.sismember(index(hooked), "presence-room")
    assert not await redis.sismember(index(hooked), "news")


@pytest.mark.gen_test(timeout=40)
async def test_an_unsubscribe_carried_out_unanswered_is_announced_and_then_joinable(
        connect, receiver: WebhookReceiver, hooked: App, redis, proxy: ReplyDroppingProxy):
    alice = await alice_with_scripts_loaded(connect, receiver, hooked)
    await subscribed(alice, "presence-room")
    await receiver.events_until("hooks", "member_added", user_id="alice")

    proxy.dropping = True
    await alice.unsubscribe("presence-room")
    await until_subscribers(redis, key(hooked, "presence-room", "subs"), 0)
    await answers_lost_after_a_timeout(proxy)
    events = await receiver.events_until("hooks", "channel_vacated", channel="presence-room",
                                         timeout=15)
    assert events == [{"name": "member_removed", "channel": "presence-room", "user_id": "alice"},
                      {"name": "channel_vacated", "channel": "presence-room"}]
    assert not await redis.sismember(index(hooked), "presence-room")
    # The owed leave is recorded: the connection joins again as usual.
    await subscribed(alice, "presence-room")
    assert await redis.hlen(key(hooked, "presence-room", "subs")) == 1
    assert error_events(alice) == []


@pytest.mark.gen_test(timeout=40)
async def test_a_join_carried_out_unanswered_is_taken_back(
        connect, receiver: WebhookReceiver, hooked: App, redis, proxy: ReplyDroppingProxy):
    # Only the channel's own commands lose their answers: the join registers the
    # subscription for reaping first, and that answer must come for the script to run.
    alice = await alice_with_scripts_loaded(connect, receiver, hooked)
    proxy.losing_answers_to = b"{%s:lost}:subs" % hooked.id.encode()
    await alice.subscribe("lost")
    # Recorded in Redis, but the hub never heard: alice is refused, as when Redis is
    # away, and the hub owes the channel a leave.
    await until_subscribers(redis, key(hooked, "lost", "subs"), 1)
    refused = await alice.expect(type="channel_event", channel="lost",
                                 event="pusher:subscription_error")
    assert refused["data"]["status"] == 503
    await alice.subscribe("news")  # refused at once while that join is not taken back
    refused = await alice.expect(type="channel_event", channel="news",
                                 event="pusher:subscription_error")
    assert "not recorded yet" in refused["data"]["error"]
    proxy.losing_answers_to = None

    # Nothing is left of the join: no subscriber, the channel not listed.
    await until_subscribers(redis, key(hooked, "lost", "subs"), 0, timeout=15)
    assert not await redis.sismember(index(hooked), "lost")
    # Redis did occupy it: the undoing vacates it (the leave is then recorded).
    await receiver.events_until("hooks", "channel_vacated", channel="lost")
    await alice.send_raw("pusher:subscribe", {"channel": "lost"})  # and joins it for real
    await alice.expect(type="message", event="pusher_internal:subscription_succeeded",
                       channel="lost")
    assert await redis.hgetall(key(hooked, "lost", "subs")) == {socket_id(alice).encode(): b"1"}
    assert await redis.sismember(index(hooked), "lost")


def error_events(client: JSClient) -> list:
    return client.seen(type="channel_event", event="pusher:subscription_error")


def socket_id(client: JSClient) -> str:
    return client.seen(type="connected")[0]["socket_id"]
