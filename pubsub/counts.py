"""Throttled announcements of channel subscription counts.

As on the hosted service, a channel of up to ``small`` subscribers announces
every change at once, and a larger one at most once per ``interval``. Here
the last change in a throttled window is always announced when the window
ends, so the final count is never lost.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from .apps import App

Announce = Callable[[App, str], None]


class SubscriptionCountThrottle:
    """Decides when a channel's changed subscription count is announced."""

    def __init__(self, announce: Announce, clock: Callable[[], float], *,
                 small: int = 100, interval: float = 5.0) -> None:
        self._announce = announce
        self._clock = clock
        self.small = small
        self.interval = interval
        self._last_sent: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], asyncio.TimerHandle] = {}

    def changed(self, app: App, channel: str, count: int) -> None:
        """The channel now has ``count`` subscribers; announce now or when the window ends."""
        key = (app.id, channel)
        if key in self._pending:
            return  # the trailing announcement will read the count then
        now = self._clock()
        wait = self._last_sent.get(key, float("-inf")) + self.interval - now
        if count <= self.small or wait <= 0:
            self._send(app, channel)
        else:
            self._pending[key] = asyncio.get_running_loop().call_later(
                wait, self._send, app, channel)
        if count == 0 and key not in self._pending:
            self._last_sent.pop(key, None)  # an empty channel keeps no state

    def _send(self, app: App, channel: str) -> None:
        key = (app.id, channel)
        self._pending.pop(key, None)
        self._last_sent[key] = self._clock()
        self._announce(app, channel)

    def close(self) -> None:
        for timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
