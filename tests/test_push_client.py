"""``static/push.js``, our browser client, in headless Chromium against the in-process server.

The protocol details the demo pages rely on: reconnecting at once after 4200
and subscribing again (presence included), backing off after 4100, giving up
after 4001, staying connected through activity checks, and auth requests that
the official SDK's signatures answer (the tests' auth endpoint, as pusher-js uses it).
On history channels it resumes (docs/history.md): a page whose network is down
(:class:`~browser.Cable`) gets what it missed once back, and is told when it cannot.

Each page holds named clients (``start(name, options)``) and a log of what
they saw; the tests wait on that log with ``wait_for_function``, which checks
every animation frame.
"""

from __future__ import annotations

import json

import pytest
import tornado.web

from browser import Browser, Cable
from conftest import APPS, MAIN, SHORT_HISTORY, in_thread
from app_server import auth_routes
from tornado_push.handlers import routes
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.history import HistoryStore, MemoryHistoryStore
from tornado_push.pubsub.history.redis import RedisHistoryStore
from tornado_push.pubsub.hub import Hub, HubOptions
from tornado_push.pubsub.redis.client import RedisConfig, connect
from tornado_push.server import STATIC_DIR

BLANK_PAGE = "<!doctype html><meta charset=utf-8><link rel=icon href='data:,'><script src=/push.js></script>"
#: Named clients and one log of [client, kind, ...] entries, with helpers to query it.
HARNESS = """
window.clients = {};
window.log = [];
window.start = (name, key, options) => {
  const client = new PushClient(key, Object.assign({host: location.host, autoConnect: false}, options));
  clients[name] = client;
  client.connection.bind("state_change", ({current}) => log.push([name, "state", current]));
  client.connection.bind("error", (error) => log.push([name, "error", error.data && error.data.code]));
  client.connection.bind("message", (frame) => log.push([name, "frame", frame.event, frame]));
  client.bind_global((event, data, where) => log.push([name, "event", where.channel, event, data]));
  client.connect();
};
window.subscribe = (name, channel) => {
  const subscription = clients[name].subscribe(channel);
  subscription.bind("pusher:subscription_succeeded", () => log.push([name, "subscribed", channel]));
  for (const event of ["push:resume_failed", "push:continuity_lost"]) {
    subscription.bind(event, (data) => log.push([name, "lost", event, data]));
  }
};
window.entries = (name, kind) => log.filter((e) => e[0] === name && e[1] === kind).map((e) => e.slice(2));
window.states = (name) => entries(name, "state").map((e) => e[0]);
window.count = (name, kind, value) => entries(name, kind).filter((e) => e[0] === value).length;
// What the app saw on a channel: "subscribed" and the n of each message, in order.
window.story = (name, channel) => log.filter((e) => e[0] === name && e[2] === channel &&
    (e[1] === "subscribed" || (e[1] === "event" && e[3] === "message")))
  .map((e) => e[1] === "subscribed" ? "subscribed" : e[4].n);
"""


