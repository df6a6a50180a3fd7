"""Allowed origins per app, over each transport: a page origin an app does not list gets
``pusher:error`` 4009 and close 4009 (WebSocket, the HTTP fallback's frames, which that
page may read so that pusher-js stops), or 403 and no CORS (SSE); one it lists connects. The apps come from an apps file, as a user writes it,
and the server is composed as ``server.py`` composes it (``embed.Push``, ``/metrics``)."""

from __future__ import annotations

import json

import pytest
import tornado.httpclient
import tornado.web

from browser import Browser, Cable, PageHandler
from conftest import running, until
from sse_client import SSEClient
from test_fallback_browser import PUSHER_WEB
from test_metrics import scrape
from tornado_push.embed import Push
from tornado_push.pubsub.origins import OriginRules, normalise
from tornado_push.settings import load_settings

P = "tornado_push_"
OPEN = {"id": "1", "key": "open-key", "secret": "open-secret"}  # the default: any origin
STRICT = {"id": "2", "key": "strict-key", "secret": "strict-secret",
          "allowed_origins": ["HTTPS://App.Example.com:443", "https://*.example.org"],
          "allow_missing_origin": False}
OTHER = {"id": "3", "key": "other-key", "secret": "other-secret",
         "allowed_origins": ["https://other.example.com"]}

#: pusher-js in Chromium, started on demand with an app key; records what it sees.
PAGE = """<!doctype html><title>origins</title><link rel="icon" href="data:,">
<script src="/pusher.js"></script><script>
window.seen = [];
window.start = ([key, port]) => {
  // The default strategy: WebSocket, with the HTTP fallback after it (same server).
  const pusher = new Pusher(key, {cluster: "local", wsHost: "127.0.0.1", wsPort: port,
    httpHost: "127.0.0.1", httpPort: port, forceTLS: false, disableStats: true});
  pusher.connection.bind("state_change", (s) => window.seen.push({type: "state", ...s}));
  pusher.connection.bind("error", (e) => {  // a PusherError, maybe in a WebSocketError
    const error = e.type === "WebSocketError" ? e.error : e;
    window.seen.push({type: "error", kind: error.type, ...error.data});
  });
  pusher.subscribe("news").bind("pusher:subscription_succeeded",
                                () => window.seen.push({type: "subscribed"}));
};
</script>"""


@pytest.fixture
def page_app(http_port: int) -> dict:
    """An app that allows only the pages this server serves (the test's own port)."""
    return {"id": "4", "key": "page-key", "secret": "page-secret",
            "allowed_origins": [f"http://127.0.0.1:{http_port}"]}


@pytest.fixture
def push(io_loop, tmp_path, page_app: dict) -> Push:
    path = tmp_path / "apps.json"
    path.write_text(json.dumps([OPEN, STRICT, OTHER, page_app]))
    settings = load_settings({"PUSH_DEFAULT_APP": "false", "PUSH_APPS_FILE": str(path)})
    yield from running(io_loop, Push.from_settings(settings))


@pytest.fixture
def hub(push: Push):
    return push.hub


@pytest.fixture
def app(push: Push) -> tornado.web.Application:
    return tornado.web.Application(push.routes() + [
        (r"/page", PageHandler, {"html": PAGE}),
        (r"/(pusher\.js)", tornado.web.StaticFileHandler, {"path": str(PUSHER_WEB)})])


async def refused_count(port: int, app_id: str) -> float:
    return (await scrape(port)).value(P + "connections_refused_total", app=app_id,
                                      reason="origin")


# -- the rules --------------------------------------------------------------------------

def test_origins_compare_case_insensitively_without_default_ports():
    assert normalise("HTTPS://App.Example.com:443") == "https://app.example.com"
    assert normalise("http://localhost:80") == "http://localhost"
    assert normalise("http://[::1]:8080") == "http://[::1]:8080"
    for not_an_origin in ("null", "https://a.com/", "https://u@a.com", "https://a.com:",
                          "https://a.com:70000", "a.com", "https://[::1"):
        assert normalise(not_an_origin) is None, not_an_origin


