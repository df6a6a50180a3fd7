"""``static/push.js``, our browser client, in headless Chromium against the in-process server.

The protocol details the demo pages rely on: reconnecting at once after 4200
and subscribing again (presence included), backing off after 4100, giving up
after 4001, staying connected through activity checks, and auth requests that
the official SDK's signatures answer (the tests' auth endpoint, as pusher-js uses it).

Each page holds named clients (``start(name, options)``) and a log of what
they saw; the tests wait on that log with ``wait_for_function``, which checks
every animation frame.
"""

from __future__ import annotations

import json

import pytest
import tornado.web

from browser import Browser
from conftest import APPS, MAIN
from app_server import auth_routes
from tornado_push.handlers import routes
from tornado_push.pubsub.hub import Hub, HubOptions
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
  client.connection.bind("message", (frame) => log.push([name, "frame", frame.event]));
  client.bind_global((event, data, where) => log.push([name, "event", where.channel, event, data]));
  client.connect();
};
window.subscribe = (name, channel) => {
  clients[name].subscribe(channel).bind("pusher:subscription_succeeded",
    () => log.push([name, "subscribed", channel]));
};
window.entries = (name, kind) => log.filter((e) => e[0] === name && e[1] === kind).map((e) => e.slice(2));
window.states = (name) => entries(name, "state").map((e) => e[0]);
window.count = (name, kind, value) => entries(name, kind).filter((e) => e[0] === value).length;
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
