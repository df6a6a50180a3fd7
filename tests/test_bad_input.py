"""Bad input gets a clear error and disturbs nobody: malformed frames, bad auth, floods."""

from __future__ import annotations

import json
import logging

import pytest

from app_server import sdk_client
from tornado_push.pubsub.signing import channel_auth_message, sign
from conftest import MAIN, MAX_MESSAGE_BYTES, TINY, in_thread


class ManualClock:
    """Time that moves only when a test says so, so token buckets are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def assert_still_usable(socket) -> None:
    await socket.send({"event": "pusher:ping", "data": {}})
    assert (await socket.expect("pusher:pong"))["data"] == "{}"


@pytest.mark.parametrize("message, complaint", [
    ("not json", "Invalid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"data": {}}', "'event' string"),
    ('{"event": 5}', "'event' string"),
    ('{"event": "pusher:subscribe", "channel": 7}', "'channel' must be a string"),
    ('{"event": "pusher:subscribe", "data": 5}', "data must be an object"),
    ('{"event": "pusher:subscribe", "data": "{oops"}', "not valid JSON"),
    ('{"event": "pusher:subscribe", "data": {}}', "'channel' string"),
    ('{"event": "pusher:unsubscribe", "data": {"channel": []}}', "'channel' string"),
    ('{"event": "pusher:teleport", "data": {}}', "Unknown event"),
    (b"\x00\x01binary", "Binary frames"),
])
@pytest.mark.gen_test(timeout=10)
async def test_malformed_message_gets_pusher_error_and_connection_stays(raw, message, complaint, caplog):
    socket = await raw()
    await socket.send(message)
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4300
    assert complaint in error["data"]["message"]
    await assert_still_usable(socket)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.gen_test(timeout=10)
async def test_subscribe_accepts_data_as_object_or_json_string(raw):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": json.dumps({"channel": "a"})})
    assert (await socket.expect("pusher_internal:subscription_succeeded"))["channel"] == "a"
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "b"}})
    assert (await socket.expect("pusher_internal:subscription_succeeded"))["channel"] == "b"


@pytest.mark.parametrize("channel", ["x" * 165, "spaces not allowed", "#server-to-user-", ""])
@pytest.mark.gen_test(timeout=10)
async def test_invalid_channel_names_are_refused(raw, channel):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    error = await socket.expect("pusher:subscription_error")
    assert error["channel"] == channel
    assert json.loads(error["data"])["type"] == "InvalidChannel"


@pytest.mark.gen_test(timeout=10)
async def test_longest_valid_channel_name_is_accepted(raw):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "x" * 164}})
    await socket.expect("pusher_internal:subscription_succeeded")


async def subscribe_presence(socket, app, channel, channel_data: dict | str):
    """Subscribe with a valid signature over exactly ``channel_data``.

    The official SDK signs dicts; a malformed string is signed by hand.
    """
    if isinstance(channel_data, dict):
        signed = sdk_client(app, 0).authenticate(channel, socket.socket_id, channel_data)
        auth, data = signed["auth"], signed["channel_data"]
    else:
        data = channel_data
        auth = f"{app.key}:{sign(app.secret, channel_auth_message(socket.socket_id, channel, data))}"
    await socket.send({"event": "pusher:subscribe",
                       "data": {"channel": channel, "auth": auth, "channel_data": data}})


@pytest.mark.parametrize("channel_data, status, complaint", [
    ("not json", 400, "JSON object"),
    ({"user_info": {}}, 400, "user_id"),
    ({"user_id": "u" * 129}, 400, "user_id"),
    ({"user_id": True}, 400, "user_id"),
    ({"user_id": "ok", "user_info": {"bio": "x" * 100}}, 413, "64 bytes"),
])
@pytest.mark.gen_test(timeout=10)
async def test_bad_presence_channel_data_is_refused(raw, channel_data, status, complaint):
    socket = await raw(TINY.key)
    await subscribe_presence(socket, TINY, "presence-room", channel_data)
    error = await socket.expect("pusher:subscription_error")
    data = json.loads(error["data"])
    assert data["status"] == status and complaint in data["error"]
    await assert_still_usable(socket)


@pytest.mark.gen_test(timeout=10)
async def test_presence_without_channel_data_is_refused(raw):
    socket = await raw()
    auth = sdk_client(MAIN, 0).authenticate("presence-room", socket.socket_id)["auth"]
    await socket.send({"event": "pusher:subscribe", "data": {"channel": "presence-room", "auth": auth}})
    error = await socket.expect("pusher:subscription_error")
    assert json.loads(error["data"])["status"] == 400


@pytest.mark.gen_test(timeout=10)
async def test_numeric_presence_user_id_is_listed_as_a_string(raw):
    socket = await raw()
    await subscribe_presence(socket, MAIN, "presence-room", {"user_id": 42})
    succeeded = await socket.expect("pusher_internal:subscription_succeeded")
    assert json.loads(succeeded["data"])["presence"]["ids"] == ["42"]


@pytest.mark.gen_test(timeout=10)
async def test_full_presence_channel_refuses_new_users_but_not_new_tabs(raw):
    first, second, third = [await raw(TINY.key) for _ in range(3)]  # TINY: 2 members
    for socket, user in ((first, "u1"), (second, "u2")):
        await subscribe_presence(socket, TINY, "presence-full", {"user_id": user})
        await socket.expect("pusher_internal:subscription_succeeded")
    await subscribe_presence(third, TINY, "presence-full", {"user_id": "u3"})
    error = await third.expect("pusher:subscription_error")
    assert json.loads(error["data"])["type"] == "LimitReached"
    await subscribe_presence(third, TINY, "presence-full", {"user_id": "u1"})
    succeeded = await third.expect("pusher_internal:subscription_succeeded")
    assert json.loads(succeeded["data"])["presence"]["count"] == 2


@pytest.mark.gen_test(timeout=10)
async def test_signin_without_valid_auth_closes_4009(raw):
    socket = await raw()
    await socket.send({"event": "pusher:signin", "data": {"user_data": '{"id":"x"}', "auth": "app-key:00"}})
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4009
    assert await socket.closed() == 4009


@pytest.mark.gen_test(timeout=10)
async def test_oversized_message_closes_only_that_connection(raw, sdk):
    bystander = await raw()
    await bystander.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await bystander.expect("pusher_internal:subscription_succeeded")
    offender = await raw()
    await offender.send("x" * (MAX_MESSAGE_BYTES + 1))
    assert await offender.closed() == 1009  # RFC 6455: message too big
    await in_thread(sdk.trigger, "news", "still-here", {})
    assert (await bystander.expect("still-here"))["channel"] == "news"


@pytest.mark.gen_test(timeout=20)
async def test_flood_is_dropped_after_the_burst_with_one_error_and_others_are_served(raw, clock, hub):
    burst = hub.options.max_inbound_burst
    bystander = await raw()
    flooder = await raw()
    for _ in range(3 * burst):
        await flooder.send("not json")
    await assert_still_usable(bystander)
    await flooder.barrier()
    clock.now += 60  # the bucket refills, so the ping after the flood is taken
    await flooder.send({"event": "pusher:ping", "data": {}})
    errors = []
    while (frame := await flooder.receive())["event"] != "pusher:pong":
        errors.append(frame["data"]["message"])
    # The burst is answered one by one, then one flood warning, then silence.
    assert errors.count("Invalid JSON") == burst
    assert len(errors) == burst + 1 and errors[-1].startswith("Too many messages")


@pytest.mark.parametrize("query, code", [("", 4008), ("?protocol=6", 4007), ("?protocol=abc", 4007)])
@pytest.mark.gen_test(timeout=10)
async def test_missing_or_unsupported_protocol_is_refused(raw, query, code):
    socket = await raw(query=query, established=False)
    error = await socket.receive()
    assert error["event"] == "pusher:error" and error["data"]["code"] == code
    assert await socket.closed() == code


@pytest.mark.gen_test(timeout=10)
async def test_long_unknown_key_gets_4001_with_a_valid_close_frame(raw):
    socket = await raw(key="k" * 300, established=False)
    error = await socket.receive()
    assert error["data"]["code"] == 4001
    assert await socket.closed() == 4001
    assert len(socket.connection.close_reason.encode()) <= 123
