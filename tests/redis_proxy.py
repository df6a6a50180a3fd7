"""A TCP proxy in front of a real redis-server that can lose Redis's answers.

While :attr:`ReplyDroppingProxy.dropping` is set, every command still reaches Redis
and runs there, but what Redis answers is thrown away: the client times out on a
write that was carried out. That is what a one-way network fault, or a stall
between Redis's reply and the client's read, does to a client, and it is the case
a retried write must get right (it cannot tell "not done" from "done, unanswered").
:attr:`~ReplyDroppingProxy.losing_answers_to` narrows it to the connections that
send a given command: its answer and all that follow on that connection are lost.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis_server import free_port


class _Link:
    """One client connection's state: whether its answers are being lost."""

    def __init__(self) -> None:
        self.losing = False


class ReplyDroppingProxy:
    """``await ReplyDroppingProxy.start(redis_port)``; ``url`` to connect through it."""

    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        #: While set, every answer from Redis is read and dropped.
        self.dropping = False
        #: While set, a connection that sends a command holding these bytes loses that
        #: command's answer and every later one.
        self.losing_answers_to: bytes | None = None
        #: What clients sent while their answers were lost (chunks, as read).
        self.sent_unanswered: list[bytes] = []

    @classmethod
    async def start(cls, redis_port: int) -> ReplyDroppingProxy:
        proxy = cls(redis_port)
        proxy.port = free_port()
        proxy._server = await asyncio.start_server(proxy._serve, "127.0.0.1", proxy.port)
        return proxy

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self._redis_port)
        self._writers |= {client_writer, redis_writer}
        link = _Link()
        try:
            await asyncio.gather(self._commands(link, client_reader, redis_writer),
                                 self._answers(link, redis_reader, client_writer))
        finally:
            for writer in (client_writer, redis_writer):
                self._writers.discard(writer)
                writer.close()

    async def _commands(self, link: _Link, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                marker = self.losing_answers_to
                if marker is not None and marker in chunk:
                    link.losing = True
                if self.dropping or link.losing:
                    self.sent_unanswered.append(chunk)
                writer.write(chunk)
                await writer.drain()
        writer.close()  # one side gone: so is the other

    async def _answers(self, link: _Link, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if not (self.dropping or link.losing):
                    writer.write(chunk)
                    await writer.drain()
        writer.close()
