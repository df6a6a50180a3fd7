"""Webhooks end to end: real pusher-js clients, the server, and a real receiving endpoint.

Each test gets its own receiver on a free port and a hub built by
``embed.make_hub`` (so the Tornado poster is the one production uses),
with fast delivery options. Every webhook is checked with the official SDK.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pusher
import pytest
import tornado.web

from app_server import auth_routes
from conftest import MAX_MESSAGE_BYTES
from tornado_push.handlers import routes
from tornado_push.pubsub.apps import App, WebhookTarget
from tornado_push.pubsub.hub import HubOptions
from tornado_push.pubsub.webhooks import WebhookOptions
from tornado_push.embed import make_hub
from tornado_push.settings import Settings
from conftest import subscribed
from webhook_receiver import Delivery, WebhookReceiver, receiver  # noqa: F401 (fixture)

# A leave delay long enough for a few round trips on a loaded machine, short
# enough that the tests that wait for a leave stay quick.
FAST = WebhookOptions(batch_seconds=0.05, leave_delay=0.5, first_retry=0.1, retry_for=5)


@dataclass(frozen=True)
class HookedApps:
    #: Every event type to /hooks/every.
    every: App
    #: Subscription counts on, and its URL takes only those.
    counted: App

    @property
    def all(self) -> list[App]:
        return [self.every, self.counted]


@pytest.fixture
def hooked(receiver: WebhookReceiver) -> HookedApps:
    apps = HookedApps(
        every=App(id="21", key="hooked-key", secret="hooked-secret",
                  webhooks=(WebhookTarget(receiver.url("every")),)),
        counted=App(id="22", key="counted-key", secret="counted-secret",
                    subscription_count_events=True,
                    webhooks=(WebhookTarget(receiver.url("counted"),
                                            frozenset({"subscription_count"})),)))
    receiver.trust(*apps.all)
    return apps


@pytest.fixture
def hub(io_loop, hooked: HookedApps, hub_options: HubOptions):
    """Overrides conftest's: these apps, and webhooks posted by the server's own poster."""
    hub = make_hub(Settings(apps=tuple(hooked.all), hub=hub_options, webhooks=FAST))
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@pytest.fixture
def app(hub, hooked: HookedApps) -> tornado.web.Application:
    return tornado.web.Application(routes(hub) + auth_routes(hooked.all),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


def assert_signed(delivery: Delivery, app: App) -> None:
    """What a Pusher customer's endpoint checks (the receiver ran the SDK's check too)."""
    assert delivery.headers["Content-Type"] == "application/json"
    key, signature = delivery.headers["X-Pusher-Key"], delivery.headers["X-Pusher-Signature"]
    assert key == app.key
    sdk = pusher.Pusher(app_id=app.id, key=app.key, secret=app.secret)
    parsed = sdk.validate_webhook(key, signature, delivery.body)
    assert parsed is not None, "the official SDK refused the webhook"
    assert abs(parsed["time_ms"] - time.time() * 1000) < 5000
    forged = pusher.Pusher(app_id=app.id, key=app.key, secret="not-the-secret")
    assert forged.validate_webhook(key, signature, delivery.body) is None


def socket_id(client) -> str:
    return client.seen(type="connected")[0]["socket_id"]


@pytest.mark.gen_test(timeout=30)
async def test_first_subscriber_occupies_and_last_leaver_vacates_the_channel(
        connect, receiver, hooked):
    a = await connect("a", app=hooked.every)
    await subscribed(a, "news")
    occupied = await receiver.next("every")
    assert occupied.events == [{"name": "channel_occupied", "channel": "news"}]
    assert_signed(occupied, hooked.every)
    await a.unsubscribe("news")
    vacated = await receiver.next("every")
    assert vacated.events == [{"name": "channel_vacated", "channel": "news"}]
    assert_signed(vacated, hooked.every)


@pytest.mark.gen_test(timeout=30)
async def test_presence_users_are_added_and_removed_by_user_id(connect, receiver, hooked):
    alice = await connect("alice", app=hooked.every, user="alice")
    bob = await connect("bob", app=hooked.every, user="bob")
    await subscribed(alice, "presence-room")
    await subscribed(bob, "presence-room")
    events = await receiver.events_until("every", "member_added", user_id="bob")
    assert events == [
        {"name": "channel_occupied", "channel": "presence-room"},
        {"name": "member_added", "channel": "presence-room", "user_id": "alice"},
        {"name": "member_added", "channel": "presence-room", "user_id": "bob"},
    ]
    await bob.disconnect()
    events = await receiver.events_until("every", "member_removed")
    assert events == [{"name": "member_removed", "channel": "presence-room", "user_id": "bob"}]


@pytest.mark.gen_test(timeout=30)
async def test_client_events_are_reported_with_socket_id_and_presence_user_id(
        connect, receiver, hooked):
    alice = await connect("alice", app=hooked.every, user="alice")
    await subscribed(alice, "private-chat")
    await subscribed(alice, "presence-chat")
    await alice.trigger("private-chat", "client-wave", {"hand": "left"})
    await alice.trigger("presence-chat", "client-typing", {"on": True})
    events = await receiver.events_until("every", "client_event", channel="presence-chat")
    private, presence = [event for event in events if event["name"] == "client_event"]
    assert json.loads(private.pop("data")) == {"hand": "left"}
    assert private == {"name": "client_event", "channel": "private-chat",
                       "event": "client-wave", "socket_id": socket_id(alice)}
    assert json.loads(presence.pop("data")) == {"on": True}
    assert presence == {"name": "client_event", "channel": "presence-chat",
                        "event": "client-typing", "socket_id": socket_id(alice),
                        "user_id": "alice"}


@pytest.mark.gen_test(timeout=30)
async def test_subscribing_to_an_empty_cache_channel_reports_a_cache_miss(
        connect, receiver, hooked):
    a = await connect("a", app=hooked.every)
    await subscribed(a, "cache-prices")
    events = await receiver.events_until("every", "cache_miss")
    assert {"name": "cache_miss", "channel": "cache-prices"} in events


@pytest.mark.gen_test(timeout=30)
async def test_subscription_counts_reach_a_url_that_asks_only_for_them(connect, receiver, hooked):
    a = await connect("a", app=hooked.counted)
    b = await connect("b", app=hooked.counted)
    await subscribed(a, "lobby")
    await subscribed(b, "lobby")
    events = await receiver.events_until("counted", "subscription_count", subscription_count=2)
    assert events[-1] == {"name": "subscription_count", "channel": "lobby", "subscription_count": 2}
    # Only the type this URL asked for: no channel_occupied came before the counts.
    assert {event["name"] for event in events} == {"subscription_count"}


@pytest.mark.gen_test(timeout=30)
async def test_channel_left_and_reoccupied_within_the_delay_reports_neither(
        connect, receiver, hooked):
    a = await connect("a", app=hooked.every)
    b = await connect("b", app=hooked.every)
    await subscribed(a, "room")
    await receiver.events_until("every", "channel_occupied", channel="room")
    await a.unsubscribe("room")
    # A socket's frames are handled in order: once "marker" is subscribed,
    # "room" is empty and its channel_vacated is held.
    await subscribed(a, "marker")
    await subscribed(b, "room")
    # The marker's leave is held after room's was, so it is sent after room's would be.
    await a.unsubscribe("marker")
    events = await receiver.events_until("every", "channel_vacated", channel="marker")
    assert [event for event in events if event["channel"] == "room"] == []


@pytest.mark.gen_test(timeout=30)
async def test_presence_user_reconnecting_within_the_delay_is_neither_removed_nor_added(
        connect, receiver, hooked):
    bob = await connect("bob", app=hooked.every, user="bob")
    await subscribed(bob, "presence-room")
    await subscribed(bob, "marker")
    alice = await connect("alice", app=hooked.every, user="alice")
    await subscribed(alice, "presence-room")
    await receiver.events_until("every", "member_added", user_id="alice")
    await alice.disconnect()
    await bob.expect(type="channel_event", event="pusher:member_removed")  # the server saw it
    alice_again = await connect("alice-again", app=hooked.every, user="alice")
    await subscribed(alice_again, "presence-room")
    await bob.unsubscribe("marker")  # its leave is held after alice's was
    events = await receiver.events_until("every", "channel_vacated", channel="marker")
    assert [event for event in events if event.get("user_id") == "alice"] == []
