"""History in one process: offsets on every message, resume, the HTTP history endpoint.

Clients of the extension are :class:`history_client.HistoryClient` (a bare
WebSocket that keeps its positions and checks every offset follows the last);
stock clients are real pusher-js; publishers are the official SDK, or the hub
itself where a test needs many publications at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pusher
import pusher.errors
import pytest
from tornado.httpclient import AsyncHTTPClient

from app_server import sdk_client
from conftest import MAIN, SHORT_HISTORY, in_thread, subscribed
from history_client import HistoryClient, numbers
from tornado_push.pubsub.apps import App


async def publish(sdk: pusher.Pusher, channel: str, *ns: int) -> None:
    for n in ns:
        await in_thread(sdk.trigger, channel, "message", {"n": n})


async def history(app: App, port: int, channel: str, **params: Any) -> Any:
    """``GET .../history`` signed and sent by the official SDK's own request machinery."""
    client = sdk_client(app, port)._pusher_client
    request = pusher.http.Request(client, pusher.http.GET,
                                  f"/apps/{app.id}/channels/{channel}/history",
                                  {name: str(value) for name, value in params.items()})
    return await in_thread(client.http.send_request, request)


async def history_status(app: App, port: int, channel: str, **params: Any) -> tuple[int, Any]:
    """The status and JSON body of a signed ``GET .../history``, refusals included."""
    client = sdk_client(app, port)._pusher_client
    request = pusher.http.Request(client, pusher.http.GET,
                                  f"/apps/{app.id}/channels/{channel}/history",
                                  {name: str(value) for name, value in params.items()})
    response = await AsyncHTTPClient().fetch(request.url, raise_error=False)
    return response.code, json.loads(response.body)


# -- offsets and plain subscribes -----------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_subscribe_to_a_history_channel_tells_where_it_starts_and_messages_carry_offsets(
        server_port, sdk):
    await publish(sdk, "history-room", 1, 2)
    client = await HistoryClient.open(server_port)
    joined = await client.subscribe("history-room")
    assert joined.succeeded["offset"] == 2 and joined.succeeded["epoch"]
    await publish(sdk, "history-room", 3, 4)
    frames = await client.events("history-room", 2)
    assert numbers(frames) == [3, 4]
    assert [frame["offset"] for frame in frames] == [3, 4]


@pytest.mark.gen_test(timeout=30)
async def test_channels_without_history_carry_no_offsets(server_port, sdk):
    client = await HistoryClient.open(server_port)
    joined = await client.subscribe("news")
    assert "epoch" not in joined.succeeded and "offset" not in joined.succeeded
    await publish(sdk, "news", 1)
    frame = await client.socket.expect("message")
    assert "offset" not in frame and "epoch" not in frame


# -- resume ----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_resume_sends_exactly_the_missed_messages_then_live_ones(server_port, sdk):
    client = await HistoryClient.open(server_port)
    await client.subscribe("history-room")
    await publish(sdk, "history-room", 1, 2)
    await client.events("history-room", 2)
    client.close()
    await publish(sdk, "history-room", 3, 4, 5)
    client = await client.reopen(server_port)
    resumed = await client.subscribe("history-room")
    assert resumed.outcome == "resume_succeeded"
    assert numbers(resumed.replayed) == [3, 4, 5]
    assert resumed.outcome_data["offset"] == 5
    await publish(sdk, "history-room", 6)
    assert numbers(await client.events("history-room", 1)) == [6]


@pytest.mark.gen_test(timeout=30)
async def test_resume_with_nothing_missed_replays_nothing(server_port, sdk):
    client = await HistoryClient.open(server_port)
    await client.subscribe("history-room")
    await publish(sdk, "history-room", 1)
    await client.events("history-room", 1)
    client = await client.reopen(server_port)
    resumed = await client.subscribe("history-room")
    assert (resumed.outcome, resumed.replayed) == ("resume_succeeded", [])
    await publish(sdk, "history-room", 2)
    assert numbers(await client.events("history-room", 1)) == [2]


