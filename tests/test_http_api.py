"""The signed HTTP API over the wire: the official SDK, hand-signed requests, real subscribers.

Requests the SDK refuses to send (too many channels, bad names, stale
timestamps...) are signed here exactly as the SDK signs, then bent.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any
from urllib.parse import urlencode

import pusher.errors
import pytest
from tornado.httpclient import AsyncHTTPClient

from app_server import sdk_client
from conftest import DISABLED, MAIN, in_thread, subscribed
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.signing import sign


def signed_query(app: App, method: str, path: str, body: bytes, *, timestamp: float | None = None,
                 body_md5: str | None = None, **params: str) -> str:
    """The query string the SDK would send for this request (auth params and signature)."""
    query = {"auth_key": app.key,
             "auth_timestamp": "%.0f" % (time.time() if timestamp is None else timestamp),
             "auth_version": "1.0",
             "body_md5": hashlib.md5(body).hexdigest() if body_md5 is None else body_md5,
             **params}
    string = "&".join(f"{name}={query[name]}" for name in sorted(query))
    query["auth_signature"] = sign(app.secret, f"{method}\n{path}\n{string}")
    return urlencode(query)


async def post(port: int, path: str, payload: Any, *, app: App = MAIN,
               **signing: Any) -> tuple[int, Any]:
    """POST ``payload`` (JSON-encoded unless bytes), signed for ``app``; status and JSON reply."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}{path}?{signed_query(app, 'POST', path, body, **signing)}",
        method="POST", body=body, headers={"Content-Type": "application/json"},
        raise_error=False)
    return response.code, json.loads(response.body)


