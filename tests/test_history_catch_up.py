"""A session catching up on a history channel holds live frames, and that hold is bounded."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import MAIN, SMALL_BUFFER
from history_client import HistoryClient, numbers
from tornado_push.pubsub.errors import ErrorCode
from tornado_push.pubsub.history import HistoryStore, MemoryHistoryStore, Page

CHANNEL = "history-busy"


class GatedStore(MemoryHistoryStore):
    """A memory store whose reads wait for ``opened`` once ``gate`` is set: a slow store."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def read(self, *args, **kwargs) -> Page:
        if self.gate is not None:
            await self.gate.wait()
        return await super().read(*args, **kwargs)


@pytest.fixture
def history_store() -> HistoryStore:
    return GatedStore()


async def publish_to(live: HistoryClient, hub, count: int, size: int) -> list[int]:
    """Publish ``count`` messages, each once ``live`` has the one before; what it got."""
    got = []
    for n in range(count):
        await hub.trigger(live.app, [CHANNEL], "message", json.dumps({"n": n, "pad": "x" * size}))
        got += numbers(await live.events(CHANNEL, 1))
    return got


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("tenant", [SMALL_BUFFER, MAIN], ids=["bounded", "under-the-bound"])
async def test_live_frames_held_while_the_store_is_slow_are_bounded(server_port, hub,
                                                                    history_store, tenant):
    live = await HistoryClient.open(server_port, tenant)
    start = (await live.subscribe(CHANNEL)).succeeded
    assert await publish_to(live, hub, 1, 10) == [0]  # what the joining client missed
    joining = await HistoryClient.open(server_port, tenant)
    joining.positions[CHANNEL] = (start["epoch"], start["offset"])
    history_store.gate = asyncio.Event()  # the joining client's replay waits
    await joining.socket.send({"event": "pusher:subscribe", "data": {
        "channel": CHANNEL, "resume": {"epoch": start["epoch"], "offset": start["offset"]}}})
    await joining.socket.expect("pusher_internal:subscription_succeeded")

    # 40 more of ~9 KB: over SMALL_BUFFER's 256 KiB, under MAIN's 1 MiB.
    assert await publish_to(live, hub, 40, 9000) == list(range(40))  # the others: unaffected
    if tenant is SMALL_BUFFER:
        assert await joining.socket.closed() == ErrorCode.OVER_CAPACITY
    else:
        history_store.gate.set()
        assert numbers(await joining.events(CHANNEL, 1)) == [0]  # replayed
        await joining.socket.expect("pusher_internal:resume_succeeded")
        assert numbers(await joining.events(CHANNEL, 40)) == list(range(40))  # then held ones
