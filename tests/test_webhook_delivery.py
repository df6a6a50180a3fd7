"""Webhook delivery without a hub: batching, retries, the bounded queue, filtering, closing.

Most tests post with the server's own Tornado poster to a real receiver;
a fake poster holds deliveries back or fails them where a test needs that.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tornado_push.pubsub.apps import App, WebhookTarget
from tornado_push.pubsub.presence import Member
from tornado_push.pubsub.state import MemoryState
from tornado_push.pubsub.webhooks import WebhookOptions, Webhooks
from tornado_push.embed import make_poster
from webhook_receiver import receiver  # noqa: F401 (fixture)

FAST = WebhookOptions(batch_seconds=0.02, leave_delay=0.2, first_retry=0.05, retry_for=5)


def hooked_app(*targets: WebhookTarget) -> App:
    return App(id="31", key="unit-key", secret="unit-secret", webhooks=targets)


@pytest.fixture
def webhooks(io_loop) -> Webhooks:
    webhooks = Webhooks(make_poster(2.0), options=FAST)
    io_loop.run_sync(webhooks.start)
    yield webhooks
    io_loop.run_sync(webhooks.close)


class FakePoster:
    """Records each POST's channels; answers 500 to batches naming a ``failing`` channel.

    With ``held=True`` every POST waits until the test sets ``released``.
    """

    def __init__(self, *, held: bool = False, failing: tuple[str, ...] = ()) -> None:
        self.released = asyncio.Event()
        if not held:
            self.released.set()
        self.failing = failing
        self.posts: asyncio.Queue[list[str]] = asyncio.Queue()

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        channels = [event["channel"] for event in json.loads(body)["events"]]
        self.posts.put_nowait(channels)
        await self.released.wait()
        return 500 if set(channels) & set(self.failing) else 200

    async def next_channels(self) -> list[str]:
        return await asyncio.wait_for(self.posts.get(), 5)


@pytest.mark.gen_test(timeout=15)
async def test_failed_deliveries_are_retried_with_the_same_batch_in_order(receiver, webhooks):
    app = hooked_app(WebhookTarget(receiver.url("all")))
    receiver.trust(app)
    receiver.fail_next(2)
    webhooks.channel_occupied(app, "one")
    webhooks.cache_miss(app, "two")
    webhooks.client_event(app, "private-three", "client-x", "{}", "1.2", None)
    attempts = [await receiver.next("all") for _ in range(3)]
    assert [attempt.status for attempt in attempts] == [500, 500, 200]
    assert attempts[0].events == attempts[1].events == attempts[2].events
    assert [event["channel"] for event in attempts[2].events] == ["one", "two", "private-three"]
    webhooks.channel_occupied(app, "four")  # later events still follow, after the retried batch
    assert (await receiver.next("all")).events == [{"name": "channel_occupied", "channel": "four"}]


@pytest.mark.gen_test(timeout=15)
async def test_a_batch_still_failing_after_retry_for_is_dropped_and_counted():
    poster = FakePoster(failing=("doomed",))
    webhooks = Webhooks(poster, options=WebhookOptions(
        batch_seconds=0.01, first_retry=0.02, retry_for=0.1))
    app = hooked_app(WebhookTarget("http://hooks.invalid/"))
    webhooks.channel_occupied(app, "doomed")
    assert await poster.next_channels() == ["doomed"]
    webhooks.channel_occupied(app, "later")
    retries = 0
    while (channels := await poster.next_channels()) == ["doomed"]:
        retries += 1
    # One URL's batches go strictly in turn: "later" waited until "doomed" was given up.
    assert channels == ["later"] and retries >= 1
    assert webhooks.stats(app).failed == 1
    await webhooks.close()


@pytest.mark.gen_test(timeout=15)
async def test_full_queue_drops_the_oldest_events_counts_them_and_warns_once(caplog):
    poster = FakePoster(held=True)
    webhooks = Webhooks(poster, options=WebhookOptions(batch_seconds=0.01, queue_size=3))
    app = hooked_app(WebhookTarget("http://hooks.invalid/"))
    webhooks.channel_occupied(app, "c0")
    assert await poster.next_channels() == ["c0"]  # in flight, held: the rest must queue
    with caplog.at_level(logging.WARNING, logger="tornado_push.pubsub.webhooks"):
        for number in range(1, 7):
            webhooks.channel_occupied(app, f"c{number}")
    assert webhooks.stats(app).dropped == 3
    assert len([r for r in caplog.records if "queue" in r.getMessage()]) == 1
    poster.released.set()
    assert await poster.next_channels() == ["c4", "c5", "c6"]
    await webhooks.close()


@pytest.mark.gen_test(timeout=15)
async def test_each_url_receives_only_its_event_types(receiver, webhooks):
    app = hooked_app(WebhookTarget(receiver.url("all")),
                     WebhookTarget(receiver.url("members"),
                                   frozenset({"member_added", "member_removed"})))
    receiver.trust(app)
    webhooks.channel_occupied(app, "presence-room")
    webhooks.member_added(app, "presence-room", "alice")
    assert [event["name"] for event in (await receiver.next("all")).events] == [
        "channel_occupied", "member_added"]
    assert (await receiver.next("members")).events == [
        {"name": "member_added", "channel": "presence-room", "user_id": "alice"}]


@pytest.mark.gen_test(timeout=15)
async def test_each_url_receives_only_the_channels_its_filters_name(receiver, webhooks):
    app = hooked_app(WebhookTarget(receiver.url("all")),
                     WebhookTarget(receiver.url("presence"), channel_name_starts_with="presence-"),
                     WebhookTarget(receiver.url("orders"), channel_name_starts_with="private-",
                                   channel_name_ends_with="-orders"))
    receiver.trust(app)  # every delivery is checked with the official SDK's validate_webhook
    webhooks.channel_occupied(app, "presence-room")
    webhooks.member_added(app, "presence-room", "alice")
    webhooks.client_event(app, "private-shop-orders", "client-paid", "{}", "1.2", None)
    webhooks.client_event(app, "private-orders-archive", "client-x", "{}", "1.2", None)
    webhooks.cache_miss(app, "cache-orders")
    assert [event["channel"] for event in (await receiver.next("all")).events] == [
        "presence-room", "presence-room", "private-shop-orders", "private-orders-archive",
        "cache-orders"]
    assert [(event["name"], event["channel"]) for event in (await receiver.next("presence")).events
            ] == [("channel_occupied", "presence-room"), ("member_added", "presence-room")]
    assert [(event["name"], event["channel"]) for event in (await receiver.next("orders")).events
            ] == [("client_event", "private-shop-orders")]


@pytest.mark.gen_test(timeout=15)
async def test_a_leave_is_sent_after_the_delay_when_nobody_comes_back(receiver, webhooks):
    app = hooked_app(WebhookTarget(receiver.url("all")))
    receiver.trust(app)
    webhooks.member_removed(app, "presence-room", "alice")
    webhooks.channel_vacated(app, "presence-room")
    webhooks.member_added(app, "presence-lobby", "alice")  # another channel: no effect
    assert (await receiver.next("all")).events == [
        {"name": "member_added", "channel": "presence-lobby", "user_id": "alice"}]
    assert (await receiver.next("all")).events == [
        {"name": "member_removed", "channel": "presence-room", "user_id": "alice"},
        {"name": "channel_vacated", "channel": "presence-room"}]


@pytest.mark.gen_test(timeout=15)
async def test_occupancy_and_member_events_the_cluster_state_contradicts_are_not_sent():
    """A leave held here while the channel or user came back through another process,
    or a join whose channel is empty again, is dropped before the POST."""
    poster = FakePoster()
    webhooks = Webhooks(poster, options=FAST)
    webhooks.cluster = state = MemoryState()
    app = hooked_app(WebhookTarget("http://hooks.invalid/"))
    await state.join(app.id, "lobby", "2.1")
    await state.join(app.id, "presence-room", "2.2", Member("alice"))
    webhooks.channel_occupied(app, "news")  # nobody is on news
    webhooks.channel_vacated(app, "lobby")
    webhooks.member_removed(app, "presence-room", "alice")
    webhooks.member_removed(app, "presence-room", "bob")  # true: bob is not there
    webhooks.cache_miss(app, "cache-x")  # states nothing: sent as it is
    posted: list[str] = []
    while "presence-room" not in posted:  # one or two batches, as the machine's speed has it
        posted += await poster.next_channels()
    assert posted == ["cache-x", "presence-room"]
    assert webhooks.stats(app).superseded == 3
    await webhooks.close()


@pytest.mark.gen_test(timeout=15)
async def test_a_retried_batch_is_checked_against_the_cluster_state_again():
    poster = FakePoster(failing=("news",))
    webhooks = Webhooks(poster, options=FAST)
    webhooks.cluster = state = MemoryState()
    app = hooked_app(WebhookTarget("http://hooks.invalid/"))
    await state.join(app.id, "news", "2.1")
    webhooks.channel_occupied(app, "news")
    assert await poster.next_channels() == ["news"]  # answered 500
    await state.leave(app.id, "news", "2.1")
    webhooks.cache_miss(app, "cache-x")
    # The retry finds news empty: nothing of that batch is posted again.
    assert await poster.next_channels() == ["cache-x"]
    assert webhooks.stats(app).superseded == 1
    await webhooks.close()


@pytest.mark.gen_test(timeout=15)
async def test_subscription_counts_are_sent_only_for_apps_that_count(receiver, webhooks):
    target = WebhookTarget(receiver.url("all"))
    counting = App(id="32", key="counting-key", secret="s", subscription_count_events=True,
                   webhooks=(target,))
    receiver.trust(counting)
    webhooks.subscription_count(hooked_app(target), "lobby", 5)
    webhooks.subscription_count(counting, "lobby", 7)
    delivery = await receiver.next("all")
    assert delivery.headers["X-Pusher-Key"] == "counting-key"
    assert delivery.events == [{"name": "subscription_count", "channel": "lobby",
                                "subscription_count": 7}]


@pytest.mark.gen_test(timeout=15)
async def test_apps_without_webhooks_start_no_background_work():
    posted: list[str] = []

    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        posted.append(url)
        return 200

    webhooks = Webhooks(post, options=FAST)
    before = len(asyncio.all_tasks())
    bare = App(id="33", key="bare-key", secret="s", subscription_count_events=True)
    webhooks.channel_occupied(bare, "c")
    webhooks.channel_vacated(bare, "c")
    webhooks.member_removed(bare, "presence-c", "u")
    webhooks.client_event(bare, "private-c", "client-x", "{}", "1.1", "u")
    webhooks.subscription_count(bare, "c", 1)
    assert len(asyncio.all_tasks()) == before
    await webhooks.close()
    assert posted == []


@pytest.mark.gen_test(timeout=15)
async def test_close_drops_pending_and_held_events_and_says_how_many(caplog):
    webhooks = Webhooks(FakePoster(), options=WebhookOptions(batch_seconds=10, leave_delay=10))
    app = hooked_app(WebhookTarget("http://hooks.invalid/"))
    webhooks.channel_occupied(app, "waiting")
    webhooks.channel_vacated(app, "held")
    with caplog.at_level(logging.WARNING, logger="tornado_push.pubsub.webhooks"):
        await webhooks.close()
    assert "2 event(s) undelivered" in caplog.text
    webhooks.channel_occupied(app, "after-close")  # ignored, and no task is started
    assert webhooks.stats(app).delivered == 0


@pytest.mark.gen_test(timeout=15)
async def test_server_poster_reports_an_unreachable_url_as_oserror(receiver):
    port = receiver.port
    await receiver.close()  # nothing listens there any more
    with pytest.raises(OSError):
        await make_poster(2.0)(f"http://127.0.0.1:{port}/hooks/x", b"{}", {})
