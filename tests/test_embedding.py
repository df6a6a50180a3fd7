"""Push embedded in a host Tornado app: routes, auth from the host's user, publish, Redis.

The host here is a small Tornado app of its own (host_handlers.py): it knows
its users from a signed bearer token (pusher-js in Node may not send cookies), authorizes
channels with ``push.authorize_channel`` and publishes with ``push.trigger``.
"""

from __future__ import annotations

import urllib.parse
import uuid

import motor.motor_asyncio
import pusher
import pusher.http
import pusher.pusher_client
import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

import host_handlers
from conftest import running, subscribed
from host_handlers import ROOM
from pusherjs import JSClient, PusherJS

from tornado_push import App, MongoHistoryStore, Push, TriggerRefused, load_settings

HOST_APP = App(id="42", key="host-key", secret="host-secret")
OTHER_APP = App(id="43", key="other-key", secret="other-secret", max_event_bytes=100)
COOKIE_SECRET = "host-cookie-secret"


def token(user: str) -> str:
    return host_handlers.bearer_token(COOKIE_SECRET, user)


def host_application(push: Push, prefix: str = "") -> tornado.web.Application:
    return tornado.web.Application(host_handlers.routes(push, COOKIE_SECRET) + push.routes(prefix),
                                   xsrf_cookies=True)  # push's signed API must not mind


@pytest.fixture
def prefix() -> str:
    """Where the host mounts push; the tests marked ``at_both_paths`` try a prefix too."""
    return ""


at_both_paths = pytest.mark.parametrize("prefix", ["", "/push"], ids=["standard-paths", "prefix"])


@pytest.fixture
def push(io_loop) -> Push:
    yield from running(io_loop, Push(apps=[HOST_APP, OTHER_APP]))


@pytest.fixture
def app(push: Push, prefix: str) -> tornado.web.Application:
    """The host application pytest-tornado serves on ``http_port``."""
    return host_application(push, prefix)


async def connect_as(js: PusherJS, user: str, port: int, *, auth_port: int | None = None,
                     prefix: str = "") -> tuple[JSClient, str]:
    """A pusher-js client on ``port`` whose channel auth asks the host as ``user``."""
    client = js.client(user)
    options = {"channelAuthorization": {
        "endpoint": f"http://127.0.0.1:{auth_port or port}/pusher/auth", "transport": "ajax",
        "headers": {"Authorization": f"Bearer {token(user)}"}}}
    if prefix:
        options["wsPath"] = prefix
    await client.connect(HOST_APP.key, port, **options)
    connected = await client.expect(type="connected")
    return client, connected["socket_id"]


async def say(port: int, user: str, text: str, socket_id: str | None = None) -> None:
    """POST the host's /say as ``user``, from the socket ``socket_id``."""
    form = {"text": text, **({"socket_id": socket_id} if socket_id else {})}
    await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/say", method="POST", body=urllib.parse.urlencode(form),
        headers={"Authorization": f"Bearer {token(user)}"})


@at_both_paths
@pytest.mark.gen_test(timeout=20)
async def test_presence_channel_authorized_by_host_user_at_standard_paths_and_prefix(
        js: PusherJS, server_port: int, prefix: str) -> None:
    alice, _ = await connect_as(js, "alice", server_port, prefix=prefix)
    joined = await subscribed(alice, ROOM)
    assert joined["data"]["me"] == {"id": "alice", "info": {"name": "Alice"}}
    bob, _ = await connect_as(js, "bob", server_port, prefix=prefix)
    await subscribed(bob, ROOM)
    added = await alice.expect(type="channel_event", channel=ROOM, event="pusher:member_added")
    assert added["data"] == {"id": "bob", "info": {"name": "Bob"}}


