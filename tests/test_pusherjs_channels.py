"""Real pusher-js 8 against the server: channels of every kind, presence, caches."""

from __future__ import annotations

import re

import pytest

from conftest import MAIN, in_thread, subscribed


@pytest.mark.gen_test(timeout=30)
async def test_connection_gets_a_cluster_unique_socket_id(connect, hub):
    a = await connect("a")
    b = await connect("b")
    ids = [a.seen(type="connected")[0]["socket_id"], b.seen(type="connected")[0]["socket_id"]]
    assert all(re.fullmatch(r"\d+\.\d+", socket_id) for socket_id in ids)
    assert ids[0] != ids[1]
    assert all(socket_id.startswith(f"{hub.node_id}.") for socket_id in ids)


@pytest.mark.gen_test(timeout=30)
async def test_public_channel_receives_sdk_triggers_in_publish_order(connect_over, sdk, hub,
                                                                     transport):
    a = await connect_over("a")
    assert [session.transport.kind for session in hub.sessions(MAIN)] == [transport]
    await subscribed(a, "news")
    for number in range(30):
        await in_thread(sdk.trigger, "news", "headline", {"n": number})
    received = [(await a.expect(type="channel_event", channel="news", event="headline",
                                timeout=10))["data"]["n"] for _ in range(30)]
    assert received == list(range(30))


@pytest.mark.gen_test(timeout=30)
async def test_trigger_batch_arrives_in_batch_order(connect, sdk):
    a = await connect("a")
    await subscribed(a, "news")
    await subscribed(a, "sport")
    batch = [{"channel": "news" if n % 2 else "sport", "name": "item", "data": {"n": n}}
             for n in range(10)]
    await in_thread(sdk.trigger_batch, batch)
    received = [(await a.expect(type="channel_event", event="item"))["data"]["n"] for _ in range(10)]
    assert received == list(range(10))


@pytest.mark.gen_test(timeout=30)
async def test_one_trigger_reaches_every_listed_channel(connect, sdk):
    a = await connect("a")
    b = await connect("b")
    await subscribed(a, "room-1")
    await subscribed(b, "room-2")
    await in_thread(sdk.trigger, ["room-1", "room-2"], "hello", "plain text")
    assert (await a.expect(type="channel_event", event="hello"))["data"] == "plain text"
    assert (await b.expect(type="channel_event", event="hello"))["data"] == "plain text"


@pytest.mark.gen_test(timeout=30)
async def test_socket_id_excludes_that_connection_only(connect_over, sdk):
    a = await connect_over("a")
    b = await connect_over("b")
    await subscribed(a, "news")
    await subscribed(b, "news")
    socket_a = a.seen(type="connected")[0]["socket_id"]
    await in_thread(sdk.trigger, "news", "edit", {"v": 1}, socket_a)
    await in_thread(sdk.trigger, "news", "sentinel", {})
    await b.expect(type="channel_event", event="edit")
    await a.expect(type="channel_event", event="sentinel")
    assert a.seen(event="edit") == []


@pytest.mark.gen_test(timeout=30)
async def test_private_channel_accepts_the_sdks_auth(connect, sdk):
    a = await connect("a")
    await subscribed(a, "private-orders")
    await in_thread(sdk.trigger, "private-orders", "created", {"id": 7})
    assert (await a.expect(type="channel_event", event="created"))["data"] == {"id": 7}


@pytest.mark.gen_test(timeout=30)
async def test_forged_private_auth_is_refused_with_subscription_error(connect, sdk):
    a = await connect("a", forge=True)
    await a.subscribe("private-orders")
    error = await a.expect(type="channel_event", event="pusher:subscription_error")
    assert error["data"]["status"] == 401 and error["data"]["type"] == "AuthError"
    await in_thread(sdk.trigger, "private-orders", "created", {"id": 7})
    await a.subscribe("news")
    await a.expect(type="channel_event", channel="news", event="pusher:subscription_succeeded")
    assert a.seen(event="created") == []


@pytest.mark.gen_test(timeout=30)
async def test_forged_presence_auth_is_refused(connect):
    a = await connect("a", user="alice", forge=True)
    await a.subscribe("presence-room")
    error = await a.expect(type="channel_event", event="pusher:subscription_error")
    assert error["data"]["status"] == 401


