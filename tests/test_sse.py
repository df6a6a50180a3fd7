"""Server-Sent Events (``GET /app/{key}/sse``): a raw HTTP client reads the stream while the
official SDK publishes; refusals come as HTTP errors before any streaming."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from conftest import APPS, MAIN, TINY, in_thread, until
from sse_client import SSEClient
from tornado_push.embed import Push
from tornado_push.handlers.sse import MAX_CHANNELS, sse_event
from tornado_push.pubsub import protocol
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.hub import Hub, HubOptions

#: A client reading nothing passes its limit after a few hundred kilobytes of events.
FLOOD = App(id="91", key="sse-flood-key", secret="sse-flood-secret",
            max_outbound_bytes=64 * 1024)


@pytest.fixture
def hub_apps() -> list[App]:
    return [*APPS, FLOOD]


@pytest.fixture
def hub_options() -> HubOptions:
    # Heartbeats every second; max_outbound_delay short so that a stalled reader goes soon.
    return HubOptions(activity_timeout=1, pong_timeout=1, max_outbound_delay=2)


def sessions_on(hub: Hub, app: App, channel: str) -> list:
    return [s for s in hub.sessions(app) if channel in s.channels]


async def publish(sdk, channel: str, event: str, data: dict) -> None:
    await in_thread(sdk.trigger, channel, event, data)


def test_sse_event_format() -> None:
    frame = protocol.encode_frame("news", "line one\nline two\r\nthree", "history-a",
                                  epoch="e1", offset=7)
    assert sse_event(frame) == (b"id: history-a:e1:7\nevent: news\n"
                                b"data: line one\ndata: line two\ndata: three\n\n")
    error = protocol.encode_event(protocol.SUBSCRIPTION_ERROR,
                                  {"type": "AuthError", "error": "no", "status": 401}, "private-a")
    assert sse_event(error) == (b'event: pusher:error\ndata: {"type":"AuthError","error":"no",'
                                b'"status":401,"channel":"private-a"}\n\n')
    assert sse_event(protocol.encode_event(protocol.PING, {})) == b": ping\n\n"
    assert sse_event(protocol.encode_frame(protocol.SUBSCRIPTION_SUCCEEDED, "{}", "a")) == b""


@pytest.mark.gen_test(timeout=60)
async def test_public_events_arrive_in_order(server_port, sdk) -> None:
    client = await SSEClient.open(server_port, query="channels=news,other")
    assert client.status == 200 and "text/event-stream" in client.head
    try:
        # The headers come once the channels are subscribed: publishing now loses nothing.
        for n in range(5):
            await publish(sdk, "news" if n % 2 else "other", "tick", {"n": n})
        received = [await client.next() for _ in range(5)]
        assert [json.loads(e["data"])["n"] for e in received] == list(range(5))
        assert {e["event"] for e in received} == {"tick"} and all("id" not in e for e in received)
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_history_channel_events_carry_ids(server_port, sdk) -> None:
    client = await SSEClient.open(server_port, query="channels=history-ids")
    try:
        for n in range(3):
            await publish(sdk, "history-ids", "tick", {"n": n})
        ids = [(await client.next())["id"] for _ in range(3)]
        channels, epochs, offsets = zip(*(i.split(":") for i in ids))
        assert set(channels) == {"history-ids"} and len(set(epochs)) == 1
        assert offsets == ("1", "2", "3")
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_refusals_are_http_errors_before_streaming(server_port) -> None:
    cases = [("nope", "channels=a", 404), (MAIN.key, "", 400), (MAIN.key, "channels=bad%20name", 400),
             (MAIN.key, "channels=" + ",".join(f"c{i}" for i in range(MAX_CHANNELS + 1)), 400),
             (MAIN.key, "channels=private-a", 403),
             (MAIN.key, "channels=presence-a&token=1:00", 400),
             # Not UTF-8 (a lone surrogate's bytes, a stray byte): Tornado's 400, as text.
             ("%FF", "channels=a", 400), (MAIN.key, "channels=%ED%A0%80", 400),
             (MAIN.key, "channels=a&last_event_id=%FF", 400),
             ("no%0Akey", "channels=a", 404)]  # a line break in what the body names
    for key, query, status in cases:
        client = await SSEClient.open(server_port, key, query)
        assert client.status == status, (key, query, client.head)
        body = (await client.body()).strip()
        assert "text/plain" in client.head and body and "\n" not in body, body
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_stream_over_the_app_quota_is_refused_before_streaming(server_port, hub) -> None:
    streams = [await SSEClient.open(server_port, TINY.key, "channels=full") for _ in range(3)]
    try:
        assert [s.status for s in streams] == [200] * 3
        over = await SSEClient.open(server_port, TINY.key, "channels=full")
        assert over.status == 403 and "quota" in (await over.body()).lower()
        over.close()
        assert len(sessions_on(hub, TINY, "full")) == 3
    finally:
        for stream in streams:
            stream.close()


def token_query(channels: list[str], *, expires_in: float = 60, user_id: str | None = None,
                secret: str | None = None) -> str:
    signer = Push(apps=[App(id=MAIN.id, key=MAIN.key, secret=secret or MAIN.secret)])
    from urllib.parse import urlencode
    return urlencode(signer.authorize_sse(channels, expires_in=expires_in, user_id=user_id))


@pytest.mark.gen_test(timeout=60)
async def test_token_authorizes_private_and_presence(server_port, sdk, hub) -> None:
    query = token_query(["private-feed", "presence-room"], user_id="ann")
    client = await SSEClient.open(server_port, query=query)
    assert client.status == 200
    try:
        await publish(sdk, "private-feed", "secret", {"n": 1})
        assert json.loads((await client.expect("secret"))["data"]) == {"n": 1}
        [session] = sessions_on(hub, MAIN, "presence-room")
        assert session.channels["presence-room"].user_id == "ann"
    finally:
        client.close()
    for bad in (token_query(["private-feed"], secret="wrong"),
                token_query(["private-feed"], expires_in=-1),
                token_query(["private-feed", "private-other"]).replace("private-other", "x"),
                token_query(["presence-room"], user_id="ann").replace("user_id=ann", "user_id=bob")):
        refused = await SSEClient.open(server_port, query=bad)
        assert refused.status == 403, bad
        refused.close()


@pytest.mark.gen_test(timeout=60)
async def test_last_event_id_resumes_without_gap(server_port, sdk, hub) -> None:
    channel = "history-resume"
    client = await SSEClient.open(server_port, query=f"channels={channel}")
    for n in range(2):
        await publish(sdk, channel, "tick", {"n": n})
    last = [await client.next() for _ in range(2)][-1]["id"]
    [session] = sessions_on(hub, MAIN, channel)
    session.transport.abort()  # the server drops the stream
    await asyncio.wait_for(client.ended.wait(), 10)
    client.close()
    for n in range(2, 5):  # missed while away
        await publish(sdk, channel, "tick", {"n": n})
    again = await SSEClient.open(server_port, query=f"channels={channel}",
                                 headers={"Last-Event-ID": last})
    try:
        await publish(sdk, channel, "tick", {"n": 5})
        received = [await again.expect("tick") for _ in range(4)]
        assert [json.loads(e["data"])["n"] for e in received] == [2, 3, 4, 5]
        assert [e["id"].rsplit(":", 1)[1] for e in received] == ["3", "4", "5", "6"]
    finally:
        again.close()
    # A page that reloaded puts the id it kept in the URL instead: the same resume.
    reloaded = await SSEClient.open(server_port, query=f"channels={channel}&last_event_id={last}")
    try:
        assert [json.loads((await reloaded.expect("tick"))["data"])["n"] for _ in range(4)] \
            == [2, 3, 4, 5]
    finally:
        reloaded.close()
    epoch = last.split(":")[1]
    stale = await SSEClient.open(server_port, query=f"channels={channel}",
                                 headers={"Last-Event-ID": f"{channel}:not-{epoch}:1"})
    try:
        failed = await stale.expect("pusher_internal:resume_failed")
        assert json.loads(failed["data"])["channel"] == channel
    finally:
        stale.close()
    bad = await SSEClient.open(server_port, query=f"channels={channel}",
                               headers={"Last-Event-ID": "garbage"})
    assert bad.status == 400
    bad.close()


@pytest.mark.gen_test(timeout=60)
async def test_idle_stream_gets_heartbeats_and_stays_open(server_port, hub) -> None:
    client = await SSEClient.open(server_port, query="channels=quiet")
    try:
        await until(lambda: client.comments >= 3, timeout=20)  # past pong_timeout twice over
        assert not client.ended.is_set() and len(sessions_on(hub, MAIN, "quiet")) == 1
    finally:
        client.close()
    await until(lambda: not sessions_on(hub, MAIN, "quiet"))  # the client left: so does the session


@pytest.mark.gen_test(timeout=60)
async def test_slow_reader_is_closed(server_port, hub) -> None:
    client = await SSEClient.open(server_port, FLOOD.key, "channels=flood", receive_buffer=4096)
    client._task.cancel()  # reads nothing more
    try:
        [session] = await until(lambda: sessions_on(hub, FLOOD, "flood"))
        session.transport.request.connection.stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        payload = "x" * 2000
        deadline = time.monotonic() + 30
        while not session.is_closed:
            assert time.monotonic() < deadline, "never closed"
            await hub.trigger(FLOOD, ["flood"], "big", payload, None)
            await asyncio.sleep(0)
        assert hub.counters(FLOOD).slow_consumers == 1
        # Read now: events in full, then the error saying why, then the end (HTTP/1.0).
        rest = (await asyncio.wait_for(client.reader.read(), 30)).decode()
        blocks = [b for b in rest.rstrip("\n").split("\n\n") if not b.startswith(":")]
        assert blocks[-1].startswith("event: pusher:error\ndata: ")
        assert json.loads(blocks[-1].split("data: ", 1)[1])["code"] == 4100
        assert all(b == f"event: big\ndata: {payload}" for b in blocks[1:-1])
    finally:
        client.close()


def test_authorize_sse_refuses_what_the_server_would() -> None:
    push = Push(apps=[MAIN])
    with pytest.raises(ValueError):
        push.authorize_sse(["presence-room"])  # no user_id
    with pytest.raises(ValueError):
        push.authorize_sse(["bad name"])
    with pytest.raises(ValueError):
        push.authorize_sse([])
    query = push.authorize_sse(["private-a", "presence-b"], user_id=7, expires_in=30)
    assert query["channels"] == "private-a,presence-b" and query["user_id"] == "7"
    expiry = int(query["token"].split(":")[0])
    assert time.time() + 25 < expiry <= time.time() + 31
