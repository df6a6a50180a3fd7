"""The admin console (``/admin/``) in-process: refusals, security headers, views and actions.

The console's routes are walked from the router table itself (``Push.routes``),
not from a list kept here, so a route added later is checked too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.testing
import tornado.web
import tornado.websocket

from app_server import auth_routes
from conftest import MAIN, in_thread, running, until
from webhook_receiver import receiver  # noqa: F401 (fixture)
from tornado_push.embed import Push
from tornado_push.pubsub.apps import WebhookTarget
from tornado_push.pubsub.webhooks import WebhookOptions
from tornado_push.handlers import admin, admin_auth
from tornado_push.pubsub import debug
from tornado_push.pubsub.errors import ErrorCode
from tornado_push.server import make_application

PASSWORD = "a long admin password"
#: Values for the named groups of the admin routes, to request a concrete path.
SAMPLES = {"app_id": MAIN.id, "node": "1"}
#: The only routes that answer without a session; none shows data.
PUBLIC = {"/admin", "/admin/login", "/admin/demo.css", "/admin/admin.css", "/admin/anything"}


@pytest.fixture
def push(io_loop) -> Push:
    yield from running(io_loop, Push([MAIN], admin_password=PASSWORD))


@pytest.fixture
def app(push: Push) -> tornado.web.Application:
    return tornado.web.Application(push.routes() + auth_routes([MAIN]))


class AdminClient:
    """A browser's view of the console: its cookie, CSRF token and Origin header."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        #: The page's origin, which the browser sends: ``base``, unless a proxy is in front.
        self.origin = self.base
        self.cookie: str | None = None
        self.csrf: str | None = None

    async def fetch(self, path: str, method: str = "GET", body: str | bytes | None = None, *,
                    headers: dict[str, str] | None = None, origin: str | None = "same",
                    cookie: bool = True) -> tornado.httpclient.HTTPResponse:
        sent = {}
        if cookie and self.cookie is not None:
            sent["Cookie"] = f"{admin.COOKIE}={self.cookie}"
        if origin is not None:
            sent["Origin"] = self.origin if origin == "same" else origin
        sent.update(headers or {})
        if method == "POST" and body is None:
            body = b""
        return await tornado.httpclient.AsyncHTTPClient().fetch(
            self.base + path, method=method, body=body, headers=sent, raise_error=False,
            follow_redirects=False)

    async def login(self, password: str = PASSWORD) -> tornado.httpclient.HTTPResponse:
        answer = await self.fetch("/admin/login", "POST", urlencode({"password": password}))
        if answer.code == 303:
            cookies = SimpleCookie()
            for header in answer.headers.get_list("Set-Cookie"):
                cookies.load(header)
            self.cookie = cookies[admin.COOKIE].value
            self.csrf = json.loads((await self.fetch("/admin/api/session")).body)["csrf"]
        return answer

    async def action(self, path: str, body: dict[str, Any], *, csrf: str | None = "mine",
                     origin: str | None = "same") -> tornado.httpclient.HTTPResponse:
        headers = {"Content-Type": "application/json"}
        if csrf is not None:
            headers[admin.CSRF_HEADER] = self.csrf if csrf == "mine" else csrf
        return await self.fetch(path, "POST", json.dumps(body), headers=headers, origin=origin)

    async def get_json(self, path: str) -> Any:
        answer = await self.fetch(path)
        assert answer.code == 200, (path, answer.code, answer.body)
        return json.loads(answer.body)

    async def feed(self, app_id: str = MAIN.id, query: str = "", *, origin: str | None = "same",
                   cookie: bool = True) -> tornado.websocket.WebSocketClientConnection:
        headers = {}
        if cookie and self.cookie is not None:
            headers["Cookie"] = f"{admin.COOKIE}={self.cookie}"
        if origin is not None:
            headers["Origin"] = self.origin if origin == "same" else origin
        request = tornado.httpclient.HTTPRequest(
            f"ws{self.base[4:]}/admin/api/apps/{app_id}/debug{query}", headers=headers)
        return await tornado.websocket.websocket_connect(request)


@pytest.fixture
def console(server_port: int) -> AdminClient:
    return AdminClient(server_port)


@pytest.fixture
def logged_in(io_loop, console: AdminClient) -> AdminClient:
    assert io_loop.run_sync(console.login).code == 303
    return console


def admin_routes(push: Push) -> list[tuple[str, type, dict[str, Any]]]:
    return [route for route in push.routes() if route[0].startswith("/admin")]