def test_wildcards_take_any_subdomain_on_their_scheme_and_port_but_not_the_apex():
    rules = OriginRules.parse(("https://*.example.org", "http://*.example.net:8080"))
    assert rules.allows("https://a.example.org") and rules.allows("https://a.b.example.org")
    assert rules.allows("https://A.Example.org:443")
    assert rules.allows("http://x.example.net:8080")
    for refused in ("https://example.org", "http://a.example.org", "https://a.example.org:8443",
                    "http://x.example.net", "https://evilexample.org", "https://.example.org",
                    "https://a.example.org.evil.com", "null"):
        assert not rules.allows(refused), refused


# -- WebSocket ----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_websocket_connects_from_the_origins_each_app_allows(raw):
    allowed = [(STRICT, "https://app.example.com"), (STRICT, "https://APP.example.com:443"),
               (STRICT, "https://eu.shop.example.org"), (OTHER, "https://other.example.com"),
               (OTHER, None), (OPEN, "https://anything.example"), (OPEN, "null"), (OPEN, None)]
    for app, origin in allowed:
        headers = {"Origin": origin} if origin else None
        socket = await raw(app["key"], headers=headers)  # connection_established read
        socket.close()


@pytest.mark.gen_test(timeout=30)
async def test_websocket_from_a_refused_origin_gets_4009_naming_it_and_is_counted(
        raw, server_port, hub):
    refusals = [(STRICT, "https://evil.example", "Origin not allowed: https://evil.example"),
                (STRICT, "https://example.org", "Origin not allowed: https://example.org"),
                (STRICT, "http://app.example.com", "Origin not allowed: http://app.example.com"),
                (STRICT, None, "Origin not allowed: this app needs an Origin header"),
                (OTHER, "https://app.example.com",  # STRICT's origin, not OTHER's
                 "Origin not allowed: https://app.example.com")]
    for app, origin, message in refusals:
        socket = await raw(app["key"], headers={"Origin": origin} if origin else None,
                           established=False)
        error = await socket.receive()
        assert error == {"event": "pusher:error", "data": {"code": 4009, "message": message}}
        assert await socket.closed() == 4009
        assert socket.connection.close_reason == message
    assert not any(True for app in hub.apps for _ in hub.sessions(app))
    assert await refused_count(server_port, STRICT["id"]) == 4
    assert await refused_count(server_port, OTHER["id"]) == 1


# -- the HTTP fallback -------------------------------------------------------------------

def _url(port: int, key: str, sid: str, kind: str) -> str:
    query = "?protocol=7" if kind != "xhr_send" else ""
    return f"http://127.0.0.1:{port}/pusher/app/{key}/7/{sid}/{kind}{query}"


async def _fetch(url: str, method: str = "POST", origin: str | None = None,
                 **headers: str) -> tornado.httpclient.HTTPResponse:
    if origin is not None:
        headers["Origin"] = origin
    return await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method=method, body="" if method == "POST" else None, raise_error=False,
        headers={"Content-Type": "application/json", **headers})


@pytest.mark.gen_test(timeout=30)
async def test_http_fallback_answers_cors_to_every_origin_and_refuses_in_band(server_port):
    allowed = "https://shop.example.org"
    for origin, answered in ((allowed, allowed), ("https://evil.example", "https://evil.example")):
        preflight = await _fetch(_url(server_port, STRICT["key"], "pre", "xhr_streaming"),
                                 "OPTIONS", origin, **{"Access-Control-Request-Method": "POST"})
        assert preflight.code == 204
        assert preflight.headers.get("Access-Control-Allow-Origin") == answered
    poll = await _fetch(_url(server_port, STRICT["key"], "allowed", "xhr"), origin=allowed)
    assert poll.headers["Access-Control-Allow-Origin"] == allowed
    assert poll.body.startswith(b"o\n")
    # An error answer to an allowed page keeps its CORS: the page can read the status.
    missing = await _fetch(_url(server_port, STRICT["key"], "nosuchsid", "xhr_send"),
                           origin=allowed)
    assert (missing.code, missing.headers["Access-Control-Allow-Origin"]) == (404, allowed)


