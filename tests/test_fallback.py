"""Real pusher-js 8 (Node build) over the HTTP fallbacks, xhr_streaming and xhr_polling.

The cases these transports share with WebSocket unchanged (publish order, socket_id
exclusion) run over all three in test_pusherjs_channels.py."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import tornado.httpclient
import tornado.web

from conftest import (APPS, MAX_MESSAGE_BYTES, SIGNIN_REQUIRED, SMALL_BUFFER, in_thread,
                      subscribed, until)
from fallback_client import fallback_url, post
from test_pusherjs_client_events import error_codes
from tornado_push.pubsub.errors import ErrorCode
from app_server import auth_routes
from tornado_push.handlers import routes
from tornado_push.handlers.fallback import FallbackOptions
from tornado_push.handlers.front import HTTPTimeouts

HTTP_TRANSPORTS = ["xhr_streaming", "xhr_polling"]
#: Short, so that a client that left is noticed within the test.
DISCONNECT_TIMEOUT = 1.0


@pytest.fixture
def app(hub) -> tornado.web.Application:
    fallback = FallbackOptions(disconnect_timeout=DISCONNECT_TIMEOUT)
    return tornado.web.Application(routes(hub, fallback=fallback,
                                          max_message_bytes=MAX_MESSAGE_BYTES)
                                   + auth_routes(APPS))


@pytest.fixture(params=HTTP_TRANSPORTS)
def transport(request) -> str:
    """This module's tests run over the HTTP fallbacks only (see :func:`conftest.connect_over`)."""
    return request.param


@pytest.mark.gen_test(timeout=30)
async def test_private_channel_and_client_events_not_echoed(connect_over, connect, sdk):
    a = await connect_over("a")
    b = await connect("b")  # WebSocket: the two kinds of connection meet on one channel
    await subscribed(a, "private-chat")
    await subscribed(b, "private-chat")
    await in_thread(sdk.trigger, "private-chat", "created", {"id": 7})
    assert (await a.expect(type="channel_event", event="created", timeout=10))["data"] == {"id": 7}
    assert await a.trigger("private-chat", "client-typing", {"who": "a"})
    assert (await b.expect(type="channel_event", event="client-typing", timeout=10)
            )["data"] == {"who": "a"}
    await b.trigger("private-chat", "client-typing", {"who": "b"})
    assert (await a.expect(type="channel_event", event="client-typing", timeout=10)
            )["data"] == {"who": "b"}
    assert [e["data"]["who"] for e in a.seen(type="channel_event", event="client-typing")] == ["b"]


@pytest.mark.gen_test(timeout=40)
async def test_presence_members_both_ways_and_disconnect_leaves_after_the_timer(
        connect_over, connect, hub):
    alice = await connect_over("alice", user="alice")
    bob = await connect("bob", user="bob")
    await subscribed(alice, "presence-room")
    await subscribed(bob, "presence-room")
    assert set((await bob.members("presence-room"))["members"]) == {"alice", "bob"}
    added = await alice.expect(type="channel_event", event="pusher:member_added", timeout=10)
    assert added["data"]["id"] == "bob"
    await bob.disconnect()
    removed = await alice.expect(type="channel_event", event="pusher:member_removed", timeout=10)
    assert removed["data"]["id"] == "bob"
    carol = await connect("carol", user="carol")
    await subscribed(carol, "presence-room")
    await alice.disconnect()  # pusher-js sends nothing: the server's timer notices
    removed = await carol.expect(type="channel_event", event="pusher:member_removed",
                                 timeout=DISCONNECT_TIMEOUT + 15)
    assert removed["data"]["id"] == "alice"
    assert [s.transport.kind for s in hub.sessions(APPS[0])] == ["ws"]


@pytest.mark.gen_test(timeout=60)
async def test_more_than_256_kib_on_one_session_arrives_whole(connect_over, hub):
    a = await connect_over("a")
    await subscribed(a, "bulk")
    payload = "x" * 9000
    count = 40  # 360 KB, written back to back: past pusher-js's 256 KiB stream recycle
    for n in range(count):
        await hub.trigger(APPS[0], ["bulk"], "part", json.dumps({"n": n, "p": payload}))
        await asyncio.sleep(0)  # one write each, as publications arriving one by one
    received = [(await a.expect(type="channel_event", event="part", timeout=20))["data"]
                for _ in range(count)]
    assert [data["n"] for data in received] == list(range(count))
    assert all(data["p"] == payload for data in received)
    assert len(a.seen(type="connected")) == 1  # the same connection throughout: no 1006


