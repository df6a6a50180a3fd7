"""One subscriber connection to one Redis node, and the task that reads it.

redis-py's own reconnect-and-resubscribe is switched off for these connections
(see :func:`~pubsub.redis.client.connect_subscriber`): a link that breaks
reports it once and is replaced whole by the :class:`~pubsub.redis.subscriber.Subscriber`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, defaultdict, deque
from typing import Any, Callable

import redis.asyncio
import redis.exceptions

from .client import deadline, describe

log = logging.getLogger(__name__)

#: Receives (pub/sub name, payload) of each message, in the order Redis sent them.
OnMessage = Callable[[bytes, bytes], None]


class Link:
    """One subscriber connection to one Redis node and the task that reads it.

    Every reply arrives through the reader: messages go to ``on_message``,
    subscribe confirmations and PING answers wake whoever waits for them.
    """

    def __init__(self, client: redis.asyncio.Redis, on_message: OnMessage,
                 on_lost: Callable[[str], None]) -> None:
        self._pubsub = client.pubsub()
        self._on_message = on_message
        self._on_lost = on_lost
        self._acks: defaultdict[bytes, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._dropping: Counter[bytes] = Counter()  # unsubscribes we asked for, unconfirmed
        self._reader: asyncio.Task[None] | None = None
        self._broken = False

    async def open(self, timeout: float) -> None:
        """Connect and check that Redis answers, each within ``timeout``."""
        async with deadline(timeout, "connection"):
            await self._pubsub.connect()
        self._reader = asyncio.create_task(self._read(), name="redis-reader")
        await self.ping(timeout)

    async def add(self, names: list[str], sharded: bool, timeout: float) -> None:
        """Subscribe ``names`` and wait until Redis has confirmed each one."""
        self._check()
        loop = asyncio.get_running_loop()
        acks = [loop.create_future() for _ in names]
        for name, ack in zip(names, acks):
            self._acks[name.encode()].append(ack)
        async with deadline(timeout, "confirmation of the subscription", "subscribe"):
            if sharded:  # one SSUBSCRIBE per name: a command's channels must share a slot
                for name in names:
                    await self._pubsub.ssubscribe(name)
            else:
                await self._pubsub.subscribe(*names)
            await asyncio.gather(*acks)

    async def remove(self, names: list[str], sharded: bool) -> None:
        """Unsubscribe ``names``; the caller ignores messages already on their way."""
        self._check()
        self._dropping.update(name.encode() for name in names)
        if sharded:
            for name in names:
                await self._pubsub.sunsubscribe(name)
        else:
            await self._pubsub.unsubscribe(*names)

    async def ping(self, timeout: float) -> None:
        """PING through this very connection: it proves the whole path, reader included."""
        self._check()
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        async with deadline(timeout, "answer to PING", "ping"):
            await self._pubsub.ping()
            await pong

    def fail(self, reason: str) -> None:
        """Report this connection broken, once."""
        if not self._broken:
            self._broken = True
            self._on_lost(reason)

    def abandon(self) -> None:
        """Fail every wait on this connection now; :meth:`close` releases it."""
        self._broken = True  # given up on purpose: nothing more to report
        closed = redis.exceptions.ConnectionError("subscriber connection closed")
        for waiter in itertools.chain(self._pongs, *self._acks.values()):
            if not waiter.done():
                waiter.set_exception(closed)
                waiter.exception()  # mark it retrieved: a failed send leaves it unawaited

    async def close(self) -> None:
        self.abandon()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._pubsub.aclose()

    def _check(self) -> None:
        if self._broken:
            raise redis.exceptions.ConnectionError("subscriber connection is down")

    async def _read(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(timeout=None)
                if message is not None:
                    self._dispatch(message)
        except (redis.exceptions.RedisError, OSError) as error:
            self.fail(describe(error))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, name = message["type"], message["channel"]
        if kind in ("message", "smessage"):
            try:
                self._on_message(name, message["data"])
            except Exception:  # a bug downstream must not leave this process deaf
                log.exception("Redis: handling a message on %r failed", name)
        elif kind == "pong":
            _wake(self._pongs)
        elif kind in ("subscribe", "ssubscribe"):
            _wake(self._acks[name])
        elif kind in ("unsubscribe", "sunsubscribe"):
            if self._dropping[name]:
                self._dropping[name] -= 1
            else:  # e.g. its slot moved to another shard
                self.fail(f"Redis dropped the subscription to {name.decode()!r}")


def _wake(waiters: deque[asyncio.Future[None]]) -> None:
    """Resolve the oldest waiter: Redis answers in the order it was asked."""
    if waiters:
        waiter = waiters.popleft()
        if not waiter.done():  # its wait may have timed out
            waiter.set_result(None)
