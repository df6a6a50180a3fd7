"""pusher-js's web build in Chromium, from a page on another origin: held to one HTTP
fallback transport, or left on its default strategy with WebSocket blocked so that it
falls back by itself. The browser's own XMLHttpRequest, CORS preflights included,
carries the session (subscribe over ``xhr_send``) and an SDK publish reaches the page."""

from __future__ import annotations

import logging

import pytest
import tornado.httpserver
import tornado.web

from browser import Browser, Cable, PageHandler
from conftest import MAIN, ROOT, in_thread
from redis_server import free_port
from tornado_push.handlers import routes
from tornado_push.pubsub.hub import Hub

#: pusher-js as a page loads it (the same package the Node tests drive).
PUSHER_WEB = ROOT / "tests" / "js" / "node_modules" / "pusher-js" / "dist" / "web"

#: The page starts pusher-js on demand (``window.start([key, options])``, subscribing to
#: ``news``) and records what it sees.
PAGE = """<!doctype html><title>fallback</title><link rel="icon" href="data:,">
<script src="/pusher.js"></script><script>
window.seen = [];
window.start = ([key, options]) => {
  const pusher = new Pusher(key, {cluster: "local", disableStats: true, ...options});
  pusher.connection.bind("connected", () => window.seen.push({type: "connected",
    socket_id: pusher.connection.socket_id,
    transport: pusher.connection.connection.transport.name}));
  const channel = pusher.subscribe("news");
  channel.bind("pusher:subscription_succeeded", () => window.seen.push({type: "subscribed"}));
  channel.bind("headline", (data) => window.seen.push({type: "headline", data}));
};
</script>"""


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    return tornado.web.Application(routes(hub))


@pytest.fixture
def page_origin(io_loop) -> str:
    """Another origin (a port of its own) serving the page and pusher-js."""
    server = tornado.httpserver.HTTPServer(tornado.web.Application([
        (r"/page", PageHandler, {"html": PAGE}),
        (r"/(pusher\.js)", tornado.web.StaticFileHandler, {"path": str(PUSHER_WEB)})]))
    port = free_port()
    server.listen(port, "127.0.0.1")
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def seen(page, kind: str) -> list[dict]:
    await page.wait_for_function(
        f"window.seen.some(e => e.type === {kind!r})", timeout=20_000)
    return [event for event in await page.evaluate("window.seen") if event["type"] == kind]


@pytest.mark.parametrize("transport", ["xhr_streaming", "xhr_polling"])
@pytest.mark.gen_test(timeout=90)
async def test_browser_on_another_origin_gets_a_publish_over_the_http_fallback(
        transport, page_origin, server_port, hub: Hub, sdk, browser: Browser, caplog) -> None:
    caplog.set_level(logging.INFO, logger="tornado.access")
    page = await browser.open(f"{page_origin}/page")
    await page.evaluate("window.start", [MAIN.key, {
        "httpHost": "127.0.0.1", "httpPort": server_port, "forceTLS": False,
        "enabledTransports": [transport]}])
    await seen(page, "subscribed")  # pusher:subscribe went over xhr_send
    assert [session.transport.kind for session in hub.sessions(MAIN)] == [transport]
    await in_thread(sdk.trigger, "news", "headline", {"n": 1})
    assert [event["data"] for event in await seen(page, "headline")] == [{"n": 1}]
    assert len(await seen(page, "connected")) == 1  # one session throughout
    # The requests were cross-origin: the browser asked first (preflights, answered).
    logged = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("204 OPTIONS /pusher/app/") for line in logged), logged
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=90)
async def test_default_strategy_falls_back_by_itself_when_websocket_is_blocked(
        page_origin, server_port, hub: Hub, sdk, browser: Browser) -> None:
    """No ``enabledTransports``: pusher-js tries ``ws`` (and ``wss``), which a proxy-like
    block refuses, and its own timers bring in ``xhr_streaming`` (5 s without TLS)."""
    page = await browser.open(f"{page_origin}/page")
    cable = await Cable.attach(page)
    cable.unplug()  # every WebSocket to the push server is refused, as a proxy would
    await page.evaluate("window.start", [MAIN.key, {
        "httpHost": "127.0.0.1", "httpPort": server_port,
        "wsHost": "127.0.0.1", "wsPort": server_port, "forceTLS": False}])
    await seen(page, "subscribed")
    assert cable.refused >= 1  # WebSocket was tried first and blocked
    [connected] = await seen(page, "connected")
    assert connected["transport"] == "xhr_streaming"  # streaming wins over the later polling
    assert [session.transport.kind for session in hub.sessions(MAIN)] == ["xhr_streaming"]
    await in_thread(sdk.trigger, "news", "headline", {"n": 2})
    assert [event["data"] for event in await seen(page, "headline")] == [{"n": 2}]
    browser.assert_no_errors()
