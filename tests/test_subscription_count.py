"""``pusher_internal:subscription_count``: live counts for apps that turn them on."""

from __future__ import annotations

import asyncio

import pytest

from conftest import COUNTED, MAIN, in_thread
from tornado_push.pubsub.counts import SubscriptionCountThrottle
from conftest import subscribed


async def next_count(client, channel: str) -> int:
    event = await client.expect(type="channel_event", channel=channel, event="pusher:subscription_count")
    return event["data"]["subscription_count"]


@pytest.mark.gen_test(timeout=30)
async def test_subscribers_see_the_count_change_as_others_come_and_go(connect):
    a = await connect("a", app=COUNTED)
    b = await connect("b", app=COUNTED)
    await subscribed(a, "lobby")
    assert await next_count(a, "lobby") == 1
    await subscribed(b, "lobby")
    assert await next_count(a, "lobby") == 2
    assert await next_count(b, "lobby") == 2
    await b.disconnect()
    assert await next_count(a, "lobby") == 1


@pytest.mark.gen_test(timeout=30)
async def test_no_counts_on_presence_channels_or_for_apps_without_the_option(connect, sdk):
    a = await connect("a", app=COUNTED, user="alice")
    await subscribed(a, "presence-room")
    plain = await connect("plain", app=MAIN)
    await subscribed(plain, "lobby")
    await subscribed(a, "lobby")
    await next_count(a, "lobby")  # counts do flow on the app's public channel
    await in_thread(sdk.trigger, "lobby", "sentinel", {})  # after any count plain could get
    await plain.expect(type="channel_event", event="sentinel")
    assert a.seen(channel="presence-room", event="pusher:subscription_count") == []
    assert plain.seen(event="pusher:subscription_count") == []


class Announcements:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.counts: dict[str, int] = {}

    def __call__(self, app, channel: str) -> None:
        self.queue.put_nowait((channel, self.counts[channel]))


@pytest.mark.gen_test(timeout=10)
async def test_large_channels_are_announced_once_per_window_with_the_final_count():
    announcements = Announcements()
    throttle = SubscriptionCountThrottle(announcements, asyncio.get_running_loop().time,
                                         small=2, interval=0.2)
    for count in (1, 2):  # small: each change at once
        announcements.counts["c"] = count
        throttle.changed(MAIN, "c", count)
        assert announcements.queue.get_nowait() == ("c", count)
    for count in (3, 4, 5):  # large, inside the window that the last send opened
        announcements.counts["c"] = count
        throttle.changed(MAIN, "c", count)
    assert announcements.queue.empty()
    assert await asyncio.wait_for(announcements.queue.get(), 2) == ("c", 5)
    assert announcements.queue.empty()
    throttle.close()
