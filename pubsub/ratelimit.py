"""Token buckets for per-connection rate limits, and a throttle for repeated log records."""

from __future__ import annotations

import logging
import time
from typing import Callable


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of ``burst``.

    Time is passed in rather than read, so one clock reading serves many checks.
    """

    __slots__ = ("rate", "burst", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; return whether the event is allowed."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class LogThrottle:
    """Logs at most one record per kind every ``interval`` seconds, so that nothing a client
    does repeatedly can flood the log; the next record of a kind says how many were left out.

    Kinds are few and fixed (an exception's type, say): one time and one count is kept per kind.
    """

    __slots__ = ("_logger", "_interval", "_clock", "_logged_at", "_left_out")

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._logged_at: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def error(self, kind: str, message: str, *args: object,
              exc_info: BaseException | None = None) -> None:
        """Log ``message % args`` at ERROR (with ``exc_info``'s traceback), unless a record
        of ``kind`` was logged less than ``interval`` seconds ago."""
        now = self._clock()
        logged_at = self._logged_at.get(kind)
        if logged_at is not None and now - logged_at < self._interval:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._logged_at[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += f" ({left_out} more since the last such record)"
        self._logger.error(message, *args, exc_info=exc_info)