@at_both_paths
@pytest.mark.gen_test(timeout=20)
async def test_trigger_from_a_host_handler_reaches_others_but_not_the_sender(
        js: PusherJS, server_port: int, prefix: str) -> None:
    alice, _ = await connect_as(js, "alice", server_port, prefix=prefix)
    bob, bob_socket = await connect_as(js, "bob", server_port, prefix=prefix)
    await subscribed(alice, ROOM)
    await subscribed(bob, ROOM)
    await say(server_port, "bob", "hello", socket_id=bob_socket)
    heard = await alice.expect(type="channel_event", channel=ROOM, event="message")
    assert heard["data"] == {"from": "bob", "text": "hello"}
    # Events arrive in order: once bob has the next one, the first has passed him by.
    await say(server_port, "alice", "and you?")
    await bob.expect(type="channel_event", channel=ROOM, event="message",
                     data={"from": "alice", "text": "and you?"})
    assert not bob.seen(type="channel_event", event="message", data={"from": "bob", "text": "hello"})


@at_both_paths
@pytest.mark.gen_test(timeout=20)
async def test_http_api_under_a_prefix_takes_requests_signed_over_the_standard_path(
        js: PusherJS, server_port: int, prefix: str) -> None:
    reader, _ = await connect_as(js, "reader", server_port, prefix=prefix)
    await subscribed(reader, "news")
    # The SDK signs /apps/{id}/events; a client configured with a path prefix
    # (the PHP SDK's `path`) sends it under that prefix.
    sdk = pusher.pusher_client.PusherClient(app_id=HOST_APP.id, key=HOST_APP.key,
                                            secret=HOST_APP.secret)
    signed = pusher.http.Request(sdk, "POST", f"/apps/{HOST_APP.id}/events",
                                 {"name": "headline", "channels": ["news"], "data": '"extra"'})
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server_port}{prefix}{signed.signed_path}", method="POST",
        body=signed.body, headers={"Content-Type": "application/json"})
    assert response.code == 200
    await reader.expect(type="channel_event", channel="news", event="headline", data="extra")


@pytest.mark.gen_test(timeout=20)
async def test_trigger_chooses_the_app_by_id_and_refuses_invalid_events(
        js: PusherJS, server_port: int, push: Push) -> None:
    with pytest.raises(TriggerRefused, match="Invalid channel name") as refused:
        await push.trigger("no spaces", "e", "x")
    assert refused.value.status == 400
    with pytest.raises(TriggerRefused, match="over 100 bytes") as refused:
        await push.trigger(["news"], "e", "x" * 101, app_id=OTHER_APP.id)
    assert refused.value.status == 413
    with pytest.raises(TriggerRefused, match="socket_id"):
        await push.trigger("news", "e", "x", exclude="not-a-socket")
    for event, data in (("e", "bad \ud800"), ("e", {"text": "bad \udfff"}), ("e\ud800", "x")):
        with pytest.raises(TriggerRefused, match="lone UTF-16 surrogate") as refused:
            await push.trigger("history-news", event, data)
        assert refused.value.status == 400
    with pytest.raises(LookupError, match="'99'"):
        await push.trigger("news", "e", "x", app_id="99")
    reader, _ = await connect_as(js, "reader", server_port)
    await subscribed(reader, "news")
    await push.trigger("news", "other-app", "x" * 101)  # the first app's limit is 10 KB
    await reader.expect(type="channel_event", channel="news", event="other-app")


def test_auth_responses_match_the_official_sdk_byte_for_byte() -> None:
    push = Push(apps=[HOST_APP])
    sdk = pusher.Pusher(app_id=HOST_APP.id, key=HOST_APP.key, secret=HOST_APP.secret)
    assert (push.authorize_channel("1.2", "private-orders", user_id="ignored")
            == sdk.authenticate("private-orders", "1.2"))
    for user_id, info in (("alice", {"name": "Alice", "tags": ["a", "ü"]}), (7, None)):
        member = {"user_id": user_id, **({"user_info": info} if info is not None else {})}
        assert (push.authorize_channel("3.4", ROOM, user_id=user_id, user_info=info)
                == sdk.authenticate(ROOM, "3.4", member))
    user = {"id": "alice", "user_info": {"name": "Alice"}, "watchlist": ["bob", "carol"]}
    assert (push.authenticate_user("5.6", "alice", user_info={"name": "Alice"},
                                   watchlist=["bob", "carol"])
            == sdk.authenticate_user("5.6", user))
    assert push.authenticate_user("5.6", "bob") == sdk.authenticate_user("5.6", {"id": "bob"})


