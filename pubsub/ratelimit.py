"""Token buckets for per-connection rate limits."""

from __future__ import annotations


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
