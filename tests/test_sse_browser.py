"""Chromium's own ``EventSource`` against the SSE endpoint: public and token-authorized
private events, and after the server drops the stream, the browser's reconnect (with its
``Last-Event-ID``) resumes a history channel with no gap and no repeat."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
import tornado.web

from browser import Browser, PageHandler
from conftest import APPS, MAIN, until
from tornado_push.embed import Push
from tornado_push.handlers import routes
from tornado_push.pubsub.hub import Hub

#: The page records every event of the stream it is told to open, and each (re)open.
PAGE = """<!doctype html><title>sse</title><link rel="icon" href="data:,"><script>
window.received = []; window.opens = 0;
window.listen = (url, names) => {
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  for (const name of names) {
    source.addEventListener(name, (e) => window.received.push(
      {event: name, data: JSON.parse(e.data), id: e.lastEventId}));
  }
};
</script>"""


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    return tornado.web.Application(routes(hub) + [(r"/page", PageHandler, {"html": PAGE})])


async def received(page, count: int) -> list[dict]:
    await page.wait_for_function(f"window.received.length >= {count}", timeout=20_000)
    return await page.evaluate("window.received")


async def open_stream(browser: Browser, port: int, query: str):
    page = await browser.open(f"http://127.0.0.1:{port}/page")
    await page.evaluate("([url, names]) => window.listen(url, names)",
                        [f"/app/{MAIN.key}/sse?{query}", ["tick", "pusher:error"]])
    await page.wait_for_function("window.opens >= 1", timeout=20_000)
    return page


@pytest.mark.gen_test(timeout=90)
async def test_event_source_gets_public_and_private_events(server_port, hub: Hub,
                                                           browser: Browser) -> None:
    signer = Push(apps=APPS)
    page = await open_stream(browser, server_port,
                             urlencode(signer.authorize_sse(["public-a", "private-b"])))
    await hub.trigger(MAIN, ["public-a"], "tick", json.dumps({"n": 1}))
    await hub.trigger(MAIN, ["private-b"], "tick", json.dumps({"n": 2}))
    assert [e["data"]["n"] for e in await received(page, 2)] == [1, 2]
    refused = await browser.open(f"http://127.0.0.1:{server_port}/page")
    # Without a token: 403 before any streaming, and an EventSource gives up (CLOSED).
    state = await refused.evaluate(
        "url => new Promise(done => { const s = new EventSource(url);"
        " s.onerror = () => done(s.readyState); })", f"/app/{MAIN.key}/sse?channels=private-b")
    assert state == 2
    assert [e for e in browser.errors if "403" not in e] == []


@pytest.mark.gen_test(timeout=90)
async def test_event_source_resumes_without_gap_after_the_server_drops_it(
        server_port, hub: Hub, browser: Browser) -> None:
    channel = "history-browser"
    page = await open_stream(browser, server_port, f"channels={channel}")
    for n in range(3):
        await hub.trigger(MAIN, [channel], "tick", json.dumps({"n": n}))
    await received(page, 3)
    [session] = [s for s in hub.sessions(MAIN) if channel in s.channels]
    session.transport.abort()  # the server drops it; the browser retries after ~3 s
    for n in range(3, 6):  # published while the browser is away
        await hub.trigger(MAIN, [channel], "tick", json.dumps({"n": n}))
    await page.wait_for_function("window.opens >= 2", timeout=30_000)
    await until(lambda: any(channel in s.channels for s in hub.sessions(MAIN)), timeout=20)
    await hub.trigger(MAIN, [channel], "tick", json.dumps({"n": 6}))
    events = await received(page, 7)
    assert [e["data"]["n"] for e in events] == list(range(7))
    assert [e["id"].rsplit(":", 1)[1] for e in events] == [str(n) for n in range(1, 8)]
    # The drop itself is the one error Chromium reports: the stream ended mid-response.
    browser.errors = [e for e in browser.errors if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in e]
    browser.assert_no_errors()