def concrete(pattern: str) -> str:
    """A path the route's pattern matches, its named groups filled from SAMPLES."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda group: SAMPLES[group[1]], pattern)
    path = re.sub(r"\\(.)", r"\1", path.replace(".*", "anything"))
    assert re.fullmatch(pattern, path), (pattern, path)
    return path


def assert_security_headers(answer: tornado.httpclient.HTTPResponse) -> None:
    policy = answer.headers.get("Content-Security-Policy", "")
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "frame-ancestors 'none'"):
        assert directive in policy, (answer.effective_url, policy)
    assert "unsafe-inline" not in policy
    assert answer.headers.get("X-Frame-Options") == "DENY"
    assert answer.headers.get("X-Content-Type-Options") == "nosniff"
    assert answer.headers.get("Referrer-Policy") == "same-origin"


def refused(answer: tornado.httpclient.HTTPResponse) -> bool:
    """401 or 403, or a redirect to the login form: never an answer with data."""
    if answer.code in (302, 303):
        return answer.headers["Location"].endswith("/admin/login")
    return answer.code in (401, 403)


# -- off ----------------------------------------------------------------------------------


class Served:
    """``application`` on a free loopback port of its own, with these server options."""

    def __init__(self, application: tornado.web.Application, **options: Any) -> None:
        sock, self.port = tornado.testing.bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(application, **options)
        self.server.add_sockets([sock])

    def __enter__(self) -> AdminClient:
        return AdminClient(self.port)

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()


@pytest.mark.gen_test(timeout=30)
async def test_without_a_password_every_admin_path_answers_404():
    push = Push([MAIN], demo=True)
    assert push.admin is None
    with Served(make_application(push)) as client:  # as server.py serves it: demo pages at /
        for path in ("/admin", "/admin/", "/admin/login", "/admin/admin.js", "/admin/admin.css",
                     "/admin/api/nodes", "/admin/api/apps/1/debug", "/admin.html", "/admin.js"):
            for method in ("GET", "POST"):
                answer = await client.fetch(path, method)
                assert answer.code == 404, (method, path, answer.code)
        assert (await client.fetch("/demo.css")).code == 200  # the demo's own files still are


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_every_admin_route_refuses_an_unauthenticated_request(push, console):
    routes = admin_routes(push)
    public = set()
    for pattern, handler, kwargs in routes:
        path = concrete(pattern)
        if kwargs.get("public", handler.public):
            public.add(path)
            continue
        for method in ("GET", "POST"):
            answer = await console.fetch(path, method)
            assert refused(answer), (method, path, answer.code, answer.body[:200])
            assert_security_headers(answer)
    assert public == PUBLIC  # a new public route must be added here on purpose
    with pytest.raises(tornado.httpclient.HTTPClientError) as handshake:
        await console.feed()
    assert handshake.value.code == 401
    assert len(routes) >= 15  # the walk saw the whole table


@pytest.mark.gen_test(timeout=30)
async def test_every_admin_answer_has_the_security_headers(push, logged_in):
    for pattern, handler, _ in admin_routes(push):
        if handler is not admin.FeedHandler:
            answer = await logged_in.fetch(concrete(pattern))
            assert answer.code in (200, 302, 400, 404, 405), (pattern, answer.code)
            assert_security_headers(answer)
    assert_security_headers(await logged_in.fetch("/admin/login", "POST", "password=wrong"))


@pytest.mark.gen_test(timeout=30)
async def test_admin_answers_count_in_the_http_metrics_as_one_endpoint(push, logged_in):
    def answered(status: str) -> float:
        return push.metrics.http_answers["_unknown", "admin", status]  # no app: _unknown

    before = answered("200"), answered("401")
    await logged_in.fetch("/admin/api/nodes")
    await logged_in.fetch("/admin/api/nodes", cookie=False)
    assert (answered("200"), answered("401")) == (before[0] + 1, before[1] + 1)


@pytest.mark.gen_test(timeout=30)
async def test_actions_need_the_sessions_csrf_token(logged_in, server_port):
    path = f"/admin/api/apps/{MAIN.id}/events"
    event = {"channels": ["news"], "name": "hello", "data": "{}"}
    assert (await logged_in.action(path, event, csrf=None)).code == 403
    assert (await logged_in.action(path, event, csrf="not-the-token")).code == 403
    other = AdminClient(server_port)
    await other.login()
    assert other.csrf != logged_in.csrf
    assert (await logged_in.action(path, event, csrf=other.csrf)).code == 403  # another session's
    assert (await logged_in.action(path, event)).code == 200
    form = urlencode({admin.CSRF_FIELD: logged_in.csrf})
    # A form field carries the token as well as the header does.
    assert (await logged_in.fetch("/admin/logout", "POST", form)).code == 200


@pytest.mark.gen_test(timeout=30)
async def test_cross_origin_requests_are_refused(logged_in):
    event = {"channels": ["news"], "name": "hello", "data": "{}"}
    path = f"/admin/api/apps/{MAIN.id}/events"
    assert (await logged_in.action(path, event, origin="http://evil.example")).code == 403
    assert (await logged_in.action(path, event, origin=None)).code == 403
    login = await logged_in.fetch("/admin/login", "POST", urlencode({"password": PASSWORD}),
                                  origin="http://evil.example")
    assert login.code == 403 and "Set-Cookie" not in login.headers
    with pytest.raises(tornado.httpclient.HTTPClientError) as handshake:
        await logged_in.feed(origin="http://evil.example")
    assert handshake.value.code == 403


@pytest.mark.gen_test(timeout=30)
async def test_failed_logins_are_throttled(console, caplog):
    for _ in range(5):
        assert (await console.login("wrong password")).code == 401
    throttled = await console.login()  # even the right password waits now
    assert throttled.code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert console.cookie is None
    assert PASSWORD not in caplog.text and "wrong password" not in caplog.text
    assert "login failed from 127.0.0.1" in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_session_cookie_is_http_only_strict_and_scoped_to_admin(console):
    answer = await console.login()
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Max-Age=" in cookie and "Secure" not in cookie  # plain http: no Secure
    assert answer.headers["Location"] == "/admin/"
    forged = console.cookie[:-2] + ("AA" if not console.cookie.endswith("AA") else "BB")
    console.cookie = forged
    assert (await console.fetch("/admin/api/nodes")).code == 401


@pytest.mark.gen_test(timeout=30)
async def test_session_cookie_is_secure_when_the_request_came_over_tls(push):
    """Behind a TLS-terminating proxy (xheaders): the browser's cookie is Secure."""
    with Served(tornado.web.Application(push.routes()), xheaders=True) as client:
        client.origin = client.origin.replace("http://", "https://")  # what the browser sends
        answer = await client.fetch("/admin/login", "POST", urlencode({"password": PASSWORD}),
                                    headers={"X-Forwarded-Proto": "https"})
        assert answer.code == 303 and "Secure" in answer.headers["Set-Cookie"]


