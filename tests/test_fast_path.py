"""The broadcast write path: framed once, coalesced, bounded, and the same bytes as Tornado's."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import tornado.web
import tornado.websocket
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

from app_server import auth_routes
from conftest import APPS, MAIN, MAX_MESSAGE_BYTES, SMALL_BUFFER
from tornado_push.handlers import routes
from tornado_push.handlers.outbound import websocket_text_frame
from tornado_push.handlers.tornado_internals import websocket_compresses


@pytest.fixture
def app(hub) -> tornado.web.Application:
    """As conftest's, but offering permessage-deflate to clients that ask for it."""
    return tornado.web.Application(routes(hub, compression=True) + auth_routes(APPS),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


class _CapturingStream:
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> asyncio.Future:
        self.written += data
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.gen_test
async def test_frames_are_byte_identical_to_tornados_write_message(size):
    payload = json.dumps({"event": "e", "data": "x" * size}).encode()[:size]
    tornado_side = WebSocketProtocol13(None, mask_outgoing=False, params=_WebSocketParams())
    tornado_side.stream = _CapturingStream()
    await tornado_side.write_message(payload)
    assert websocket_text_frame(payload) == tornado_side.stream.written


async def subscribed_socket(raw, channel: str, key: str = MAIN.key):
    socket_ = await raw(key)
    await socket_.send({"event": "pusher:subscribe", "data": {"channel": channel}})
    await socket_.expect("pusher_internal:subscription_succeeded")
    return socket_


@pytest.mark.gen_test(timeout=20)
async def test_many_publishes_in_one_iteration_arrive_whole_and_in_order(raw, hub):
    sockets = [await subscribed_socket(raw, "ticks") for _ in range(3)]
    for number in range(200):  # no await yields to the loop: one coalesced write each
        await hub.trigger(MAIN, ["ticks"], "tick", json.dumps({"n": number, "pad": "x" * number}))
    for socket_ in sockets:
        received = [json.loads((await socket_.expect("tick"))["data"])["n"] for _ in range(200)]
        assert received == list(range(200))


@pytest.mark.gen_test(timeout=30)
async def test_slow_consumer_is_dropped_with_4100_and_the_others_get_everything(
        raw, hub, server_port):
    reader = await subscribed_socket(raw, "firehose", SMALL_BUFFER.key)
    stalled = socket.create_connection(("127.0.0.1", server_port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /app/small-buffer-key?protocol=7 HTTP/1.1\r\nHost: x\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    + websocket_masked(b'{"event":"pusher:subscribe","data":{"channel":"firehose"}}'))
    while len(list(hub.sessions(SMALL_BUFFER))) < 2 or not all(
            "firehose" in s.channels for s in hub.sessions(SMALL_BUFFER)):
        await reader.barrier()  # the stalled client's subscribe lands on its own time
    data = "y" * 9000
    sent = 0
    while hub.slow_consumers == 0 and sent < 5000:  # 45 MB at most
        await hub.trigger(SMALL_BUFFER, ["firehose"], "chunk", json.dumps({"n": sent, "d": data}))
        sent += 1
        if sent % 20 == 0:
            await reader.barrier()  # let writes drain to the reading client
    assert hub.slow_consumers == 1
    assert len(list(hub.sessions(SMALL_BUFFER))) == 1  # only the reader is left
    numbers = [json.loads((await reader.expect("chunk"))["data"])["n"] for _ in range(sent)]
    assert numbers == list(range(sent))
    stalled.close()


def websocket_masked(payload: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return (bytes([0x81, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


@pytest.mark.gen_test(timeout=20)
async def test_deflate_connections_take_their_own_path_and_get_the_same_events(
        raw, hub, server_port):
    plain = await subscribed_socket(raw, "mixed")
    deflating = await tornado.websocket.websocket_connect(
        f"ws://127.0.0.1:{server_port}/app/{MAIN.key}?protocol=7", compression_options={})
    await deflating.read_message()
    deflating.write_message(json.dumps({"event": "pusher:subscribe", "data": {"channel": "mixed"}}))
    assert "subscription_succeeded" in await deflating.read_message()
    transports = [session.transport for session in hub.sessions(MAIN)]
    assert sorted(websocket_compresses(t) for t in transports) == [False, True]
    for number in range(20):
        await hub.trigger(MAIN, ["mixed"], "n", str(number))
    expected = [str(number) for number in range(20)]
    assert [json.loads(await deflating.read_message())["data"] for _ in range(20)] == expected
    assert [(await plain.expect("n"))["data"] for _ in range(20)] == expected
    deflating.close()
