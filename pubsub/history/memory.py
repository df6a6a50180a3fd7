"""History in this process's memory: the embedded default, lost on restart.

Each channel keeps a deque of its retained entries, trimmed by count and age
whenever the channel is used. A sweep, at most once a minute, trims every
channel and forgets those idle past their retention and
:data:`~.base.POSITION_KEPT_FOR`, so memory stays bounded however many
channels come and go.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .base import POSITION_KEPT_FOR, Entry, HistoryStore, Page, Retention

#: Seconds between sweeps over every channel.
SWEEP_INTERVAL = 60.0


@dataclass(eq=False)
class _Channel:
    epoch: str
    last: int = 0
    entries: deque[Entry] = field(default_factory=deque)
    #: The retention it was last used with, and when it may be forgotten (clock time).
    retention: Retention = Retention()
    forget_at: float = 0.0

    def touch(self, now: float, retention: Retention) -> None:
        self.retention = retention
        self.forget_at = max(self.forget_at, now + retention.max_age + POSITION_KEPT_FOR)

    def trim(self, now: float) -> None:
        """Drop the entries beyond the retention: the oldest first."""
        while len(self.entries) > self.retention.max_count:
            self.entries.popleft()
        while self.entries and self.entries[0].time < now - self.retention.max_age:
            self.entries.popleft()


class MemoryHistoryStore(HistoryStore):
    """One process's history; ``clock`` (unix seconds) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._next_sweep = clock() + SWEEP_INTERVAL

    async def append(self, app_id: str, channel: str, event: str, data: str, *,
                     time: float, retention: Retention) -> tuple[str, Entry]:
        state = self._channel(app_id, channel, retention)
        state.last += 1
        entry = Entry(state.last, event, data, time)
        state.entries.append(entry)
        state.trim(self._clock())
        return state.epoch, entry

    async def read(self, app_id: str, channel: str, *, after: int | None = None,
                   before: int | None = None, limit: int = 100,
                   retention: Retention) -> Page:
        state = self._channel(app_id, channel, retention)
        state.trim(self._clock())
        first = state.entries[0].offset if state.entries else state.last + 1
        low = after if after is not None else 0
        high = before if before is not None else state.last + 1
        chosen = [entry for entry in state.entries if low < entry.offset < high]
        chosen = chosen[:limit] if after is not None else chosen[max(len(chosen) - limit, 0):]
        return Page(state.epoch, tuple(chosen), state.last, first)

    def _channel(self, app_id: str, channel: str, retention: Retention) -> _Channel:
        """The channel's state, made with a new epoch if it has none; sweeps when due."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        state = self._channels.get((app_id, channel))
        if state is None:
            state = self._channels[(app_id, channel)] = _Channel(secrets.token_hex(8))
        state.touch(now, retention)
        return state

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        for key, state in list(self._channels.items()):
            state.trim(now)
            if not state.entries and now >= state.forget_at:
                del self._channels[key]
