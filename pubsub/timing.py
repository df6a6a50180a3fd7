"""Histograms kept as plain numbers, and the timing of each publication through this process.

A Prometheus ``Histogram`` takes a lock and a method call or two per
observation. On the broadcast path and the HTTP front that is a cost paid per
publication or request whether anyone scrapes or not, so these paths count
into :class:`Buckets` instead (a bisect and two additions, the event loop's
one thread being the only writer) and :mod:`.metrics` reads them at scrape
time.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from typing import Callable, Sequence

#: Seconds: from 100 µs (a fan-out to a few sockets) to 10 s (a stalled Redis).
LATENCY_BUCKETS: tuple[float, ...] = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05,
                                      .1, .25, .5, 1, 2.5, 5, 10)


class Buckets:
    """One histogram's counts: ``counts[i]`` observations fell at or under ``bounds[i]`` and
    over the bound before (the last, over every bound); ``sum`` is their total."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


class PublishTimer:
    """Times each publication on this process, from its origin's acceptance (``origin_time``).

    * ``broker_lag``: from acceptance to :meth:`received` (the broker handed it here);
    * ``fanout``: the seconds of one publication's local send loop (:meth:`fanned_out`);
    * ``latency``: from acceptance to the end of the loop iteration that queued it to its
      sockets. Transports write what they queued in a ``call_soon`` callback scheduled by
      the first frame of the iteration (``handlers/outbound.py``'s Flusher); the callback
      :meth:`fanned_out` schedules comes after it (callbacks run in order), so it runs
      once the last socket write of those publications is done. One callback per
      iteration, whatever the number of publications.

    Clock skew between processes can make a difference negative: it is counted as 0.
    """

    __slots__ = ("broker_lag", "fanout", "latency", "_pending", "_clock")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.broker_lag = Buckets()
        self.fanout = Buckets()
        self.latency = Buckets()
        #: Origin times of the publications fanned out this iteration (None: nothing pending).
        self._pending: list[float] | None = None
        self._clock = clock

    def received(self, origin_time: float) -> None:
        """A publication accepted at ``origin_time`` came from the broker."""
        self.broker_lag.observe(max(0.0, self._clock() - origin_time))

    def fanned_out(self, origin_time: float | None, seconds: float) -> None:
        """A publication was queued to its local subscribers in ``seconds``."""
        self.fanout.observe(seconds)
        if origin_time is None:
            return
        if self._pending is None:
            self._pending = [origin_time]
            asyncio.get_running_loop().call_soon(self._written)
        else:
            self._pending.append(origin_time)

    def _written(self) -> None:
        pending, self._pending = self._pending, None
        now = self._clock()
        for origin_time in pending or ():
            self.latency.observe(max(0.0, now - origin_time))
