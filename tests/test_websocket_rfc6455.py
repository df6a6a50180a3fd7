"""What RFC 6455 asks of a server where Tornado is lax: 1007 for text that is not UTF-8,
1002 for a client frame that is not masked, and a close whose reason is not UTF-8
answered without a traceback. Each is the client's mistake: nothing is logged above INFO."""

from __future__ import annotations

import json
import logging
import struct

import pytest

from conftest import MAIN, until
from raw_websocket import CLOSE, RawWebSocket, frame

PING = json.dumps({"event": "pusher:ping", "data": {}}).encode()


async def connected(port: int) -> RawWebSocket:
    client = await RawWebSocket.connect(port, MAIN.key)
    assert (await client.next_frame()).event()["event"] == "pusher:connection_established"
    return client


async def assert_closed_with(client: RawWebSocket, code: int, hub, caplog) -> None:
    """The server's next frame is its close with ``code``; once the client answers, the
    connection ends and its session is gone, with nothing logged as an error."""
    (close,) = await client.frames_until_close()
    assert close.opcode == CLOSE and close.close_code == code
    await client.send(frame(struct.pack("!H", code), CLOSE))
    assert await client.ended()
    await until(lambda: not list(hub.sessions(MAIN)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("text", [b'{"event":"\xff"}', b"\xed\xa0\x80", b"ok \xe2\x82"])
@pytest.mark.gen_test(timeout=20)
async def test_text_that_is_not_utf8_is_closed_with_1007(server_port, hub, caplog, text):
    client = await connected(server_port)
    await client.send(frame(text))
    await assert_closed_with(client, 1007, hub, caplog)


@pytest.mark.gen_test(timeout=20)
async def test_an_unmasked_client_frame_is_closed_with_1002_and_not_acted_on(
        server_port, hub, caplog):
    client = await connected(server_port)
    await client.send(frame(PING, masked=False))
    await client.send(frame(PING))  # after the close: read, but not answered either
    await assert_closed_with(client, 1002, hub, caplog)  # no pusher:pong before the close


@pytest.mark.gen_test(timeout=20)
async def test_a_close_whose_reason_is_not_utf8_is_answered_1007_without_a_traceback(
        server_port, hub, caplog):
    client = await connected(server_port)
    await client.send(frame(struct.pack("!H", 1000) + b"bye \xff", CLOSE))
    (close,) = await client.frames_until_close()
    assert close.close_code == 1007
    assert await client.ended()
    await until(lambda: not list(hub.sessions(MAIN)))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.gen_test(timeout=20)
async def test_a_valid_close_is_echoed_and_valid_text_still_answered(server_port, hub, caplog):
    client = await connected(server_port)
    await client.send(frame(PING))
    assert (await client.next_frame()).event()["event"] == "pusher:pong"
    await client.send(frame(struct.pack("!H", 1000) + "au revoir, café".encode(), CLOSE))
    (close,) = await client.frames_until_close()
    assert close.close_code == 1000
    assert await client.ended()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
