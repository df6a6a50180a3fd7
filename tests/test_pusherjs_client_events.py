"""Real pusher-js 8: client events, sign-in, server-to-user, watchlists, refusals."""

from __future__ import annotations

import dataclasses

import pytest

from tornado_push.pubsub.apps import App
from conftest import DISABLED, QUIET, SIGNIN_REQUIRED, TINY, in_thread
from conftest import subscribed


def error_codes(client) -> list[int]:
    """Codes pusher-js reported, whether as a PusherError or wrapped in a WebSocketError."""
    codes = []
    for event in client.seen(type="error"):
        error = event["error"]
        if error.get("type") == "WebSocketError":
            error = error.get("error") or {}
        if error.get("type") == "PusherError":
            codes.append(error["data"]["code"])
    return codes


@pytest.mark.gen_test(timeout=30)
async def test_client_event_reaches_others_not_the_sender(connect):
    a = await connect("a")
    b = await connect("b")
    await subscribed(a, "private-chat")
    await subscribed(b, "private-chat")
    assert await a.trigger("private-chat", "client-typing", {"who": "a"})
    assert (await b.expect(type="channel_event", event="client-typing"))["data"] == {"who": "a"}
    # b answers; once a has that, a's own event would have come before it.
    await b.trigger("private-chat", "client-typing", {"who": "b"})
    assert (await a.expect(type="channel_event", event="client-typing"))["data"] == {"who": "b"}
    assert [e["data"]["who"] for e in a.seen(type="channel_event", event="client-typing")] == ["b"]


@pytest.mark.gen_test(timeout=30)
async def test_presence_client_event_carries_the_senders_user_id(connect):
    alice = await connect("alice", user="alice")
    bob = await connect("bob", user="bob")
    await subscribed(alice, "presence-chat")
    await subscribed(bob, "presence-chat")
    await alice.trigger("presence-chat", "client-wave", {})
    event = await bob.expect(type="channel_event", event="client-wave")
    assert event["metadata"] == {"user_id": "alice"}
    raw = await bob.expect(type="message", event="client-wave")
    assert raw["user_id"] == "alice"


@pytest.mark.gen_test(timeout=30)
async def test_client_events_refused_on_public_and_encrypted_channels(connect):
    a = await connect("a")
    await subscribed(a, "lobby")
    await subscribed(a, "private-encrypted-vault")
    await a.send_raw("client-shout", {}, "lobby")
    error = await a.expect(type="message", event="pusher:error")
    assert error["data"]["code"] == 4301 and "private and presence" in error["data"]["message"]
    await a.send_raw("client-shout", {}, "private-encrypted-vault")
    error = await a.expect(type="message", event="pusher:error")
    assert error["data"]["code"] == 4301


@pytest.mark.gen_test(timeout=30)
async def test_client_events_refused_on_unjoined_channel_and_when_app_disables_them(connect):
    a = await connect("a")
    await a.send_raw("client-shout", {}, "private-elsewhere")
    error = await a.expect(type="message", event="pusher:error")
    assert error["data"]["code"] == 4301 and "subscribe" in error["data"]["message"]

    quiet = await connect("quiet", app=QUIET)
    other = await connect("other", app=QUIET)
    await subscribed(quiet, "private-chat")
    await subscribed(other, "private-chat")
    await quiet.trigger("private-chat", "client-typing", {})
    error = await quiet.expect(type="message", event="pusher:error")
    assert "disabled" in error["data"]["message"]
    assert other.seen(event="client-typing") == []


@pytest.mark.gen_test(timeout=30)
async def test_client_event_rate_limit_answers_4301_and_keeps_the_connection(connect):
    a = await connect("a", app=TINY)  # 2 per second, burst 2
    b = await connect("b", app=TINY)
    await subscribed(a, "private-chat")
    await subscribed(b, "private-chat")
    for number in range(5):
        await a.trigger("private-chat", "client-n", {"n": number})
    errors = [await a.expect(type="message", event="pusher:error") for _ in range(3)]
    assert all(e["data"]["code"] == 4301 and "rate limit" in e["data"]["message"] for e in errors)
    first_two = [(await b.expect(type="channel_event", event="client-n"))["data"]["n"] for _ in range(2)]
    assert first_two == [0, 1]
    assert (await a.state())["state"] == "connected"


@pytest.mark.gen_test(timeout=30)
async def test_oversized_client_event_is_refused(connect):
    a = await connect("a", app=TINY)  # max_event_bytes=100
    await subscribed(a, "private-chat")
    await a.trigger("private-chat", "client-big", {"text": "x" * 200})
    error = await a.expect(type="message", event="pusher:error")
    assert error["data"]["code"] == 4301 and "100 bytes" in error["data"]["message"]