# -- views and actions --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_views_show_nodes_apps_channels_and_members(push, logged_in, raw):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    member = await raw()
    auth = push.authorize_channel(member.socket_id, "presence-room", user_id="alice",
                                  user_info={"name": "Alice"})
    await member.send({"event": "pusher:subscribe", "data": {"channel": "presence-room", **auth}})
    await member.expect("pusher_internal:subscription_succeeded")

    record = await poll_json(logged_in, "/admin/api/nodes",
                             lambda body: body["nodes"] and body["nodes"][0]["connections"] == 2)
    node = record["nodes"][0]
    assert node["node"] == push.hub.node_id and node["address"] == "127.0.0.1:6001"
    assert node["subscriptions"] == 2 and node["channels"] == 2 and node["rss_bytes"] > 0
    assert node["broker"]["connected"] and node["draining"] is False
    apps = await logged_in.get_json("/admin/api/apps")
    assert apps["apps"] == [{"id": MAIN.id, "key": MAIN.key, "enabled": True, "connections": 2}]
    channels = await logged_in.get_json(f"/admin/api/apps/{MAIN.id}/channels?prefix=pres")
    assert channels == {"total": 1, "channels": [
        {"name": "presence-room", "occupied": True, "subscription_count": 1, "user_count": 1}]}
    members = await logged_in.get_json(
        f"/admin/api/apps/{MAIN.id}/members?channel=presence-room")
    assert members == {"members": [{"user_id": "alice", "user_info": {"name": "Alice"}}]}


