"""A client that stops reading is closed 4100 once, in bounded time, and costs nobody else
anything: the others on its channel and elsewhere get every event, in order, and the
log stays quiet."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import pytest

from conftest import APPS, MAIN, until
from raw_websocket import CLOSE, RawWebSocket, subscribe
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.hub import Hub, HubOptions
from tornado_push.pubsub.session import Session

#: Small enough that a client reading nothing passes it after about a thousand small events.
FLOOD = App(id="90", key="flood-key", secret="flood-secret", max_outbound_bytes=64 * 1024)


@pytest.fixture
def hub_apps() -> list[App]:
    return [*APPS, FLOOD]


async def non_reader(port: int, hub: Hub, app: App, channel: str
                     ) -> tuple[RawWebSocket, Session, socket.socket]:
    """A subscriber that never reads, with small kernel buffers on both ends (most of what
    it is not reading stays in the server's own buffer); its session and server-side socket."""
    known = {session.socket_id for session in hub.sessions(app)}
    client = await RawWebSocket.connect(port, app.key, receive_buffer=4096,
                                        then=subscribe(channel))
    session = await until(lambda: next((s for s in hub.sessions(app) if s.socket_id not in known
                                        and channel in s.channels), None))
    stream = session.transport.ws_connection.stream
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return client, session, stream.socket


async def reader(raw, app: App, channel: str):
    client = await raw(app.key)
    await client.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    await client.expect("pusher_internal:subscription_succeeded")
    return client


async def numbers(client, count: int) -> list[int]:
    return [json.loads((await client.expect("tick", timeout=20))["data"])["n"]
            for _ in range(count)]


async def assert_closed_once_with_4100(client: RawWebSocket, server_side: socket.socket) -> None:
    """What the non-reader finds once it reads: events in order with none missing, then one
    pusher:error 4100 and the close frame 4100, then the end of the stream.

    It reads at full speed, with larger buffers: through the small ones, draining the
    megabyte the server holds for it would take longer than the server waits for its
    reply to the close (5 s) before it drops the connection.
    """
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    frames = await client.frames_until_close()
    assert frames[-1].opcode == CLOSE and frames[-1].close_code == 4100
    events = [frame.event() for frame in frames[:-1]]
    assert events[0]["event"] == "pusher:connection_established"
    assert events[1]["event"] == "pusher_internal:subscription_succeeded"
    *ticks, error = events[2:]
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4100, error
    assert [json.loads(tick["data"])["n"] for tick in ticks] == list(range(len(ticks)))
    assert await client.ended()


def assert_log_quiet(caplog) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RecursionError" not in caplog.text


@pytest.mark.gen_test(timeout=90)
async def test_non_reader_flooded_with_small_events_is_closed_once_and_the_others_get_all(
        raw, hub, server_port, caplog):
    stalled, stalled_session, server_side = await non_reader(server_port, hub, FLOOD, "flood")
    readers = [await reader(raw, FLOOD, "flood") for _ in range(50)]
    bystanders = [await reader(raw, FLOOD, "other") for _ in range(5)]
    sent = 0

    async def publish(count: int) -> None:
        # As fast as the readers read, one event a loop iteration: each its own write, so the
        # buffer of the client that does not read fills to within one event of its limit.
        nonlocal sent
        for _ in range(count):
            await hub.trigger(FLOOD, ["flood", "other"], "tick", json.dumps({"n": sent}))
            sent += 1
            await asyncio.sleep(0)
        await asyncio.gather(*(client.barrier(timeout=20) for client in readers + bystanders))

    while hub.slow_consumers == 0 and sent < 5000:  # ~1,000 events of ~70 bytes fill 64 KiB
        await publish(50)
    # It reads from now on: before the server gives up waiting for its close reply.
    stalled_reads = asyncio.ensure_future(assert_closed_once_with_4100(stalled, server_side))
    await publish(200)  # and after the cut, the others still get everything
    assert hub.slow_consumers == 1 and stalled_session.is_closed
    for client in readers + bystanders:
        assert await numbers(client, sent) == list(range(sent))
    await stalled_reads
    assert hub.slow_consumers == 1
    assert_log_quiet(caplog)
    stalled.close()


@pytest.mark.gen_test(timeout=90)
async def test_non_reader_of_5_kb_events_at_150_a_second_is_closed_once_among_100_readers(
        raw, hub, server_port, caplog):
    stalled, stalled_session, server_side = await non_reader(server_port, hub, MAIN, "big")
    readers = [await reader(raw, MAIN, "big") for _ in range(100)]
    padding = "x" * 5000
    start, sent, after_cut = time.monotonic(), 0, 0
    stalled_reads = None
    while after_cut < 150 and sent < 1000:  # 1 MiB is ~200 events: cut after ~1.4 s
        await asyncio.sleep(max(0.0, start + sent / 150 - time.monotonic()))
        await hub.trigger(MAIN, ["big"], "tick", json.dumps({"n": sent, "pad": padding}))
        sent += 1
        if hub.slow_consumers and stalled_reads is None:
            stalled_reads = asyncio.ensure_future(assert_closed_once_with_4100(stalled, server_side))
        after_cut += hub.slow_consumers > 0
    assert hub.slow_consumers == 1 and stalled_session.is_closed
    for client in readers:
        assert await numbers(client, sent) == list(range(sent))
    await stalled_reads
    assert_log_quiet(caplog)
    stalled.close()


@pytest.mark.parametrize("hub_options", [HubOptions(max_outbound_delay=1.0)])
@pytest.mark.gen_test(timeout=60)
async def test_non_reader_at_a_low_rate_is_closed_once_its_bytes_wait_past_the_delay(
        raw, hub, server_port, hub_options, caplog):
    stalled, stalled_session, server_side = await non_reader(server_port, hub, MAIN, "slow")
    steady = await reader(raw, MAIN, "slow")
    stream = stalled_session.transport.ws_connection.stream
    padding = "x" * 5000
    waiting_since = None
    most_unsent = sent = 0
    while not stalled_session.is_closed and sent < 300:  # 25 a second: 12 s at most
        await hub.trigger(MAIN, ["slow"], "tick", json.dumps({"n": sent, "pad": padding}))
        sent += 1
        await asyncio.sleep(0.04)
        unsent = stream._write_buffer._size
        most_unsent = max(most_unsent, unsent)
        if unsent and waiting_since is None:
            waiting_since = time.monotonic()
    waited = time.monotonic() - waiting_since
    stalled_reads = asyncio.ensure_future(assert_closed_once_with_4100(stalled, server_side))
    assert stalled_session.is_closed and hub.slow_consumers == 1
    # The bound: the delay, plus up to two activity checks (a quarter of the delay apart).
    assert 0.9 <= waited <= hub_options.max_outbound_delay * 1.5 + 1.0, waited
    assert most_unsent < MAIN.max_outbound_bytes  # the time bound closed it, not the byte bound
    assert await numbers(steady, sent) == list(range(sent))
    assert not steady.connection.close_code and hub.slow_consumers == 1
    await stalled_reads
    assert_log_quiet(caplog)
    stalled.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_connection_whose_write_fails_is_aborted_and_the_rest_of_the_flush_goes_out(
        raw, hub, caplog):
    broken = [await reader(raw, MAIN, "mixed") for _ in range(2)]  # first in the flush
    readers = [await reader(raw, MAIN, "mixed") for _ in range(3)]

    def fail() -> None:
        raise RuntimeError("a bug in one connection's write")

    for session in list(hub.sessions(MAIN))[:2]:
        session.transport.write_queued = fail
    for number in range(20):  # one loop iteration: one flush
        await hub.trigger(MAIN, ["mixed"], "tick", json.dumps({"n": number}))
    for client in readers:
        assert await numbers(client, 20) == list(range(20))
    for client in broken:
        assert await client.closed() is None  # aborted: no close frame
    await until(lambda: len(list(hub.sessions(MAIN))) == 3)
    for number in range(20, 25):
        await hub.trigger(MAIN, ["mixed"], "tick", json.dumps({"n": number}))
    for client in readers:
        assert await numbers(client, 5) == list(range(20, 25))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) <= 2  # one per failing connection at most, never one per flush
    assert "Exception in callback" not in caplog.text
