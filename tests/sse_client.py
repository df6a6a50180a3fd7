"""A Server-Sent Events client reduced to its wire, for tests of ``/app/{key}/sse``."""

from __future__ import annotations

import asyncio
import socket
import time

from conftest import MAIN


class SSEClient:
    """An ``EventSource`` reduced to its wire: HTTP/1.0 (no chunking), events parsed as the
    HTML standard says (``id``, ``event``, ``data`` lines joined by newlines, comments)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 status: int, head: str) -> None:
        self.reader, self.writer, self.status, self.head = reader, writer, status, head
        self.events: asyncio.Queue[dict] = asyncio.Queue()
        self.comments = 0
        self.ended = asyncio.Event()
        self._task = asyncio.ensure_future(self._read()) if status == 200 else None

    @classmethod
    async def open(cls, port: int, key: str = MAIN.key, query: str = "",
                   headers: dict[str, str] | None = None, receive_buffer: int | None = None
                   ) -> SSEClient:
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        lines = [f"GET /app/{key}/sse?{query} HTTP/1.0", "Accept: text/event-stream",
                 *(f"{name}: {value}" for name, value in (headers or {}).items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        return cls(reader, writer, int(head.split()[1]), head)

    async def body(self) -> str:
        return (await asyncio.wait_for(self.reader.read(), 10)).decode()

    async def _read(self) -> None:
        try:
            while True:
                block = await self.reader.readuntil(b"\n\n")
                event: dict = {}
                for line in block.decode()[:-2].split("\n"):
                    if line.startswith(":"):
                        self.comments += 1
                        continue
                    field, _, value = line.partition(": ")
                    event[field] = event[field] + "\n" + value if field in event else value
                if event:
                    self.events.put_nowait(event)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended.set()

    async def next(self, timeout: float = 10) -> dict:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def expect(self, event: str, timeout: float = 10) -> dict:
        """The next event named ``event``, skipping others (presence, resume notices)."""
        deadline = time.monotonic() + timeout
        while True:
            received = await self.next(max(0.01, deadline - time.monotonic()))
            if received.get("event") == event:
                return received

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.writer.close()