async def post_event(port: int, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    return await post(port, f"/apps/{kwargs.get('app', MAIN).id}/events", payload, **kwargs)


async def post_batch(port: int, payload: Any, **kwargs: Any) -> tuple[int, Any]:
    return await post(port, f"/apps/{kwargs.get('app', MAIN).id}/batch_events", payload, **kwargs)


def event(channel: str = "news", **fields: Any) -> dict[str, Any]:
    return {"name": "headline", "data": "{}", "channel": channel, **fields}


# -- accepted ---------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_sdk_trigger_answers_an_empty_object(sdk):
    assert await in_thread(sdk.trigger, ["news", "sport"], "headline", {"n": 1}) == {}


@pytest.mark.gen_test(timeout=30)
async def test_sdk_trigger_batch_answers_an_empty_object(sdk):
    batch = [{"channel": "news", "name": "a", "data": {"n": 1}},
             {"channel": "sport", "name": "b", "data": "text"}]
    assert await in_thread(sdk.trigger_batch, batch) == {}


@pytest.mark.gen_test(timeout=30)
async def test_trigger_with_info_counts_subscribers_of_each_channel(connect, server_port):
    a = await connect("a")
    b = await connect("b")
    await subscribed(a, "news")
    await subscribed(b, "news")
    await subscribed(b, "sport")
    status, reply = await post_event(server_port, {
        "name": "headline", "data": "{}", "channels": ["news", "sport", "empty"],
        "info": "subscription_count"})
    assert status == 200
    assert reply == {"channels": {"news": {"subscription_count": 2},
                                  "sport": {"subscription_count": 1},
                                  "empty": {"subscription_count": 0}}}


@pytest.mark.gen_test(timeout=30)
async def test_trigger_with_info_counts_presence_users_once_per_user(connect, server_port):
    alice = await connect("alice-1", user="alice")
    alice_tab = await connect("alice-2", user="alice")
    bob = await connect("bob", user="bob")
    for client in (alice, alice_tab, bob):
        await subscribed(client, "presence-room")
    status, reply = await post_event(server_port, event(
        "presence-room", info="user_count,subscription_count"))
    assert status == 200
    assert reply == {"channels": {"presence-room": {"user_count": 2, "subscription_count": 3}}}


@pytest.mark.gen_test(timeout=30)
async def test_batch_with_info_answers_one_entry_per_event(connect, server_port):
    a = await connect("a", user="alice")
    await subscribed(a, "news")
    await subscribed(a, "presence-room")
    status, reply = await post_batch(server_port, {"batch": [
        event("news", info="subscription_count"),
        event("presence-room", info="user_count"),
        event("sport"),
    ]})
    assert status == 200
    assert reply == {"batch": [{"subscription_count": 1}, {"user_count": 1}, {}]}


# -- refused by the SDK's own error classes ----------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_sdk_with_a_forged_secret_gets_401(server_port):
    forger = sdk_client(MAIN, server_port, secret="forged-secret")
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(forger.trigger, "news", "headline", {})


@pytest.mark.gen_test(timeout=30)
async def test_sdk_for_a_disabled_app_gets_403(server_port):
    with pytest.raises(pusher.errors.PusherForbidden):
        await in_thread(sdk_client(DISABLED, server_port).trigger, "news", "headline", {})


@pytest.mark.gen_test(timeout=30)
async def test_sdk_for_an_unknown_app_gets_404(server_port):
    stranger = App(id="99", key="stranger-key", secret="stranger-secret")
    with pytest.raises(pusher.errors.PusherBadStatus, match="^404"):
        await in_thread(sdk_client(stranger, server_port).trigger, "news", "headline", {})


@pytest.mark.gen_test(timeout=30)
async def test_sdk_data_over_10_kb_gets_413(sdk):
    # The SDK itself only refuses 30 KB and more.
    with pytest.raises(pusher.errors.PusherBadStatus, match="^413"):
        await in_thread(sdk.trigger, "news", "headline", "x" * 11 * 1024)


@pytest.mark.gen_test(timeout=30)
async def test_sdk_batch_of_11_gets_400(sdk):
    batch = [{"channel": "news", "name": "item", "data": str(n)} for n in range(11)]
    with pytest.raises(pusher.errors.PusherBadRequest):
        await in_thread(sdk.trigger_batch, batch)


# -- refused, with a JSON error body -------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_forged_secret_is_refused_with_401(server_port):
    forged = App(id=MAIN.id, key=MAIN.key, secret="forged-secret")
    status, reply = await post_event(server_port, event(), app=forged)
    assert status == 401 and "signature" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_unknown_app_id_is_refused_with_404(server_port):
    stranger = App(id="99", key="stranger-key", secret="stranger-secret")
    status, reply = await post_event(server_port, event(), app=stranger)
    assert status == 404 and "99" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_disabled_app_is_refused_with_403(server_port):
    status, reply = await post_event(server_port, event(), app=DISABLED)
    assert status == 403 and "disabled" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_data_over_10_kb_is_refused_with_413(server_port):
    status, reply = await post_event(server_port, event(data="x" * (10 * 1024 + 1)))
    assert status == 413 and "10240" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_data_of_exactly_10_kb_is_accepted(server_port):
    status, reply = await post_event(server_port, event(data="x" * 10 * 1024))
    assert (status, reply) == (200, {})


@pytest.mark.gen_test(timeout=30)
async def test_101_channels_are_refused_with_400(server_port):
    channels = [f"room-{n}" for n in range(101)]
    status, reply = await post_event(server_port, {"name": "e", "data": "{}", "channels": channels})
    assert status == 400 and "100" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_batch_of_11_is_refused_with_400(server_port):
    status, reply = await post_batch(server_port, {"batch": [event() for _ in range(11)]})
    assert status == 400 and "10" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_encrypted_channel_among_several_is_refused_with_400(server_port):
    status, reply = await post_event(server_port, {
        "name": "e", "data": "{}", "channels": ["news", "private-encrypted-vault"]})
    assert status == 400 and "encrypted" in reply["error"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("body", [b"{not json", b"", b'["a list"]'])
async def test_body_that_is_not_a_json_object_is_refused_with_400(server_port, body):
    status, reply = await post_event(server_port, body)
    assert status == 400 and "JSON" in reply["error"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("data", [{"n": 1}, 7, None])
async def test_data_that_is_not_a_string_is_refused_with_400(server_port, data):
    status, reply = await post_event(server_port, event(data=data))
    assert status == 400 and "data" in reply["error"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("channel", ["bad channel!", "", "x" * 165, 7])
async def test_invalid_channel_name_is_refused_with_400(server_port, channel):
    status, reply = await post_event(server_port, event(channel))
    assert status == 400 and "hannel" in reply["error"]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("socket_id", ["abc", "1234", "1.2.3", 1.5])
async def test_bad_socket_id_is_refused_with_400(server_port, socket_id):
    status, reply = await post_event(server_port, event(socket_id=socket_id))
    assert status == 400 and "socket_id" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_unknown_info_attribute_is_refused_with_400(server_port):
    status, reply = await post_event(server_port, event(info="subscription_count,secrets"))
    assert status == 400 and "secrets" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_stale_timestamp_is_refused_with_401(server_port):
    status, reply = await post_event(server_port, event(), timestamp=time.time() - 601)
    assert status == 401 and "auth_timestamp" in reply["error"]


@pytest.mark.gen_test(timeout=30)
async def test_body_md5_mismatch_is_refused_with_401(server_port):
    status, reply = await post_event(server_port, event(),
                                     body_md5=hashlib.md5(b"another body").hexdigest())
    assert status == 401 and "body_md5" in reply["error"]


# -- a refused publish reaches nobody --------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_refused_publishes_reach_no_subscriber(connect, server_port, sdk):
    a = await connect("a")
    await subscribed(a, "news")
    refused = [
        await post_event(server_port, event(data="x" * 11 * 1024)),
        await post_event(server_port, {"name": "headline", "data": "{}",
                                       "channels": ["news", "bad channel!"]}),
        await post_event(server_port, event(socket_id="nope")),
        await post_event(server_port, event(), app=App(MAIN.id, MAIN.key, "forged-secret")),
        await post_batch(server_port, {"batch": [event(), event("bad channel!")]}),
        await post_batch(server_port, {"batch": [event() for _ in range(11)]}),
    ]
    assert [status for status, _ in refused] == [413, 400, 400, 401, 400, 400]
    await in_thread(sdk.trigger, "news", "sentinel", {})
    await a.expect(type="channel_event", channel="news", event="sentinel")
    assert a.seen(event="headline") == []


@pytest.mark.gen_test(timeout=30)
async def test_a_channel_listed_twice_gets_the_event_once(connect, sdk):
    client = await connect("a")
    await client.subscribe("news")
    await client.expect(type="channel_event", channel="news", event="pusher:subscription_succeeded")
    await in_thread(sdk.trigger, ["news", "news"], "headline", {})
    await in_thread(sdk.trigger, "news", "sentinel", {})
    await client.expect(type="channel_event", event="sentinel")
    assert len(client.seen(type="channel_event", event="headline")) == 1