@pytest.mark.gen_test(timeout=30)
async def test_messages_published_during_a_resume_follow_the_replay_once_and_in_order(
        server_port, hub):
    channel = "history-busy"

    async def publish_many(first: int, last: int) -> None:
        for n in range(first, last + 1):
            await hub.trigger(MAIN, [channel], "message", json.dumps({"n": n}))
            await asyncio.sleep(0)  # let the resume interleave with every publication

    client = await HistoryClient.open(server_port)
    await client.subscribe(channel)
    await publish_many(1, 20)
    await client.events(channel, 20)
    client.close()
    await publish_many(21, 40)
    publishing = asyncio.ensure_future(publish_many(41, 90))
    client = await client.reopen(server_port)
    resumed = await client.subscribe(channel)
    assert resumed.outcome == "resume_succeeded"
    await publishing
    left = 90 - client.positions[channel][1]
    live = await client.events(channel, left)  # every offset checked to follow the last
    assert numbers(resumed.replayed + live) == list(range(21, 91))


@pytest.mark.gen_test(timeout=30)
async def test_resume_from_another_epoch_cannot_recover_and_goes_on_live(server_port, sdk):
    await publish(sdk, "history-room", 1, 2)
    client = await HistoryClient.open(server_port)
    resumed = await client.subscribe("history-room", resume_from=("an-old-epoch", 1))
    assert resumed.outcome == "resume_failed" and resumed.replayed == []
    assert resumed.outcome_data["reason"] == "epoch_changed"
    assert resumed.outcome_data["offset"] == 2 and resumed.outcome_data["epoch"] != "an-old-epoch"
    await publish(sdk, "history-room", 3)
    assert numbers(await client.events("history-room", 1)) == [3]


@pytest.mark.gen_test(timeout=30)
async def test_resume_past_the_retained_messages_cannot_recover(server_port):
    sdk = sdk_client(SHORT_HISTORY, server_port)
    client = await HistoryClient.open(server_port, SHORT_HISTORY)
    await client.subscribe("room")
    await publish(sdk, "room", 1)
    await client.events("room", 1)
    client.close()
    await publish(sdk, "room", 2, 3, 4, 5)  # three are kept: 2 is gone
    client = await client.reopen(server_port)
    resumed = await client.subscribe("room")
    assert resumed.outcome == "resume_failed" and resumed.replayed == []
    assert (resumed.outcome_data["reason"], resumed.outcome_data["offset"]) == ("messages_lost", 5)
    await publish(sdk, "room", 6)
    assert numbers(await client.events("room", 1)) == [6]


@pytest.mark.gen_test(timeout=30)
async def test_resume_on_a_channel_without_history_says_so(server_port):
    client = await HistoryClient.open(server_port)
    resumed = await client.subscribe("news", resume_from=("some-epoch", 3))
    assert resumed.outcome == "resume_failed"
    assert resumed.outcome_data == {"reason": "no_history", "epoch": None, "offset": None}


@pytest.mark.gen_test(timeout=30)
async def test_a_malformed_resume_is_refused_with_an_error(raw):
    socket = await raw()
    await socket.send({"event": "pusher:subscribe",
                       "data": {"channel": "history-room", "resume": {"epoch": 3}}})
    error = await socket.expect("pusher:error")
    assert error["data"]["code"] == 4300 and "resume" in error["data"]["message"]


@pytest.mark.gen_test(timeout=30)
async def test_client_events_get_offsets_and_are_replayed(server_port):
    alice = await HistoryClient.open(server_port)
    bob = await HistoryClient.open(server_port)
    for client in (alice, bob):
        await client.subscribe("private-history-chat")
    await alice.trigger("private-history-chat", "client-typing", {"n": 1})
    assert numbers(await bob.events("private-history-chat", 1)) == [1]
    bob.close()
    await alice.trigger("private-history-chat", "client-typing", {"n": 2})
    await alice.socket.barrier()
    bob = await bob.reopen(server_port)
    resumed = await bob.subscribe("private-history-chat")
    assert (resumed.outcome, numbers(resumed.replayed)) == ("resume_succeeded", [2])