class BlankPage(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write(BLANK_PAGE)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    """The push routes, the tests' SDK-signed auth endpoints, and a blank page that loads push.js."""
    return tornado.web.Application(routes(hub) + auth_routes(APPS) + [
        (r"/", BlankPage),
        (r"/(push\.js)", tornado.web.StaticFileHandler, {"path": str(STATIC_DIR)}),
    ])


@pytest.fixture
def history_store(request) -> HistoryStore:
    """Memory, as in conftest; ``indirect=["history_store"]`` with "redis": a Redis of the
    test's own (``fresh_redis``), which the test may restart empty to lose the history."""
    if getattr(request, "param", "memory") == "memory":
        return MemoryHistoryStore()
    redis = request.getfixturevalue("fresh_redis")
    return RedisHistoryStore(connect(RedisConfig(url=redis.url)), prefix="push-js")


@pytest.fixture
def harness(browser: Browser, server_port: int):
    async def open_page():
        page = await browser.open(f"http://127.0.0.1:{server_port}/", name="push.js")
        await page.evaluate(HARNESS)
        return page

    return open_page


@pytest.mark.gen_test(timeout=30)
async def test_reconnects_at_once_after_4200_and_subscribes_again(harness, browser, hub):
    page = await harness()
    await page.evaluate("start('a', 'app-key', {authEndpoint: '/test/app-key/auth?user=alice'})")
    await page.evaluate("subscribe('a', 'news'); subscribe('a', 'presence-room')")
    await page.wait_for_function("count('a', 'subscribed', 'news') + count('a', 'subscribed', 'presence-room') == 2")
    first = await page.evaluate("clients.a.connection.socket_id")

    hub.close_all()  # 4200, as on a graceful restart
    await page.wait_for_function("count('a', 'subscribed', 'news') + count('a', 'subscribed', 'presence-room') == 4")
    # At once: straight back to connecting, never waiting in "unavailable".
    assert await page.evaluate("states('a')") == ["connecting", "connected", "connecting", "connected"]
    assert await page.evaluate("entries('a', 'error')") == [[4200], [4200]]  # pusher:error, then the close
    assert await page.evaluate("clients.a.connection.socket_id") != first
    assert await page.evaluate("clients.a.channel('presence-room').members.me") == {
        "id": "alice", "info": {"name": "Alice"}}

    await hub.trigger(MAIN, ["news"], "headline", json.dumps({"title": "back"}))
    await page.wait_for_function("entries('a', 'event').some(([channel, event]) => event === 'headline')")
    assert await page.evaluate("entries('a', 'event').filter((e) => e[1] === 'headline')") == [
        ["news", "headline", {"title": "back"}]]
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("hub_options", [HubOptions(max_connections=1)])
async def test_backs_off_after_4100_and_connects_once_there_is_room(hub_options, harness, browser):
    page = await harness()
    await page.evaluate("start('first', 'app-key', {})")
    await page.wait_for_function("states('first').includes('connected')")
    await page.evaluate("start('second', 'app-key', {minReconnectDelay: 200, maxReconnectDelay: 400})")
    await page.wait_for_function("entries('second', 'error').length > 0 && states('second').includes('unavailable')")
    assert await page.evaluate("entries('second', 'error')[0]") == [4100]
    assert await page.evaluate("states('second').slice(0, 2)") == ["connecting", "unavailable"]

    await page.evaluate("clients.first.disconnect()")
    await page.wait_for_function("states('second').includes('connected')")
    assert await page.evaluate("states('first')") == ["connecting", "connected", "disconnected"]
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
async def test_gives_up_when_refused_with_4001(harness, browser):
    page = await harness()
    await page.evaluate("start('a', 'no-such-key', {})")
    await page.wait_for_function("states('a').includes('failed')")
    assert await page.evaluate("states('a')") == ["connecting", "failed"]
    assert await page.evaluate("entries('a', 'error')") == [[4001], [4001]]
    # No retry is pending and no socket is open: it stays failed until told to connect.
    assert await page.evaluate("[clients.a.connection.socket, Object.keys(clients.a.connection.timers)]") == [None, []]
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("hub_options", [HubOptions(activity_timeout=0.2, pong_timeout=0.5)])
async def test_stays_connected_through_activity_checks(hub_options, harness, browser):
    page = await harness()
    await page.evaluate("start('a', 'app-key', {})")
    await page.wait_for_function("states('a').includes('connected')")
    socket_id = await page.evaluate("clients.a.connection.socket_id")
    # Whoever falls silent first pings (the server told the client its 0.2 s); the other answers.
    await page.wait_for_function("count('a', 'frame', 'pusher:ping') + count('a', 'frame', 'pusher:pong') >= 5")
    assert await page.evaluate("states('a')") == ["connecting", "connected"]
    assert await page.evaluate("clients.a.connection.socket_id") == socket_id
    browser.assert_no_errors()


#: Reconnect quickly: these tests wait for the retries that an unplugged cable refuses.
QUICK_RETRY = "{minReconnectDelay: 100, maxReconnectDelay: 200}"


async def publish(hub: Hub, numbers: range, app: App = MAIN, channel: str = "history-room") -> None:
    for n in numbers:
        await hub.trigger(app, [channel], "message", json.dumps({"n": n}))


async def joined(page, key: str, channel: str) -> Cable:
    """Client "a" subscribed to ``channel``, its connections through a cable that is plugged in."""
    cable = await Cable.attach(page)
    await page.evaluate(f"start('a', '{key}', {QUICK_RETRY}); subscribe('a', '{channel}')")
    await page.wait_for_function(f"count('a', 'subscribed', '{channel}') == 1")
    return cable


async def away(page, cable: Cable, hub: Hub) -> None:
    """The server drops the connection (4200) and the network is down for the reconnect."""
    cable.unplug()
    hub.close_all()
    await page.wait_for_function("states('a').includes('unavailable')")


@pytest.mark.gen_test(timeout=30)
async def test_after_a_drop_the_missed_messages_arrive_once_in_order_before_new_ones(harness, browser, hub):
    page = await harness()
    cable = await joined(page, "app-key", "history-room")
    await publish(hub, range(1, 3))
    await page.wait_for_function("story('a', 'history-room').length == 3")

    await away(page, cable, hub)
    await publish(hub, range(3, 6))
    cable.plug()
    await page.wait_for_function("count('a', 'subscribed', 'history-room') == 2")
    await publish(hub, range(6, 7))
    await page.wait_for_function("story('a', 'history-room').includes(6)")
    # The subscription is reported once the replay is in: the app sees 3-5 first.
    assert await page.evaluate("story('a', 'history-room')") == ["subscribed", 1, 2, 3, 4, 5, "subscribed", 6]
    resumed = await page.evaluate("entries('a', 'frame').filter((e) => e[0] === 'pusher_internal:resume_succeeded')")
    assert [frame["data"]["offset"] for _, frame in resumed] == [5]
    assert await page.evaluate("entries('a', 'lost')") == []
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
async def test_a_message_delivered_twice_is_shown_once(harness, browser, hub):
    page = await harness()
    cable = await joined(page, "app-key", "history-room")
    await publish(hub, range(1, 3))
    await page.wait_for_function("story('a', 'history-room').length == 3")
    frames = await page.evaluate("entries('a', 'frame').filter((e) => e[0] === 'message').map((e) => e[1])")
    assert [frame["offset"] for frame in frames] == [1, 2]

    for frame in frames:  # the same frames once more, as a faulty relay might send them
        cable.inject(dict(frame, data=json.dumps(frame["data"])))
    await page.wait_for_function("count('a', 'frame', 'message') == 4")
    await publish(hub, range(3, 4))
    await page.wait_for_function("story('a', 'history-room').includes(3)")
    assert await page.evaluate("story('a', 'history-room')") == ["subscribed", 1, 2, 3]
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
async def test_messages_no_longer_kept_give_resume_failed_and_then_new_ones(harness, browser, hub):
    page = await harness()  # SHORT_HISTORY keeps 3 messages per channel
    cable = await joined(page, SHORT_HISTORY.key, "room")
    await publish(hub, range(1, 2), SHORT_HISTORY, "room")
    await page.wait_for_function("story('a', 'room').length == 2")

    await away(page, cable, hub)
    await publish(hub, range(2, 7), SHORT_HISTORY, "room")  # 2 and 3 are trimmed
    cable.plug()
    await page.wait_for_function("entries('a', 'lost').length == 1")
    [[event, lost]] = await page.evaluate("entries('a', 'lost')")
    assert (event, lost["reason"], lost["offset"]) == ("push:resume_failed", "messages_lost", 6)
    await publish(hub, range(7, 8), SHORT_HISTORY, "room")
    await page.wait_for_function("story('a', 'room').includes(7)")
    assert await page.evaluate("story('a', 'room')") == ["subscribed", 1, "subscribed", 7]
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("history_store", ["redis"], indirect=True)
async def test_history_lost_while_away_gives_resume_failed_with_the_new_epoch(
        history_store, harness, browser, hub, fresh_redis):
    page = await harness()
    cable = await joined(page, "app-key", "history-room")
    await publish(hub, range(1, 2))
    await page.wait_for_function("story('a', 'history-room').length == 2")
    old_epoch = await page.evaluate("clients.a.channel('history-room').position.epoch")

    await away(page, cable, hub)
    await in_thread(fresh_redis.restart)  # empty: the channel's history starts again in a new epoch
    await publish(hub, range(2, 3))
    cable.plug()
    await page.wait_for_function("entries('a', 'lost').length == 1")
    [[event, lost]] = await page.evaluate("entries('a', 'lost')")
    assert (event, lost["reason"], lost["offset"]) == ("push:resume_failed", "epoch_changed", 1)
    assert lost["epoch"] != old_epoch
    await publish(hub, range(3, 4))
    await page.wait_for_function("story('a', 'history-room').includes(3)")
    assert await page.evaluate("story('a', 'history-room')") == ["subscribed", 1, "subscribed", 3]
    assert await page.evaluate("clients.a.channel('history-room').position") == {"epoch": lost["epoch"], "offset": 2}
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("history_store", ["redis"], indirect=True)
async def test_history_lost_while_connected_gives_continuity_lost_and_goes_on(
        history_store, harness, browser, hub, fresh_redis):
    page = await harness()
    await joined(page, "app-key", "history-room")
    await publish(hub, range(1, 3))
    await page.wait_for_function("story('a', 'history-room').length == 3")

    await in_thread(fresh_redis.restart)
    await publish(hub, range(3, 4))  # offset 1 of the new epoch: not a duplicate of offset 1
    await page.wait_for_function("story('a', 'history-room').includes(3)")
    [[event, lost]] = await page.evaluate("entries('a', 'lost')")
    assert (event, lost["reason"], lost["offset"]) == ("push:continuity_lost", "epoch_changed", 0)
    assert await page.evaluate("story('a', 'history-room')") == ["subscribed", 1, 2, 3]
    browser.assert_no_errors()
