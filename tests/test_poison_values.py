"""Poison values: text UTF-8 cannot carry is refused at the edge and records nothing.

A lone UTF-16 surrogate escaped in JSON (``"\\ud800"``, which ``json.dumps``
writes and the official SDKs sign) once became a presence member, a history
entry or a cached event that nobody could be sent afterwards. Here each way in
is refused before anything is recorded, and what older data may still hold is
skipped with an announced gap.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient

from app_server import sdk_client
from conftest import APPS, HISTORY_CHANNELS, MAIN, in_thread
from test_bad_input import assert_still_usable, subscribe_presence
from test_http_api import post
from tornado_push.embed import Push
from tornado_push.pubsub.apps import App
from tornado_push.pubsub import session as session_module
from tornado_push.pubsub.hub import Hub
from tornado_push.server import make_application
from tornado_push.settings import Settings

LONE = "x\ud800"  # json.dumps escapes it: "x\\ud800"
EVENTS = f"/apps/{MAIN.id}/events"


#: The main app, its demo chat rooms keeping history as server.py's demo app does.
CHAT_MAIN = dataclasses.replace(MAIN, history_channels=(*HISTORY_CHANNELS, "presence-chat-*"))
CHAT_APPS = tuple(CHAT_MAIN if app is MAIN else app for app in APPS)


@pytest.fixture
def hub_apps() -> list[App]:
    return list(CHAT_APPS)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    """The server as server.py makes it, demo endpoints included."""
    return make_application(Push.from_settings(Settings(apps=CHAT_APPS, demo=True), hub))


def no_errors_logged(caplog) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def subscription_error(socket) -> dict:
    return json.loads((await socket.expect("pusher:subscription_error"))["data"])


async def history_position(socket, channel: str) -> tuple[str, int]:
    await socket.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    succeeded = await socket.expect("pusher_internal:subscription_succeeded")
    return succeeded["epoch"], succeeded["offset"]


async def resume(socket, channel: str, epoch: str, offset: int, member: dict | None = None
                 ) -> list[dict]:
    """Subscribe resuming from ``epoch``/``offset`` (on a presence channel as ``member``);
    the frames up to the resume's answer."""
    signed = (sdk_client(MAIN, 0).authenticate(channel, socket.socket_id, member)
              if member is not None else {})
    await socket.send({"event": "pusher:subscribe",
                       "data": {"channel": channel, **signed,
                                "resume": {"epoch": epoch, "offset": offset}}})
    frames = []
    while True:
        frame = await socket.receive()
        assert frame is not None, f"closed ({socket.close_code}) during the resume"
        frames.append(frame)
        if frame["event"] in ("pusher_internal:resume_succeeded",
                              "pusher_internal:resume_failed", "pusher:error"):
            return frames


# -- presence -------------------------------------------------------------------------

@pytest.mark.parametrize("channel_data", [{"user_id": LONE}, {"user_id": "ok", "user_info": {"name": LONE}},
                                          {"user_id": "ok", "user_info": {LONE: 1}}])
@pytest.mark.gen_test(timeout=20)
async def test_a_member_with_a_lone_surrogate_is_refused_and_the_channel_stays_usable(
        raw, sdk, caplog, channel_data):
    poisoner = await raw()
    await subscribe_presence(poisoner, MAIN, "presence-room", channel_data)
    error = await subscription_error(poisoner)
    assert error["status"] == 400 and "surrogate" in error["error"]
    await assert_still_usable(poisoner)
    assert (await in_thread(sdk.users_info, "presence-room"))["users"] == []
    joiner = await raw()
    await subscribe_presence(joiner, MAIN, "presence-room", {"user_id": "ann"})
    succeeded = await joiner.expect("pusher_internal:subscription_succeeded")
    assert json.loads(succeeded["data"])["presence"]["ids"] == ["ann"]
    no_errors_logged(caplog)