async def poll_json(client: AdminClient, path: str, ready, timeout: float = 10.0) -> Any:
    """GET ``path`` until ``ready(body)``: node records are written every two seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = await client.get_json(path)
        if ready(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"{path}: {body}"
        await asyncio.sleep(0.1)


@pytest.mark.gen_test(timeout=30)
async def test_event_creator_publishes_as_the_api_would(logged_in, raw):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    path = f"/admin/api/apps/{MAIN.id}/events"
    answer = await logged_in.action(path, {"channels": ["news"], "name": "hello",
                                           "data": '{"text": "from the admin"}'})
    assert answer.code == 200
    event = await socket.expect("hello")
    assert event["channel"] == "news" and json.loads(event["data"]) == {"text": "from the admin"}
    refused_event = await logged_in.action(path, {"channels": ["bad channel!"], "name": "x",
                                                  "data": "{}"})
    assert refused_event.code == 400 and "error" in json.loads(refused_event.body)
    too_big = await logged_in.action(path, {"channels": ["news"], "name": "x",
                                            "data": "x" * (MAIN.max_event_bytes + 1)})
    assert too_big.code == 413


@pytest.mark.gen_test(timeout=60)
async def test_terminate_closes_that_users_connections(logged_in, connect):
    alice = await connect("alice", user="alice")
    await alice.signin()
    await alice.expect(type="signed_in")
    bob = await connect("bob", user="bob")
    await bob.signin()
    await bob.expect(type="signed_in")
    answer = await logged_in.action(f"/admin/api/apps/{MAIN.id}/terminate", {"user_id": "alice"})
    assert answer.code == 200
    await alice.expect(type="state", current="disconnected", timeout=10)
    assert (await bob.state())["state"] == "connected"


@pytest.mark.gen_test(timeout=30)
async def test_drain_node_drains_that_process(push, logged_in, raw):
    socket = await raw()
    await poll_json(logged_in, "/admin/api/nodes", lambda body: body["nodes"])
    answer = await logged_in.action(f"/admin/api/nodes/{push.hub.node_id}/drain", {})
    assert answer.code == 200
    assert await socket.closed(timeout=10) == ErrorCode.RECONNECT
    assert push.hub.draining
    missing = await logged_in.action("/admin/api/nodes/999/drain", {})
    assert missing.code == 404


# -- the debug console --------------------------------------------------------------------


async def next_batch(feed: tornado.websocket.WebSocketClientConnection,
                     timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(feed.read_message(), timeout)
    assert message is not None, f"feed closed: {feed.close_code}"
    return json.loads(message)


async def events_until(feed, found, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every event the feed sent until one for which ``found(event)`` holds."""
    seen: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not any(found(event) for event in seen):
        batch = await next_batch(feed, deadline - asyncio.get_running_loop().time())
        seen += batch["events"]
    return seen


@pytest.mark.gen_test(timeout=30)
async def test_debug_console_shows_connections_subscriptions_and_publishes(push, logged_in, raw,
                                                                           sdk):
    assert not push.admin.tap.watched(MAIN.id)
    feed = await logged_in.feed()
    assert await next_batch(feed) == {"watching": MAIN.id, "filter": {}}
    assert push.admin.tap.watched(MAIN.id)
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    await in_thread(sdk.trigger, "news", "hello", {"text": "x" * 500})
    seen = await events_until(feed, lambda event: event["kind"] == "published")
    kinds = [event["kind"] for event in seen]
    assert kinds == ["connection_opened", "subscribed", "published"]
    published = seen[-1]
    assert published["source"] == "api" and published["event"] == "hello"
    assert published["channel"] == "news" and len(published["data"]) == debug.PREVIEW_CHARS + 1
    socket.connection.close(1000, "bye")
    seen = await events_until(feed, lambda event: event["kind"] == "connection_closed")
    closed = next(event for event in seen if event["kind"] == "connection_closed")
    assert closed["socket_id"] == socket.socket_id and closed["code"] == 1000
    feed.close()
    await until(lambda: not push.admin.tap.watched(MAIN.id))  # nobody watches: nothing is copied


@pytest.mark.gen_test(timeout=30)
async def test_debug_console_filters_by_channel_and_event(push, logged_in):
    feed = await logged_in.feed(query="?channel=news&event=wanted")
    assert (await next_batch(feed))["filter"] == {"channel": "news", "event": "wanted"}
    for channel, event in (("other", "wanted"), ("news", "unwanted"), ("news", "wanted")):
        await push.trigger(channel, event, {})
    seen = await events_until(feed, lambda event: event["kind"] == "published")
    assert [(e["channel"], e["event"]) for e in seen] == [("news", "wanted")]
    feed.close()
    with pytest.raises(tornado.httpclient.HTTPClientError) as handshake:
        await logged_in.feed(query=f"?channel={'x' * (debug.MAX_FILTER_CHARS + 1)}")
    assert handshake.value.code == 400


