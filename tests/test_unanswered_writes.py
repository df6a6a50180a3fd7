"""A cluster-state write Redis carried out but never answered, then retried.

A closed connection's leaves and sign-out are retried until Redis answers
(pubsub/writes.py). When the first attempt ran and only its answer was lost, the
retry finds the subscription gone already; it must still report the departure
that attempt made, or nobody sends ``channel_vacated`` and ``member_removed``
(the app would think the channel occupied and the user present for good) and
the channel would stay in the channel index.

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


async def until_gone(redis: aioredis.Redis, subs: str, timeout: float = 5.0) -> None:
    """Poll Redis until the channel ``subs`` names has no subscriber."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await redis.hlen(subs):
        assert asyncio.get_running_loop().time() < deadline, "the leave never ran in Redis"
        await asyncio.sleep(0.02)


@pytest.mark.gen_test(timeout=40)
async def test_a_leave_carried_out_unanswered_is_still_announced_when_retried(
        connect, receiver: WebhookReceiver, hooked: App, fresh_redis,
        proxy: ReplyDroppingProxy):
    redis = aioredis.from_url(fresh_redis.url)
    subs = f"{PREFIX}:{{{hooked.id}:presence-room}}:subs"
    index = f"{PREFIX}:{{{hooked.id}}}:channels"
    try:
        alice = await connect("alice", app=hooked, user="alice")
        # Redis has run the leave script once, so later calls of it run at once rather
        # than answer NOSCRIPT first (an answer lost too: the script would not have run).
        await subscribed(alice, "warm-up")
        await alice.unsubscribe("warm-up")
        await receiver.events_until("hooks", "channel_vacated", channel="warm-up")
        await subscribed(alice, "presence-room")  # left first (subscription order)
        await subscribed(alice, "news")
        await receiver.events_until("hooks", "member_added", user_id="alice")
        assert await redis.sismember(index, "presence-room")

        proxy.dropping = True
        await alice.disconnect()
        # The leave ran in Redis (alice is off the channel there), but its answer is
        # lost: the hub's write times out, and is retried while answers stay lost.
        await until_gone(redis, subs)
        # The write timed out: its retry starts on a new connection (its HELLO lost too).
        await until(lambda: any(b"HELLO" in sent for sent in proxy.sent_unanswered))
        proxy.dropping = False

        events = await receiver.events_until("hooks", "channel_vacated", channel="news",
                                             timeout=15)
        assert {"name": "member_removed", "channel": "presence-room",
                "user_id": "alice"} in events, events
        assert {"name": "channel_vacated", "channel": "presence-room"} in events, events
        assert not await redis.sismember(index, "presence-room")
        assert not await redis.sismember(index, "news")
    finally:
        proxy.dropping = False
        await redis.aclose()