@pytest.mark.gen_test(timeout=20)
async def test_a_sign_in_with_a_lone_surrogate_is_refused_without_a_traceback(raw, caplog):
    socket = await raw()
    user_data = json.dumps({"id": "ann", "user_info": {"name": LONE}})
    auth = sdk_client(MAIN, 0).authenticate_user(
        socket.socket_id, json.loads(user_data))
    await socket.send({"event": "pusher:signin", "data": auth})
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4009 and "surrogate" in error["data"]["message"]
    no_errors_logged(caplog)


@pytest.mark.gen_test(timeout=20)
async def test_a_subscribe_that_fails_after_the_hub_recorded_it_is_undone(raw, sdk, monkeypatch):
    """A bug past the hub costs one error reply; no member is left behind."""
    real = session_module.Session._send_subscription_succeeded
    calls = []

    def fails_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug after the hub recorded the subscription")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(session_module.Session, "_send_subscription_succeeded", fails_once)
    socket = await raw()
    await subscribe_presence(socket, MAIN, "presence-room", {"user_id": "bob"})
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4300
    await assert_still_usable(socket)
    assert (await in_thread(sdk.users_info, "presence-room"))["users"] == []
    await subscribe_presence(socket, MAIN, "presence-room", {"user_id": "bob"})  # again: it works
    succeeded = await socket.expect("pusher_internal:subscription_succeeded")
    assert json.loads(succeeded["data"])["presence"]["ids"] == ["bob"]


# -- WebSocket frames -----------------------------------------------------------------

@pytest.mark.parametrize("message", [
    '{"event":"nope","channel":"\\ud800"}',
    '{"event":"pusher:ping\\udfff","data":{}}',
    '{"event":"client-x","channel":"private-a","data":"\\ud800"}',
    '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"a\\\\ud800\\"}"}',
    '{"event":"pusher:subscribe","data":{"channel":"news","x":' + "[" * 5000 + "]" * 5000 + "}}",
])
@pytest.mark.gen_test(timeout=20)
async def test_frames_with_lone_surrogates_or_deep_nesting_get_one_error(raw, message, caplog):
    socket = await raw()
    await socket.send(message)
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4300
    assert "Internal error" not in error["data"]["message"]
    await assert_still_usable(socket)
    no_errors_logged(caplog)


# -- history --------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=20)
async def test_a_demo_message_with_a_lone_surrogate_is_refused_and_nothing_is_kept(
        raw, server_port, hub, caplog):
    room = "presence-chat-lobby"
    reader = await raw()
    await subscribe_presence(reader, MAIN, room, {"user_id": "u1"})
    succeeded = await reader.expect("pusher_internal:subscription_succeeded")
    epoch, offset = succeeded["epoch"], succeeded["offset"]
    body = json.dumps({"channel": room, "event": "message",
                       "data": {"user_id": "u1", "name": "Ann", "text": "bad \ud800"}})
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server_port}/demo/trigger",
                                             method="POST", body=body, raise_error=False)
    assert response.code == 400 and "surrogate" in json.loads(response.body)["error"]
    page = await hub.history.read(MAIN.id, room, retention=CHAT_MAIN.history_retention(room))
    assert page.entries == () and page.last_offset == offset
    resumer = await raw()
    frames = await resume(resumer, room, epoch, offset, {"user_id": "u2"})
    assert frames[-1]["event"] == "pusher_internal:resume_succeeded"
    await assert_still_usable(resumer)
    no_errors_logged(caplog)


@pytest.mark.parametrize("event", [
    {"name": "e", "channel": "history-room", "data": LONE},
    {"name": LONE, "channel": "history-room", "data": "{}"},
])
@pytest.mark.gen_test(timeout=20)
async def test_a_signed_publish_with_a_lone_surrogate_is_refused_and_a_resume_succeeds(
        raw, server_port, hub, caplog, event):
    reader = await raw()
    epoch, offset = await history_position(reader, "history-room")
    status, answer = await post(server_port, EVENTS, event)
    assert status == 400 and "surrogate" in answer["error"]
    page = await hub.history.read(MAIN.id, "history-room",
                                  retention=MAIN.history_retention("history-room"))
    assert page.entries == ()
    assert (await post(server_port, EVENTS, {"name": "ok", "channel": "history-room",
                                             "data": "1"}))[0] == 200
    resumer = await raw()
    frames = await resume(resumer, "history-room", epoch, offset)
    assert [f["event"] for f in frames[-2:]] == ["ok", "pusher_internal:resume_succeeded"]
    no_errors_logged(caplog)


