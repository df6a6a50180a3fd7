"""A WebSocket client on a bare TCP socket: for what no client library sends, or a client
that stops reading.

The server's frames are read and parsed here, byte by byte as they arrive, so
a test sees exactly what was on the wire: the frames in order, then the close
frame's code, then the end of the stream.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass

TEXT, CLOSE = 0x1, 0x8
_HANDSHAKE = (b"GET /app/%s?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def frame(payload: bytes, opcode: int = TEXT, masked: bool = True) -> bytes:
    """One final frame as a client sends it (masked, as RFC 6455 requires, unless told not)."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if not masked:
        return header + payload
    mask = b"\x01\x02\x03\x04"
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def subscribe(channel: str) -> bytes:
    return frame(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode())


@dataclass
class ServerFrame:
    opcode: int
    payload: bytes

    def event(self) -> dict:
        return json.loads(self.payload)

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None


class RawWebSocket:
    """A connected, handshaken socket; it reads only when the test awaits :meth:`next_frame`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    async def connect(cls, port: int, key: str, *, receive_buffer: int | None = None,
                      then: bytes = b"") -> RawWebSocket:
        """Connect, shake hands and send ``then``; a small ``receive_buffer`` makes a client
        whose kernel holds little of what it does not read."""
        sock = socket.create_connection(("127.0.0.1", port))
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        client = cls(sock)
        await client.send(_HANDSHAKE % key.encode())
        await client._read_until(b"\r\n\r\n")
        client._buffer = client._buffer.split(b"\r\n\r\n", 1)[1]
        if then:
            await client.send(then)
        return client

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _read_until(self, marker: bytes) -> None:
        while marker not in self._buffer:
            await self._read_more()

    async def _read_more(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    async def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            await self._read_more()
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    async def next_frame(self, timeout: float = 10.0) -> ServerFrame:
        """The server's next frame (ConnectionError if the stream ends before it)."""
        return await asyncio.wait_for(self._next_frame(), timeout)

    async def _next_frame(self) -> ServerFrame:
        first, second = await self._take(2)
        assert not second & 0x80, "a server never masks its frames"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._take(8))
        return ServerFrame(first & 0x0F, await self._take(length))

    async def frames_until_close(self, timeout: float = 10.0) -> list[ServerFrame]:
        """Every frame up to and including the server's close frame."""
        frames = [await self.next_frame(timeout)]
        while frames[-1].opcode != CLOSE:
            frames.append(await self.next_frame(timeout))
        return frames

    async def ended(self, timeout: float = 10.0) -> bool:
        """Whether the server closed the TCP connection (after any frames left unread)."""
        async def drained() -> None:
            while True:
                try:
                    await self._read_more()
                except ConnectionError:
                    return
        try:
            await asyncio.wait_for(drained(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