@pytest.mark.parametrize("kind", ["xhr_streaming", "xhr"])
@pytest.mark.gen_test(timeout=30)
async def test_http_fallback_session_from_a_refused_origin_is_opened_told_4009_and_closed(
        kind, server_port, hub):
    cases = [("https://evil.example", "Origin not allowed: https://evil.example"),
             (None, "Origin not allowed: this app needs an Origin header")]
    for number, (origin, message) in enumerate(cases):
        response = await _fetch(_url(server_port, STRICT["key"], f"s{number}", kind),
                                origin=origin)
        lines = response.body.decode().lstrip("h\n").splitlines()  # xhr_streaming's prelude
        assert lines[0] == "o"
        assert json.loads(json.loads(lines[1][1:])[0]) == {
            "event": "pusher:error", "data": {"code": 4009, "message": message}}
        assert lines[2] == "c" + json.dumps([4009, message])
        # Readable by the refused page: pusher-js reads 4009 and stops retrying.
        assert response.headers["Access-Control-Allow-Origin"] == (origin or "*")
    assert not list(hub.sessions(hub.apps.by_id(STRICT["id"])))
    assert await refused_count(server_port, STRICT["id"]) == 2


# -- SSE ------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_sse_streams_to_allowed_origins_and_refuses_others_with_403(server_port, hub):
    allowed = await SSEClient.open(server_port, STRICT["key"], "channels=news",
                                   headers={"Origin": "https://app.example.com"})
    assert allowed.status == 200
    assert "Access-Control-Allow-Origin: https://app.example.com" in allowed.head
    await until(lambda: list(hub.sessions(hub.apps.by_id(STRICT["id"]))))
    allowed.close()
    for app, origin, message in [
            (STRICT, "https://evil.example", "Origin not allowed: https://evil.example"),
            (STRICT, None, "Origin not allowed: this app needs an Origin header"),
            (OTHER, "https://app.example.com", "Origin not allowed: https://app.example.com")]:
        refused = await SSEClient.open(server_port, app["key"], "channels=news",
                                       headers={"Origin": origin} if origin else {})
        assert refused.status == 403
        assert await refused.body() == message + "\n"
        assert "Access-Control-Allow-Origin: https" not in refused.head
        refused.close()
    assert await refused_count(server_port, STRICT["id"]) == 2
    assert await refused_count(server_port, OTHER["id"]) == 1


# -- stock pusher-js in Chromium -----------------------------------------------------------

async def _seen(page, kind: str) -> list[dict]:
    await page.wait_for_function(f"window.seen.some(e => e.type === {kind!r})", timeout=20_000)
    return [event for event in await page.evaluate("window.seen") if event["type"] == kind]


@pytest.mark.parametrize("websocket", ["open", "blocked"])
@pytest.mark.gen_test(timeout=60)
async def test_pusherjs_on_a_refused_origin_gets_4009_and_stops_and_on_an_allowed_one_connects(
        websocket, server_port, page_app, browser: Browser) -> None:
    """With WebSocket blocked, pusher-js falls back to xhr_streaming by itself and reads the
    refusal there: the fallback's answers are readable by a refused page for that."""
    # The page's origin, http://127.0.0.1:{port}, is page_app's and not STRICT's.
    page = await browser.open(f"http://127.0.0.1:{server_port}/page")
    await page.evaluate("window.start", [page_app["key"], server_port])
    assert await _seen(page, "subscribed")
    refused = await browser.open(f"http://127.0.0.1:{server_port}/page", name="refused")
    if websocket == "blocked":
        (await Cable.attach(refused)).unplug()
    await refused.evaluate("window.start", [STRICT["key"], server_port])
    [error] = await _seen(refused, "error")
    assert (error["kind"], error["code"], error["message"]) == (
        "PusherError", 4009, f"Origin not allowed: http://127.0.0.1:{server_port}")
    await refused.wait_for_function(
        "window.seen.some(e => e.type === 'state' && e.current === 'disconnected')")
    # pusher-js would reconnect, or fall back to HTTP (its preflight refused: a console
    # error), within seconds if it were going to: it does neither.
    await refused.wait_for_timeout(3000)
    states = [e["current"] for e in await refused.evaluate("window.seen") if e["type"] == "state"]
    assert states == ["disconnected"]  # bound after new Pusher() began "connecting"
    assert await refused_count(server_port, STRICT["id"]) == 1
    browser.assert_no_errors()