@pytest.mark.gen_test(timeout=20)
async def test_an_unencodable_stored_entry_fails_the_resume_and_the_channel_goes_on(
        raw, server_port, hub):
    """Older data in the store (from before the edge refused it) is a gap, not a stuck resume."""
    channel = "history-old"
    retention = MAIN.history_retention(channel)
    reader = await raw()
    epoch, offset = await history_position(reader, channel)
    await reader.send({"event": "pusher:unsubscribe", "data": {"channel": channel}})
    await reader.barrier()  # the channel is gone here: the next subscriber reads the store anew
    await hub.history.append(MAIN.id, channel, "old", LONE, time=time.time(), retention=retention)
    await hub.history.append(MAIN.id, channel, "new", "2", time=time.time(), retention=retention)
    resumer = await raw()
    frames = await resume(resumer, channel, epoch, offset)
    failed = frames[-1]
    assert failed["event"] == "pusher_internal:resume_failed"
    assert json.loads(failed["data"])["reason"] == "messages_lost"
    assert (await post(server_port, EVENTS, {"name": "live", "channel": channel,
                                             "data": "3"}))[0] == 200
    assert (await resumer.expect("live"))["data"] == "3"
    await assert_still_usable(resumer)


@pytest.mark.gen_test(timeout=20)
async def test_an_unencodable_live_publication_is_announced_as_a_gap(raw, server_port, hub):
    """As published by an older process: the subscribers get continuity_lost, then go on."""
    channel = "history-live"
    reader = await raw()
    epoch, offset = await history_position(reader, channel)
    await hub.trigger(MAIN, [channel], "old", LONE)  # past the edge, as an older version was
    lost = await reader.expect("pusher_internal:continuity_lost")
    assert json.loads(lost["data"]) == {"reason": "messages_lost", "epoch": epoch,
                                        "offset": offset + 1}
    assert (await post(server_port, EVENTS, {"name": "next", "channel": channel,
                                             "data": "2"}))[0] == 200
    assert (await reader.expect("next"))["offset"] == offset + 2


# -- cache channels -------------------------------------------------------------------

@pytest.mark.gen_test(timeout=20)
async def test_a_cache_publish_with_a_lone_surrogate_caches_nothing(raw, server_port, hub):
    status, answer = await post(server_port, EVENTS, {"name": "e", "channel": "cache-room",
                                                      "data": LONE})
    assert status == 400
    assert await hub.cached_event(MAIN, "cache-room") is None
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "cache-room"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    await socket.expect("pusher:cache_miss")


@pytest.mark.gen_test(timeout=20)
async def test_an_unencodable_cached_event_is_a_miss(raw, hub):
    await hub.state.cache_put(MAIN.id, "cache-old", "old", LONE, MAIN.cache_ttl)
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "cache-old"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    await socket.expect("pusher:cache_miss")
    await assert_still_usable(socket)


@pytest.mark.gen_test(timeout=20)
async def test_a_subscribe_that_fails_inside_the_hub_after_the_join_is_undone(
        raw, sdk, hub, monkeypatch):
    """Past the cluster state's join (announcing it fails): no member is left behind."""
    announcer = hub._announcer
    real = announcer.arrived

    def fails_once(*args, **kwargs):
        monkeypatch.setattr(announcer, "arrived", real)
        raise RuntimeError("a bug while announcing the arrival")

    monkeypatch.setattr(announcer, "arrived", fails_once)
    socket = await raw()
    await subscribe_presence(socket, MAIN, "presence-room", {"user_id": "cid"})
    assert (await socket.expect("pusher:error"))["data"]["code"] == 4300
    assert (await in_thread(sdk.users_info, "presence-room"))["users"] == []
    other = await raw()
    await subscribe_presence(other, MAIN, "presence-room", {"user_id": "dan"})
    succeeded = await other.expect("pusher_internal:subscription_succeeded")
    assert json.loads(succeeded["data"])["presence"]["ids"] == ["dan"]
