"""ChannelStream: one history channel's publications delivered here in offset order.

Publications are handed to the stream out of order, as Redis pub/sub can
deliver them from several origins, or not at all, as pub/sub drops them
during a reconnect; the store is a real MemoryHistoryStore holding them.
"""

from __future__ import annotations

import asyncio
import json
import time

from typing import Callable

import pytest

from tornado_push.pubsub.broker import Publication
from tornado_push.pubsub.history import Retention
from tornado_push.pubsub.history.memory import MemoryHistoryStore
from tornado_push.pubsub.streams import GIVE_UP, HOLD, ChannelStream

RETENTION = Retention(max_count=5, max_age=60)


class Recorder:
    """A stream over a memory store, recording what it delivers and announces."""

    def __init__(self, store: MemoryHistoryStore) -> None:
        self.store = store
        self.delivered: list[int] = []
        self.announced: list[dict] = []
        self.changed = asyncio.Event()
        self.stream = ChannelStream(store, "1", "history-room", RETENTION,
                                    send=self._send, announce=self._announce)

    def _send(self, publication: Publication) -> None:
        self.delivered.append(publication.offset)
        self.changed.set()

    def _announce(self, frame: bytes) -> None:
        self.announced.append(json.loads(json.loads(frame)["data"]))
        self.changed.set()

    async def append(self, count: int) -> list[Publication]:
        """``count`` publications appended to the store, as their origins would."""
        publications = []
        for _ in range(count):
            epoch, entry = await self.store.append("1", "history-room", "message", "{}",
                                                   time=time.time(), retention=RETENTION)
            publications.append(Publication("1", "history-room", "message", "{}",
                                            epoch=epoch, offset=entry.offset))
        return publications

    async def until(self, condition: Callable[[], bool],
                    timeout: float = HOLD + GIVE_UP + 2) -> None:
        """Wait until ``condition()`` holds, checking after each delivery or announcement."""
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def recorder(io_loop) -> Recorder:
    recorder = Recorder(MemoryHistoryStore())
    io_loop.run_sync(recorder.stream.start)
    yield recorder
    recorder.stream.close()


@pytest.mark.gen_test(timeout=10)
async def test_publications_out_of_order_are_delivered_in_offset_order(recorder):
    first, second, third = await recorder.append(3)
    for publication in (second, third, first, second):
        recorder.stream.receive(publication)
    assert recorder.delivered == [1, 2, 3] and recorder.announced == []


@pytest.mark.gen_test(timeout=10)
async def test_a_publication_that_never_arrives_is_read_from_the_store(recorder):
    _, second, third = await recorder.append(3)
    recorder.stream.receive(third)
    recorder.stream.receive(second)
    assert recorder.delivered == []  # held for the first
    await recorder.until(lambda: len(recorder.delivered) == 3)
    assert recorder.delivered == [1, 2, 3] and recorder.announced == []


@pytest.mark.gen_test(timeout=10)
async def test_publications_the_store_no_longer_has_are_announced_as_lost(recorder):
    publications = await recorder.append(9)  # the store keeps 5..9
    recorder.stream.receive(publications[-1])
    await recorder.until(lambda: 9 in recorder.delivered)
    assert recorder.announced[0]["reason"] == "messages_lost"
    assert recorder.announced[0]["offset"] == 4
    assert recorder.delivered == [5, 6, 7, 8, 9]


@pytest.mark.gen_test(timeout=10)
async def test_a_resync_delivers_what_pubsub_dropped(recorder):
    await recorder.append(2)  # published while this process was cut off
    recorder.stream.resync()
    await recorder.until(lambda: len(recorder.delivered) == 2)
    assert recorder.delivered == [1, 2]
