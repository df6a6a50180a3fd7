"""Cache channels: the last event of each channel, kept for a TTL."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class CachedEvent(NamedTuple):
    event: str
    data: str
    expires_at: float


class MemoryCache:
    """Last event per (app, channel), oldest write first so expiry is cheap."""

    def __init__(self) -> None:
        self._events: OrderedDict[tuple[str, str], CachedEvent] = OrderedDict()

    def put(self, app_id: str, channel: str, event: str, data: str, ttl: float, now: float) -> None:
        key = (app_id, channel)
        self._events[key] = CachedEvent(event, data, now + ttl)
        self._events.move_to_end(key)

    def get(self, app_id: str, channel: str, now: float) -> CachedEvent | None:
        cached = self._events.get((app_id, channel))
        if cached is None or cached.expires_at <= now:
            return None
        return cached

    def expire(self, now: float) -> None:
        """Drop expired events from the oldest writes on; stops at the first live one."""
        while self._events:
            key, cached = next(iter(self._events.items()))
            if cached.expires_at > now:
                return
            del self._events[key]
