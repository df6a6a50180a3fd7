"""The demo endpoints under ``/demo/`` and the monitor ticker, in-process, with bare sockets.

They sign presence subscriptions only for the chat rooms and publish only the
demo's events, with a JSON error for anything else; ``PUSH_DEMO`` turns them
on by default only for the embedded default (the default app, its public secret).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient

from conftest import APPS, MAIN
from tornado_push.handlers.demo import CHAT_PREFIX, MAX_BODY_BYTES, MonitorTicker
from tornado_push.pubsub.hub import Hub
from tornado_push.embed import Push
from tornado_push.server import make_application
from tornado_push.settings import Settings, load_settings

ROOM = "presence-chat-lobby"
MESSAGE = {"user_id": "u1", "name": "Ann", "text": "Hello"}


@pytest.fixture
def demo_on() -> bool:
    """Parametrize to False for a server with the demo off."""
    return True


@pytest.fixture
def app(hub: Hub, demo_on: bool) -> tornado.web.Application:
    return make_application(Push.from_settings(Settings(apps=tuple(APPS), demo=demo_on), hub))


@pytest.fixture
def fetch(server_port: int):
    """``await fetch(path, body)``: (status, parsed JSON or None); a body makes it a POST."""

    async def fetch(path: str, body: str | bytes | None = None) -> tuple[int, Any]:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server_port}{path}", method="GET" if body is None else "POST",
            body=body, raise_error=False)
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        return response.code, json.loads(response.body) if is_json else None

    return fetch


async def join_room(raw, fetch, user_id: str = "u1", name: str = "Ann", room: str = ROOM):
    """A bare socket in a chat room, subscribed with the demo's own auth."""
    socket = await raw()
    status, auth = await fetch("/demo/auth", urlencode(
        {"socket_id": socket.socket_id, "channel_name": room, "user_id": user_id, "name": name}))
    assert status == 200, auth
    await socket.send({"event": "pusher:subscribe", "data": {"channel": room, **auth}})
    succeeded = await socket.expect("pusher_internal:subscription_succeeded")
    return socket, json.loads(succeeded["data"])["presence"]


@pytest.mark.gen_test
async def test_config_names_the_app_key_and_channels(fetch):
    assert await fetch("/demo/config") == (200, {
        "demo": True, "key": MAIN.key, "client_events": True,
        "channels": {"chat_prefix": "presence-chat-", "monitor": "demo-monitor",
                     "notifications": "demo-notifications"}})