@pytest.mark.parametrize("call, message", [
    (lambda push: push.authorize_channel("abc", "private-a"), "socket_id must look like"),
    (lambda push: push.authorize_channel("1.2", "news"), "news is public"),
    (lambda push: push.authorize_channel("1.2", "private-a b"), "Invalid channel name"),
    (lambda push: push.authorize_channel("1.2", "private-encrypted-a"), "encryption master key"),
    (lambda push: push.authorize_channel("1.2", ROOM), "give the user_id"),
    (lambda push: push.authorize_channel("1.2", ROOM, user_id=""), "user_id of 1 to 128"),
    (lambda push: push.authorize_channel("1.2", ROOM, user_id="u", user_info="x" * 2000),
     "user_info is over 1024 bytes"),
    (lambda push: push.authenticate_user("1.2", "no spaces"), "'id' string of valid characters"),
    (lambda push: push.authenticate_user("1.2", "u", watchlist=["a b"]), "watchlist"),
    (lambda push: push.authorize_channel("1.2", "private-a", app_id="99"), "No app with id"),
])
def test_auth_helpers_refuse_what_the_server_would_refuse(call, message) -> None:
    with pytest.raises((ValueError, LookupError), match=message):
        call(Push(apps=[HOST_APP]))


@pytest.mark.gen_test(timeout=30)
async def test_host_with_redis_publishes_to_a_client_of_a_server_process(
        js: PusherJS, redis_server, server_processes) -> None:
    cluster = {"PUSH_REDIS_URL": redis_server.url, "PUSH_REDIS_PREFIX": f"embed-{uuid.uuid4().hex[:8]}",
               "PUSH_APP_ID": HOST_APP.id,
               "PUSH_APP_KEY": HOST_APP.key, "PUSH_APP_SECRET": HOST_APP.secret}
    [process] = await server_processes(1, **cluster)
    push = Push.from_settings(load_settings(cluster))
    await push.start()
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    host = tornado.httpserver.HTTPServer(host_application(push))
    host.add_sockets(sockets)
    host_port = sockets[0].getsockname()[1]
    try:
        alice, alice_socket = await connect_as(js, "alice", host_port)
        bob, _ = await connect_as(js, "bob", process.port, auth_port=host_port)
        await subscribed(alice, ROOM)
        joined = await subscribed(bob, ROOM)
        assert set(joined["data"]["members"]) == {"alice", "bob"}
        await say(host_port, "alice", "across processes", socket_id=alice_socket)
        await bob.expect(type="channel_event", channel=ROOM, event="message",
                         data={"from": "alice", "text": "across processes"})
    finally:
        host.stop()
        await push.close()


@pytest.mark.gen_test(timeout=30)
async def test_history_goes_to_the_database_the_host_injects(mongo_server):
    client = motor.motor_asyncio.AsyncIOMotorClient(mongo_server.url)
    database = client[f"host_{uuid.uuid4().hex[:8]}"]
    push = Push([App(id="1", key="k", secret="s", history_channels=("chat-*",))],
                history=MongoHistoryStore(database=database))
    await push.start()
    try:
        await push.trigger("chat-lobby", "message", {"text": "kept"})
        await push.trigger("news", "message", {"text": "not kept"})
        entries = await database["history_entries"].find({}).to_list(10)
        assert [(entry["channel"], entry["offset"]) for entry in entries] == [("chat-lobby", 1)]
    finally:
        await push.close()
        await client.drop_database(database.name)
        client.close()