@pytest.mark.gen_test(timeout=30)
async def test_debug_console_caps_its_rate_and_counts_what_it_skipped(push, logged_in):
    feed = await logged_in.feed()
    await next_batch(feed)
    for n in range(3 * debug.RATE_CAP):  # at once: well within one second
        await push.trigger("news", "burst", {"n": n})
    shown, skipped = 0, 0
    deadline = asyncio.get_running_loop().time() + 10
    while shown + skipped < 3 * debug.RATE_CAP:
        assert asyncio.get_running_loop().time() < deadline, (shown, skipped)
        batch = await next_batch(feed)
        shown += len(batch["events"])
        skipped += batch["skipped"]
    # The burst may straddle a second boundary: at most two windows' worth shown.
    assert debug.RATE_CAP <= shown <= 2 * debug.RATE_CAP
    assert shown + skipped == 3 * debug.RATE_CAP
    feed.close()


@pytest.mark.gen_test(timeout=30)
async def test_debug_console_shows_webhooks_with_their_outcome(receiver):  # noqa: F811
    hooked = dataclasses.replace(MAIN, webhooks=(WebhookTarget(receiver.url("/hooks")),))
    push = Push([hooked], admin_password=PASSWORD,
                webhooks=WebhookOptions(batch_seconds=0.01, first_retry=0.05))
    await push.start()
    try:
        with Served(tornado.web.Application(push.routes())) as client:
            assert (await client.login()).code == 303
            feed = await client.feed()
            await next_batch(feed)
            receiver.fail_next(1)  # the first POST fails with 500, its retry succeeds
            await push.trigger("news", "ignored", {})  # nobody is subscribed: no webhook
            socket = await tornado.websocket.websocket_connect(
                f"ws{client.base[4:]}/app/{MAIN.key}?protocol=7")
            await socket.write_message(json.dumps({"event": "pusher:subscribe",
                                                   "data": {"channel": "news"}}))
            seen = await events_until(feed, lambda e: e.get("outcome") == "success")
            attempts = [(e["outcome"], e["status"], e["events"]) for e in seen
                        if e["kind"] == "webhook"]
            assert attempts == [("http_error", 500, ["channel_occupied"]),
                                ("success", 200, ["channel_occupied"])]
            assert all(e["url"] == receiver.url("/hooks") for e in seen if e["kind"] == "webhook")
            socket.close()
            feed.close()
    finally:
        await push.close()


def test_webhook_urls_are_shown_without_credentials_or_query():
    assert debug.shown_url("https://user:secret@hooks.example:8443/in?token=abc") == \
        "https://hooks.example:8443/in"


# -- credentials ----------------------------------------------------------------------------


def test_session_cookies_expire_and_are_bound_to_the_password():
    keys = admin_auth.AdminKeys(PASSWORD)
    cookie = keys.new_session(now=1000.0)
    session = keys.session_id(cookie, now=1001.0)
    assert session is not None
    assert keys.session_id(cookie, now=1000.0 + admin_auth.SESSION_SECONDS) is None  # expired
    assert admin_auth.AdminKeys(PASSWORD).session_id(cookie, now=1001.0) == session  # any process
    assert admin_auth.AdminKeys(PASSWORD + "!").session_id(cookie, now=1001.0) is None
    session_part, expires, signature = cookie.split(".")
    later = f"{session_part}.{int(expires) + 3600}.{signature}"
    assert keys.session_id(later, now=1001.0) is None  # the expiry is signed too
    assert keys.csrf_matches(session, keys.csrf_token(session))
    assert not keys.csrf_matches(session, keys.csrf_token("another session"))
    assert keys.password_matches(PASSWORD) and not keys.password_matches(PASSWORD[:-1])


def test_login_throttle_backs_off_and_its_table_stays_bounded():
    now = [0.0]
    throttle = admin_auth.LoginThrottle(free=2, longest=8, forget_after=100, size=3,
                                        clock=lambda: now[0])
    for _ in range(2):
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 1  # after the free failures: 1 s, then doubling
    throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 2
    for _ in range(5):
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 8  # capped at the longest wait
    now[0] = 101.0
    assert throttle.wait("10.0.0.1") == 0  # forgotten after a quiet while
    for n in range(10):
        throttle.failed(f"10.0.1.{n}")
        throttle.failed(f"10.0.1.{n}")
    assert len(throttle) == 3  # the least recently failed are forgotten first
    assert throttle.wait("10.0.1.9") > 0 and throttle.wait("10.0.1.0") == 0
    throttle.succeeded("10.0.1.9")
    assert throttle.wait("10.0.1.9") == 0