@pytest.mark.gen_test(timeout=30)
async def test_close_codes_reach_pusherjs_in_c_frames(connect_over, hub):
    late = await connect_over("late", app=SIGNIN_REQUIRED, user="alice")
    await late.expect(type="state", current="disconnected", timeout=10)
    assert 4009 in error_codes(late)  # refused: pusher-js stays disconnected
    client = await connect_over("a")
    first = client.seen(type="connected")[0]["socket_id"]
    hub.close_all(ErrorCode.RECONNECT, "Reconnect now")  # 4200: pusher-js reconnects at once
    again = await client.expect(type="connected", timeout=10)
    assert again["socket_id"] != first


# -- the wire, as pusher-js's requests put it -----------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_preflight_and_posts_answer_cors(server_port):
    url = fallback_url(server_port, "12/abcdefgh/xhr_streaming?protocol=7")
    preflight = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method="OPTIONS", headers={"Origin": "http://page.example",
                                        "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "content-type"})
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://page.example"
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    poll = await post(fallback_url(server_port, "12/abcdefgh/xhr?protocol=7"),
                      Origin="http://page.example")
    assert poll.code == 200 and poll.body.startswith(b"o\n")
    assert poll.headers["Access-Control-Allow-Origin"] == "http://page.example"
    lines = poll.body.decode().splitlines()[1:]
    if not lines:  # the greeting came after the poll was answered: the next one has it
        poll = await post(fallback_url(server_port, "12/abcdefgh/xhr?protocol=7"))
        assert poll.headers["Access-Control-Allow-Origin"] == "*"
        lines = poll.body.decode().splitlines()
    established = json.loads(json.loads(lines[0][1:])[0])
    assert established["event"] == "pusher:connection_established"


@pytest.mark.gen_test(timeout=30)
async def test_refusals_are_frames_after_o_and_bad_sends_get_http_errors(server_port, caplog):
    caplog.set_level(logging.INFO)
    refused = await post(fallback_url(server_port, "7/refusedk/xhr?protocol=7",
                                      key="no-such-key"))
    lines = refused.body.decode().splitlines()
    assert lines[0] == "o" and lines[2].startswith("c[4001,")
    assert json.loads(json.loads(lines[1][1:])[0])["data"]["code"] == 4001
    unknown = await post(fallback_url(server_port, "7/nosuchid/xhr_send"), body='["{}"]')
    assert unknown.code == 404
    for kind in ("xhr", "xhr_send"):  # an id that is not UTF-8: a 400, logged without a traceback
        assert (await post(fallback_url(server_port, f"7/%FF/{kind}?protocol=7"))).code == 400
    await post(fallback_url(server_port, "7/sessionx/xhr?protocol=7"))  # opens the session
    send = fallback_url(server_port, "7/sessionx/xhr_send")
    for body in ("not json", '{"a": 1}', "[1, 2]"):
        assert (await post(send, body=body)).code == 400
    assert (await post(send, body="[]")).code == 204
    too_large = json.dumps(["x" * (MAX_MESSAGE_BYTES + 1)])
    assert (await post(send, body=too_large)).code == 413
    deep = "[" * 5000 + "]" * 5000  # past Python's recursion limit
    for body in (deep, '["\\ud800"]', b'["\xed\xa0\x80"]'):  # lone surrogates: not text
        refused = await post(send, body=body)
        assert refused.code == 400 and refused.reason != "Bad Request", (body, refused.reason)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/pusher/app/app-key/" in logged  # the access log names the app...
    assert "sessionx" not in logged and "nosuchid" not in logged  # ...never the session
    assert not [r for r in caplog.records if r.exc_info]


class TestSessionsPerAddress:
    """One client address cannot fill the process's session table for everyone else."""

    @pytest.fixture
    def app(self, hub) -> tornado.web.Application:
        fallback = FallbackOptions(disconnect_timeout=DISCONNECT_TIMEOUT, max_sessions_per_ip=3)
        return tornado.web.Application(routes(hub, fallback=fallback) + auth_routes(APPS))

    @pytest.mark.gen_test(timeout=30)
    async def test_an_address_over_its_share_gets_429_and_others_still_connect(
            self, server_port, hub):
        async def open_session(sid: str, source: str) -> tornado.httpclient.HTTPResponse:
            request = tornado.httpclient.HTTPRequest(
                fallback_url(server_port, f"7/{sid}/xhr?protocol=7"), method="POST", body="",
                network_interface=source)
            return await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)

        for n in range(3):
            assert (await open_session(f"flood{n}", "127.0.0.1")).body.startswith(b"o\n")
        refused = await open_session("flood3", "127.0.0.1")
        assert (refused.code, refused.reason) == (429, "Too many HTTP sessions from this address")
        assert len(list(hub.sessions(APPS[0]))) == 3  # refused before the engine saw it
        other = await open_session("other", "127.0.0.2")
        assert other.code == 200 and other.body.startswith(b"o\n")
        # Once the flood's sessions expire (no receive request within the timer), the
        # address has its share again.
        await until(lambda: not list(hub.sessions(APPS[0])))
        assert (await open_session("again", "127.0.0.1")).code == 200