@pytest.mark.gen_test(timeout=30)
async def test_presence_lists_members_and_announces_each_user_once(connect, sdk):
    alice = await connect("alice-1", user="alice")
    await subscribed(alice, "presence-room")
    assert (await alice.members("presence-room"))["count"] == 1

    bob = await connect("bob-1", user="bob")
    await subscribed(bob, "presence-room")
    members = await bob.members("presence-room")
    assert members["members"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
    assert members["me"]["id"] == "bob"
    added = await alice.expect(type="channel_event", event="pusher:member_added")
    assert added["data"] == {"id": "bob", "info": {"name": "Bob"}}

    # Alice's second tab adds nobody; closing one of her two tabs removes nobody.
    alice_tab = await connect("alice-2", user="alice")
    await subscribed(alice_tab, "presence-room")
    assert (await alice_tab.members("presence-room"))["count"] == 2
    await alice_tab.disconnect()
    await in_thread(sdk.trigger, "presence-room", "sentinel", {})
    await bob.expect(type="channel_event", event="sentinel")
    assert bob.seen(event="pusher:member_added") == []
    assert bob.seen(event="pusher:member_removed") == []

    # The joining socket never hears of itself.
    assert [e["data"]["id"] for e in alice.seen(event="pusher:member_added")] == ["bob"]
    assert bob.seen(event="pusher:member_added") == []

    await alice.disconnect()
    removed = await bob.expect(type="channel_event", event="pusher:member_removed")
    assert removed["data"]["id"] == "alice"
    assert (await bob.members("presence-room"))["count"] == 1


@pytest.mark.gen_test(timeout=30)
async def test_presence_unsubscribe_removes_member(connect):
    alice = await connect("alice", user="alice")
    bob = await connect("bob", user="bob")
    await subscribed(alice, "presence-room")
    await subscribed(bob, "presence-room")
    await bob.unsubscribe("presence-room")
    removed = await alice.expect(type="channel_event", event="pusher:member_removed")
    assert removed["data"]["id"] == "bob"


@pytest.mark.gen_test(timeout=30)
async def test_cache_channel_replays_last_event_or_reports_a_miss(connect, sdk):
    early = await connect("early")
    await subscribed(early, "cache-prices")
    await early.expect(type="channel_event", event="pusher:cache_miss")
    await in_thread(sdk.trigger, "cache-prices", "tick", {"price": 1})
    await in_thread(sdk.trigger, "cache-prices", "tick", {"price": 2})
    late = await connect("late")
    await subscribed(late, "cache-prices")
    replay = await late.expect(type="channel_event", channel="cache-prices", event="tick")
    assert replay["data"] == {"price": 2}
    assert late.seen(event="pusher:cache_miss") == []


@pytest.mark.gen_test(timeout=30)
async def test_private_cache_and_presence_cache_channels_replay(connect, sdk):
    await in_thread(sdk.trigger, "private-cache-orders", "last", {"n": 1})
    await in_thread(sdk.trigger, "presence-cache-room", "last", {"n": 2})
    a = await connect("a", user="alice")
    await subscribed(a, "private-cache-orders")
    assert (await a.expect(type="channel_event", channel="private-cache-orders",
                           event="last"))["data"] == {"n": 1}
    await subscribed(a, "presence-cache-room")
    assert (await a.expect(type="channel_event", channel="presence-cache-room",
                           event="last"))["data"] == {"n": 2}


@pytest.mark.gen_test(timeout=30)
async def test_client_events_are_cached_never(connect, sdk):
    a = await connect("a", user="alice")
    await subscribed(a, "private-cache-chat")
    await a.expect(type="channel_event", event="pusher:cache_miss")
    await a.trigger("private-cache-chat", "client-typing", {"on": True})
    b = await connect("b", user="bob")
    await subscribed(b, "private-cache-chat")
    await b.expect(type="channel_event", event="pusher:cache_miss")


@pytest.mark.gen_test(timeout=30)
async def test_encrypted_channel_relays_what_only_clients_can_read(connect, sdk):
    a = await connect("a")
    await subscribed(a, "private-encrypted-vault")
    await in_thread(sdk.trigger, "private-encrypted-vault", "secret", {"pin": "1234"})
    assert (await a.expect(type="channel_event", event="secret"))["data"] == {"pin": "1234"}


@pytest.mark.gen_test(timeout=30)
async def test_invalid_channel_name_gets_subscription_error(connect):
    a = await connect("a")
    await a.subscribe("bad channel!")
    error = await a.expect(type="channel_event", event="pusher:subscription_error")
    assert error["data"]["type"] == "InvalidChannel"


@pytest.mark.gen_test(timeout=30)
async def test_server_to_user_channel_is_refused_to_others(connect):
    a = await connect("a")
    # pusher-js itself refuses the name; only the sign-in flow subscribes to it.
    await a.send_raw("pusher:subscribe", {"channel": "#server-to-user-alice"})
    error = await a.expect(type="message", event="pusher:subscription_error")
    assert error["channel"] == "#server-to-user-alice" and error["data"]["status"] == 403