@pytest.mark.gen_test(timeout=30)
async def test_signin_and_server_to_user_reach_every_connection_of_that_user(connect, sdk):
    tab1 = await connect("tab1", user="alice")
    tab2 = await connect("tab2", user="alice")
    bob = await connect("bob", user="bob")
    for client in (tab1, tab2, bob):
        await client.signin()
        signed = await client.expect(type="signed_in")
        assert signed["user_data"]["id"] in ("alice", "bob")
        # pusher-js then subscribes its hidden #server-to-user-{id} channel.
        await client.expect(type="message", event="pusher_internal:subscription_succeeded")
    await in_thread(sdk.send_to_user, "alice", "notice", {"text": "hi"})
    for tab in (tab1, tab2):
        assert (await tab.expect(type="user_event", event="notice"))["data"] == {"text": "hi"}
    await in_thread(sdk.send_to_user, "bob", "sentinel", {})
    await bob.expect(type="user_event", event="sentinel")
    assert bob.seen(event="notice") == []


@pytest.mark.gen_test(timeout=30)
async def test_forged_signin_is_refused_with_4009(connect):
    a = await connect("a", user="alice", forge=True)
    await a.signin()
    await a.expect(type="state", current="disconnected")
    assert 4009 in error_codes(a)


@pytest.mark.gen_test(timeout=30)
async def test_watchlist_reports_online_and_offline(connect):
    bob = await connect("bob", user="bob")
    await bob.signin()
    await bob.expect(type="signed_in")
    alice = await connect("alice", user="alice", watch="bob,carol")
    await alice.signin()
    online = await alice.expect(type="watchlist_event", event="online")
    assert online["data"]["user_ids"] == ["bob"]
    offline = await alice.expect(type="watchlist_event", event="offline")
    assert offline["data"]["user_ids"] == ["carol"]

    carol = await connect("carol", user="carol")
    await carol.signin()
    assert (await alice.expect(type="watchlist_event", event="online"))["data"]["user_ids"] == ["carol"]
    await bob.disconnect()
    assert (await alice.expect(type="watchlist_event", event="offline"))["data"]["user_ids"] == ["bob"]


@pytest.mark.gen_test(timeout=30)
async def test_connection_refusals_use_pusher_close_codes(connect):
    unknown = await connect("unknown", app=App(id="9", key="nope", secret="x"), wait=False)
    await unknown.expect(type="state", current="disconnected")
    disabled = await connect("disabled", app=DISABLED, wait=False)
    await disabled.expect(type="state", current="disconnected")
    assert 4001 in error_codes(unknown)
    assert 4003 in error_codes(disabled)

    admitted = [await connect(f"admitted-{n}", app=TINY) for n in range(TINY.max_connections)]
    refused = await connect("refused", app=TINY, wait=False)
    await refused.expect(type="state", current="disconnected")
    assert 4004 in error_codes(refused)
    assert {(await client.state())["state"] for client in admitted} == {"connected"}


@pytest.mark.gen_test(timeout=30)
async def test_connection_that_does_not_sign_in_in_time_is_closed_4009(connect):
    late = await connect("late", app=SIGNIN_REQUIRED, user="alice")
    await late.expect(type="state", current="disconnected", timeout=5)
    assert 4009 in error_codes(late)
    prompt = await connect("prompt", app=SIGNIN_REQUIRED, user="bob")
    await prompt.signin()
    await prompt.expect(type="signed_in")
    await prompt.subscribe("news")
    await prompt.expect(type="channel_event", event="pusher:subscription_succeeded")
    assert (await prompt.state())["state"] == "connected"


@pytest.mark.gen_test(timeout=30)
async def test_pusherjs_reconnects_at_once_after_4200_and_resubscribes(connect, hub, sdk):
    client = await connect("a")
    await subscribed(client, "news")
    first_id = (await client.state())["socket_id"]
    hub.close_all()  # what a graceful shutdown sends
    await client.expect(type="state", previous="connected", current="connecting")
    reconnected = await client.expect(type="connected")
    assert 4200 in error_codes(client)
    assert reconnected["socket_id"] != first_id
    await client.expect(type="channel_event", channel="news", event="pusher:subscription_succeeded")
    await in_thread(sdk.trigger, "news", "after-restart", {})
    await client.expect(type="channel_event", event="after-restart")


@pytest.mark.gen_test(timeout=30)
async def test_pusherjs_backs_off_after_4100_and_gets_in_when_there_is_room(connect, hub):
    limit = 2
    hub.options = dataclasses.replace(hub.options, max_connections=limit)
    first, _ = [await connect(f"admitted-{n}") for n in range(limit)]
    waiting = await connect("waiting", wait=False)
    await waiting.expect(type="error")
    assert 4100 in error_codes(waiting)
    assert waiting.seen(type="connected") == []
    await first.disconnect()
    await waiting.expect(type="connected", timeout=10)  # pusher-js retried on its own