class TestQuietStream:
    """A stream that outlives the server's HTTP timeouts, kept alive by heartbeats."""

    @pytest.fixture
    def http_timeouts(self) -> HTTPTimeouts:
        return HTTPTimeouts(idle=0.5, header=0.5, body=0.5)

    @pytest.fixture
    def app(self, hub) -> tornado.web.Application:
        fallback = FallbackOptions(disconnect_timeout=DISCONNECT_TIMEOUT, heartbeat_interval=0.3)
        return tornado.web.Application(routes(hub, fallback=fallback) + auth_routes(APPS))

    @pytest.mark.gen_test(timeout=30)
    async def test_quiet_session_stays_past_the_http_timeouts(self, connect_over, hub, sdk):
        a = await connect_over("a")
        await subscribed(a, "news")
        session = next(iter(hub.sessions(APPS[0])))
        # What is tested is time passing: several heartbeats and HTTP timeouts of quiet.
        await asyncio.sleep(2.0)
        await in_thread(sdk.trigger, "news", "late", {"v": 1})
        assert (await a.expect(type="channel_event", event="late", timeout=10))["data"] == {"v": 1}
        assert [s.socket_id for s in hub.sessions(APPS[0])] == [session.socket_id]
        assert len(a.seen(type="connected")) == 1


class TestPinnedHost:
    """``o{"hostname": ...}``: pusher-js sends the rest of the session to that host."""

    @pytest.fixture
    def hosts(self) -> list[tuple[str, str]]:
        """(Host header, path) of every request the server finished."""
        return []

    @pytest.fixture
    def app(self, hub, hosts) -> tornado.web.Application:
        fallback = FallbackOptions(hostname="127.0.0.1")
        return tornado.web.Application(
            routes(hub, fallback=fallback) + auth_routes(APPS),
            log_function=lambda handler: hosts.append((handler.request.host,
                                                       handler.request.path)))

    @pytest.mark.gen_test(timeout=30)
    async def test_open_frame_names_the_host_and_pusherjs_follows_it(self, connect, server_port,
                                                                   sdk, hosts):
        poll = await post(fallback_url(server_port, "1/pinnedid/xhr?protocol=7"))
        assert poll.body.decode().splitlines()[0] == 'o{"hostname": "127.0.0.1"}'
        hosts.clear()
        a = await connect("a", enabledTransports=["xhr_polling"], httpHost="localhost",
                          httpPort=server_port)
        await subscribed(a, "news")
        await in_thread(sdk.trigger, "news", "pinned", {})
        await a.expect(type="channel_event", event="pinned", timeout=10)
        session = [host for host, path in hosts if path.startswith("/pusher/")]
        assert session[0] == f"localhost:{server_port}"  # the first poll, as configured
        assert set(session[1:]) == {f"127.0.0.1:{server_port}"}  # the rest, pinned
        assert len(session) >= 3


class TestBounds:
    """The registry's size and each session's outbox are bounded."""

    @pytest.fixture
    def app(self, hub) -> tornado.web.Application:
        fallback = FallbackOptions(max_sessions=2, disconnect_timeout=30)
        return tornado.web.Application(routes(hub, fallback=fallback) + auth_routes(APPS))

    @pytest.mark.gen_test(timeout=30)
    async def test_sessions_over_the_limit_get_503(self, server_port):
        for sid in ("session1", "session2"):
            assert (await post(fallback_url(server_port, f"1/{sid}/xhr?protocol=7"))).code == 200
        assert (await post(fallback_url(server_port, "1/session3/xhr?protocol=7"))).code == 503

    @pytest.mark.gen_test(timeout=30)
    async def test_a_client_that_stops_polling_is_closed_as_a_slow_consumer(self, server_port,
                                                                           hub):
        app = SMALL_BUFFER  # max_outbound_bytes 256 KiB
        url = fallback_url(server_port, "1/stalled1/xhr?protocol=7", key=app.key)
        while b"connection_established" not in (await post(url)).body:
            pass  # o, then the greeting (in the same answer or the next)
        subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": "news"}})
        send = fallback_url(server_port, "1/stalled1/xhr_send", key=app.key)
        assert (await post(send, body=json.dumps([subscribe]))).code == 204
        for n in range(40):  # 360 KB that nobody polls for
            await hub.trigger(app, ["news"], "part", json.dumps({"n": n, "p": "x" * 9000}))
        await until(lambda: hub.counters(app).slow_consumers == 1)
        assert list(hub.sessions(app)) == []
        answer = (await post(url)).body.decode().splitlines()
        error = json.loads(json.loads(answer[-2][1:])[-1])
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4100
        assert answer[-1].startswith("c[4100,")
