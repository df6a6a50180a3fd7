"""HTTP API queries and terminate, through the official SDK, with real pusher-js clients."""

from __future__ import annotations

import json

import pusher.errors
import pytest
from tornado.httpclient import AsyncHTTPClient

from app_server import sdk_client
from conftest import MAIN, in_thread
from test_http_api import signed_query
from conftest import subscribed


async def get(port: int, path: str, **params: str) -> tuple[int, dict]:
    """A GET signed as the SDK signs it (with body_md5 of the empty body)."""
    url = f"http://127.0.0.1:{port}{path}?{signed_query(MAIN, 'GET', path, b'', **params)}"
    response = await AsyncHTTPClient().fetch(url, raise_error=False)
    return response.code, json.loads(response.body)


@pytest.mark.gen_test(timeout=30)
async def test_channels_info_lists_occupied_channels_by_prefix(connect, sdk):
    a = await connect("a", user="alice")
    b = await connect("b", user="bob")
    for client in (a, b):
        await subscribed(client, "presence-room")
    await subscribed(a, "private-orders")
    await subscribed(b, "news")
    everything = await in_thread(sdk.channels_info)
    assert set(everything["channels"]) == {"presence-room", "private-orders", "news"}
    presence = await in_thread(sdk.channels_info, "presence-", ["user_count"])
    assert presence == {"channels": {"presence-room": {"user_count": 2}}}
    await b.unsubscribe("news")
    # b's frames are handled in order: once this succeeds the unsubscribe is done.
    await subscribed(b, "sentinel")
    assert "news" not in (await in_thread(sdk.channels_info))["channels"]


@pytest.mark.gen_test(timeout=30)
async def test_user_count_without_presence_prefix_is_400(server_port):
    status, body = await get(server_port, "/apps/1/channels", info="user_count")
    assert status == 400 and "presence-" in body["error"]


@pytest.mark.gen_test(timeout=30)
async def test_channel_info_reports_occupancy_and_counts(connect, sdk):
    alice_tab1 = await connect("a1", user="alice")
    alice_tab2 = await connect("a2", user="alice")
    for client in (alice_tab1, alice_tab2):
        await subscribed(client, "presence-room")
    info = await in_thread(sdk.channel_info, "presence-room", ["user_count", "subscription_count"])
    assert info == {"occupied": True, "user_count": 1, "subscription_count": 2}
    assert await in_thread(sdk.channel_info, "empty-room") == {"occupied": False}


@pytest.mark.gen_test(timeout=30)
async def test_channel_info_shows_the_cached_event_with_its_ttl(sdk, server_port):
    await in_thread(sdk.trigger, "cache-prices", "tick", {"price": 3})
    info = await in_thread(sdk.channel_info, "cache-prices", ["cache"])
    assert info["occupied"] is False
    assert json.loads(info["cache"]["data"]) == {"price": 3}
    assert 0 < info["cache"]["ttl"] <= MAIN.cache_ttl


@pytest.mark.parametrize("path, params, complaint", [
    ("/apps/1/channels/news", {"info": "user_count"}, "presence"),
    ("/apps/1/channels/news", {"info": "colour"}, "Unknown info"),
    ("/apps/1/channels/bad%20name", {}, "Invalid channel"),
    ("/apps/1/channels/news/users", {}, "presence"),
])
@pytest.mark.gen_test(timeout=30)
async def test_invalid_queries_are_400_with_a_message(server_port, path, params, complaint):
    status, body = await get(server_port, path, **params)
    assert status == 400 and complaint in body["error"]


@pytest.mark.gen_test(timeout=30)
async def test_users_info_lists_each_presence_user_once(connect, sdk):
    for name, user in (("a1", "alice"), ("a2", "alice"), ("b", "bob")):
        await subscribed(await connect(name, user=user), "presence-room")
    users = await in_thread(sdk.users_info, "presence-room")
    assert sorted(u["id"] for u in users["users"]) == ["alice", "bob"]


@pytest.mark.gen_test(timeout=30)
async def test_terminate_user_connections_closes_every_connection_of_that_user(connect, sdk):
    tabs = [await connect(f"tab{n}", user="alice") for n in range(2)]
    bob = await connect("bob", user="bob")
    for client in (*tabs, bob):
        await client.signin()
        await client.expect(type="signed_in")
    # The SDK posts to /users/{id}/terminate_connections, without /apps/{id}.
    assert await in_thread(sdk.terminate_user_connections, "alice") == {}
    for tab in tabs:
        await tab.expect(type="state", current="disconnected")
    await in_thread(sdk.send_to_user, "bob", "still-here", {})
    await bob.expect(type="user_event", event="still-here")
    await bob.subscribe("presence-room")
    await bob.expect(type="channel_event", event="pusher:subscription_succeeded")
    assert (await in_thread(sdk.users_info, "presence-room"))["users"] == [{"id": "bob"}]


@pytest.mark.gen_test(timeout=30)
async def test_terminate_with_a_forged_signature_is_refused(server_port):
    forged = sdk_client(MAIN, server_port, secret="wrong")
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(forged.terminate_user_connections, "alice")