@pytest.mark.gen_test
async def test_auth_signs_a_chat_room_for_the_chosen_name(raw, fetch):
    socket, presence = await join_room(raw, fetch, name="  Ann  ")
    assert presence == {"ids": ["u1"], "hash": {"u1": {"name": "Ann"}}, "count": 1}
    other, presence = await join_room(raw, fetch, user_id="u2", name="Bob")
    assert presence["count"] == 2
    added = await socket.expect("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "u2", "user_info": {"name": "Bob"}}


@pytest.mark.gen_test
@pytest.mark.parametrize("form, error", [
    ({"channel_name": "private-secrets"}, "channel must be presence-chat-{room}"),
    ({"channel_name": "presence-other"}, "channel must be presence-chat-{room}"),
    ({"channel_name": "presence-chat-" + "x" * 41}, "channel must be presence-chat-{room}"),
    ({"socket_id": "abc"}, "socket_id must look like 123.456"),
    ({"user_id": "has space"}, "user_id must be"),
    ({"name": "   "}, "name must be a non-empty string"),
    ({"name": "n" * 33}, "name is over 32 characters"),
])
async def test_auth_refuses_anything_but_a_chat_room_with_a_name(fetch, form, error):
    fields = {"socket_id": "1.2", "channel_name": ROOM, "user_id": "u1", "name": "Ann", **form}
    status, body = await fetch("/demo/auth", urlencode(fields))
    assert status == 400 and error in body["error"], body


@pytest.mark.gen_test
async def test_trigger_sends_a_chat_message_to_the_whole_room_sender_included(raw, fetch):
    sender, _ = await join_room(raw, fetch)
    other, _ = await join_room(raw, fetch, user_id="u2", name="Bob")
    body = {"channel": ROOM, "event": "message", "data": {**MESSAGE, "text": "  Hello  "}}
    status, answer = await fetch("/demo/trigger", json.dumps(body))
    assert status == 200
    for socket in (sender, other):
        frame = await socket.expect("message")
        data = json.loads(frame["data"])
        assert (frame["channel"], data["id"]) == (ROOM, answer["id"])
        assert {key: data[key] for key in MESSAGE} == MESSAGE
        assert isinstance(data["time"], float)


@pytest.mark.gen_test
@pytest.mark.parametrize("body, status, error", [
    ("not json", 400, "Body is not valid JSON"),
    ("[1, 2]", 400, "Body must be a JSON object"),
    (json.dumps({"channel": "news", "event": "message", "data": MESSAGE}), 400,
     "channel must be presence-chat-{room}"),
    (json.dumps({"channel": ROOM, "event": "client-typing", "data": MESSAGE}), 400,
     "event must be 'message'"),
    (json.dumps({"channel": ROOM, "event": "message", "data": "hi"}), 400, "data must be an object"),
    (json.dumps({"channel": ROOM, "event": "message", "data": {**MESSAGE, "text": ""}}), 400,
     "text must be a non-empty string"),
    (json.dumps({"channel": ROOM, "event": "message", "data": {**MESSAGE, "text": "x" * 501}}), 400,
     "text is over 500 characters"),
    (json.dumps({"channel": ROOM, "event": "message",
                 "data": {**MESSAGE, "text": "x" * MAX_BODY_BYTES}}), 413, "over 4096 bytes"),
])
async def test_trigger_refuses_bad_input_with_a_json_error(fetch, body, status, error):
    answer = await fetch("/demo/trigger", body)
    assert answer[0] == status and error in answer[1]["error"], answer


@pytest.mark.gen_test
async def test_notify_reaches_every_notifications_page(raw, fetch):
    viewer = await raw()
    await viewer.send({"event": "pusher:subscribe", "data": {"channel": "demo-notifications"}})
    await viewer.expect("pusher_internal:subscription_succeeded")
    status, _ = await fetch("/demo/notify", json.dumps({"title": "Deployed", "body": "v2",
                                                        "level": "success"}))
    assert status == 200
    data = json.loads((await viewer.expect("notification"))["data"])
    assert (data["title"], data["body"], data["level"]) == ("Deployed", "v2", "success")


@pytest.mark.gen_test
@pytest.mark.parametrize("body, error", [
    ({"title": ""}, "title must be a non-empty string"),
    ({"title": "t" * 81}, "title is over 80 characters"),
    ({"title": "t", "level": "panic"}, "level must be one of info, success, warning"),
    ({"title": "t", "body": 5}, "body must be a string"),
])
async def test_notify_refuses_bad_input(fetch, body, error):
    status, answer = await fetch("/demo/notify", json.dumps(body))
    assert status == 400 and error in answer["error"], answer


@pytest.mark.gen_test
@pytest.mark.parametrize("demo_on", [False])
async def test_demo_off_serves_the_index_and_no_demo_endpoint(fetch, demo_on):
    assert await fetch("/demo/config") == (200, {"demo": False})
    for path in ("/demo/auth", "/demo/trigger", "/demo/notify"):
        assert (await fetch(path, "{}"))[0] == 404
    for path, status in (("/", 200), ("/push.js", 200), ("/chat.html", 404), ("/monitor.html", 404)):
        assert (await fetch(path))[0] == status, path


@pytest.mark.gen_test
async def test_demo_on_serves_every_page(fetch):
    for path in ("/", "/chat.html", "/monitor.html", "/notifications.html", "/push.js", "/demo.css"):
        assert (await fetch(path))[0] == 200, path


@pytest.mark.gen_test
async def test_monitor_ticker_publishes_real_figures_to_watchers(hub, raw):
    watcher = await raw()
    await watcher.send({"event": "pusher:subscribe", "data": {"channel": "demo-monitor"}})
    await watcher.expect("pusher_internal:subscription_succeeded")
    ticker = MonitorTicker(hub, MAIN, interval=0.05)
    ticker.start()
    try:
        first = json.loads((await watcher.expect("figures"))["data"])
        second = json.loads((await watcher.expect("figures"))["data"])
    finally:
        ticker.stop()
    assert (first["connections"], first["watchers"], first["node"]) == (1, 1, hub.node_id)
    assert first["rss_mb"] > 1 and first["loop_lag_ms"] >= 0
    # The first tick reached the watcher: one message sent in the second's window.
    assert second["messages_per_second"] > 0 and second["time"] > first["time"]


@pytest.mark.gen_test
async def test_messages_sent_counts_each_frame_delivered_once_excluded_sender_left_out(hub, raw):
    sockets = [await raw() for _ in range(3)]
    for socket in sockets:
        await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
        await socket.expect("pusher_internal:subscription_succeeded")
    before = hub.messages_sent
    await hub.trigger(MAIN, ["news"], "a", "{}")
    await hub.trigger(MAIN, ["news"], "b", "{}", exclude=sockets[0].socket_id)
    assert hub.messages_sent - before == 3 + 2
    assert hub.health()["messages_sent"] == hub.messages_sent


@pytest.mark.gen_test
async def test_recent_answers_only_for_chat_rooms_that_keep_history(fetch):
    status, answer = await fetch("/demo/recent?channel=news&before=1")
    assert status == 400 and answer["error"].startswith("channel must be presence-chat-")
    status, answer = await fetch(f"/demo/recent?channel={ROOM}&before=1")  # MAIN keeps none of them
    assert status == 404 and "keeps no history" in answer["error"]


# -- PUSH_DEMO ------------------------------------------------------------------------

@pytest.mark.parametrize("environ, demo", [
    ({}, True),  # plain `python server.py`: the default app with its well-known secret
    ({"PUSH_APP_SECRET": "a-real-secret"}, False),
    ({"PUSH_APP_SECRET": "a-real-secret", "PUSH_DEMO": "true"}, True),
    ({"PUSH_DEMO": "false"}, False),
])
def test_demo_is_on_by_default_only_for_the_embedded_default(environ, demo):
    assert load_settings(environ).demo is demo


def test_demo_is_off_without_the_default_app_and_runs_on_the_first_app(tmp_path):
    path = tmp_path / "apps.json"
    path.write_text(json.dumps([{"id": "7", "key": "k7", "secret": "app-secret"}]))
    settings = load_settings({"PUSH_DEFAULT_APP": "false", "PUSH_APPS_FILE": str(path)})
    assert settings.demo is False
    forced = load_settings({"PUSH_DEFAULT_APP": "false", "PUSH_APPS_FILE": str(path), "PUSH_DEMO": "1"})
    assert forced.demo is True and forced.demo_app.key == "k7"


@pytest.mark.parametrize("environ, kept", [
    ({}, True),
    ({"PUSH_APP_SECRET": "a-real-secret", "PUSH_DEMO": "true"}, True),
    ({"PUSH_DEMO": "false"}, False),
    ({"PUSH_APP_HISTORY_CHANNELS": "orders-*"}, False),  # the operator's choice wins
])
def test_chat_rooms_keep_history_while_the_demo_is_on(environ, kept):
    app = load_settings(environ).demo_app
    assert (app.history_retention(CHAT_PREFIX + "lobby") is not None) is kept


def test_push_demo_must_be_a_boolean():
    with pytest.raises(ValueError, match="PUSH_DEMO must be true or false"):
        load_settings({"PUSH_DEMO": "maybe"})