@pytest.mark.gen_test(timeout=30)
async def test_client_events_pass_live_without_offsets_unless_the_app_keeps_them(server_port):
    alice = await HistoryClient.open(server_port, SHORT_HISTORY)  # history_client_events off
    bob = await HistoryClient.open(server_port, SHORT_HISTORY)
    for client in (alice, bob):
        await client.subscribe("private-room")
    await alice.trigger("private-room", "client-typing", {"n": 0})
    typing = await bob.socket.expect("client-typing")
    assert "offset" not in typing and "epoch" not in typing
    await publish(sdk_client(SHORT_HISTORY, server_port), "private-room", 1)
    (message,) = await bob.events("private-room", 1)  # offset 1: the typing took none
    assert message["offset"] == 1
    page = await history(SHORT_HISTORY, server_port, "private-room")
    assert [item["event"] for item in page["items"]] == ["message"]


# -- stock pusher-js -----------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_stock_pusherjs_receives_history_channel_events_as_usual(connect, sdk):
    client = await connect("a", user="alice")
    for channel in ("history-room", "presence-history-room"):
        await subscribed(client, channel)
        await publish(sdk, channel, 1, 2)
    for channel in ("history-room", "presence-history-room"):
        for n in (1, 2):
            seen = await client.expect(type="channel_event", channel=channel, event="message")
            assert seen["data"] == {"n": n}
    members = await client.members("presence-history-room")
    assert "alice" in json.dumps(members)
    assert not client.seen(type="error")


# -- the HTTP history endpoint ---------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_http_history_lists_messages_in_order_through_the_official_sdk(server_port, sdk):
    await publish(sdk, "history-log", 1, 2, 3, 4)
    page = await history(MAIN, server_port, "history-log")
    assert [item["offset"] for item in page["items"]] == [1, 2, 3, 4]
    assert [json.loads(item["data"])["n"] for item in page["items"]] == [1, 2, 3, 4]
    assert {item["event"] for item in page["items"]} == {"message"}
    assert (page["first_offset"], page["last_offset"]) == (1, 4) and page["epoch"]
    newest = await history(MAIN, server_port, "history-log", limit=2)
    assert [item["offset"] for item in newest["items"]] == [3, 4]
    after = await history(MAIN, server_port, "history-log", after=1, limit=2)
    assert [item["offset"] for item in after["items"]] == [2, 3]
    before = await history(MAIN, server_port, "history-log", before=3)
    assert [item["offset"] for item in before["items"]] == [1, 2]


@pytest.mark.gen_test(timeout=30)
async def test_http_history_keeps_only_what_the_retention_allows(server_port):
    await publish(sdk_client(SHORT_HISTORY, server_port), "log", *range(1, 11))
    page = await history(SHORT_HISTORY, server_port, "log", limit=1000)
    assert [item["offset"] for item in page["items"]] == [8, 9, 10]
    assert (page["first_offset"], page["last_offset"]) == (8, 10)


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("params, status", [
    ({"limit": 0}, 400), ({"limit": 1001}, 400), ({"limit": "ten"}, 400),
    ({"after": -1}, 400), ({"before": 0}, 400), ({"before": "1.5"}, 400),
])
async def test_http_history_refuses_bad_parameters(server_port, params, status):
    code, body = await history_status(MAIN, server_port, "history-log", **params)
    assert code == status and "error" in body


@pytest.mark.gen_test(timeout=30)
async def test_http_history_of_a_channel_without_history_is_not_found(server_port):
    code, body = await history_status(MAIN, server_port, "news")
    assert code == 404 and "keeps no history" in body["error"]


@pytest.mark.gen_test(timeout=30)
async def test_http_history_needs_a_valid_signature(server_port):
    forged = sdk_client(MAIN, server_port, secret="forged")._pusher_client
    request = pusher.http.Request(forged, pusher.http.GET,
                                  f"/apps/{MAIN.id}/channels/history-log/history", {})
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(forged.http.send_request, request)
