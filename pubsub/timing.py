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
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from .broker import Publication
    from .channels import LocalChannel

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

    def observe_since(self, now: float, starts: list[float]) -> None:
        """Observe ``now - start`` for each of ``starts``, negative ones as 0, without
        making the differences: ``now - start <= bound`` is ``start >= now - bound``,
        counted a bucket at a time on the sorted starts."""
        if not starts:
            return
        starts = sorted(starts)
        counts, size = self.counts, len(starts)
        past = bisect_right(starts, now)  # starts after now (a clock ahead): 0, not summed
        self.sum += past * now - sum(starts[:past])
        taken = 0
        for index, bound in enumerate(self.bounds):
            within = size - bisect_left(starts, now - bound)
            counts[index] += within - taken
            taken = within
            if taken == size:
                return
        counts[-1] += size - taken

    @property
    def count(self) -> int:
        return sum(self.counts)


class PublishTimer:
    """Times each publication on this process, from its origin's acceptance (``origin_time``).

    * ``broker_lag``: from acceptance to the loop iteration in which the broker handed
      it here (:meth:`received`). One clock read serves the iteration: what is handed
      over in one iteration came in one read of the broker's connection (or, in one
      process, with one request).
    * ``fanout``: the seconds of a local send loop (:meth:`fan_out`), the first of each
      loop iteration (a sample: one per iteration).
    * ``latency``: from acceptance to the end of the loop iteration that queued it to its
      sockets. Transports write what they queued in a ``call_soon`` callback scheduled by
      the first frame of the iteration (``handlers/outbound.py``'s Flusher); the callback
      this timer schedules after the iteration's first fan-out comes after it (callbacks
      run in order), so it runs once the last socket write of those publications is done.

    The broadcast path appends a number to a list per publication; each iteration's
    callbacks sort them into the buckets, a batch at a time. Clock skew between
    processes can make a difference negative: it is counted as 0.
    """

    __slots__ = ("broker_lag", "fanout", "latency", "_arrived", "_arrived_at", "_origins",
                 "_writing", "_clock")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.broker_lag = Buckets()
        self.fanout = Buckets()
        self.latency = Buckets()
        #: Origin times handed over by the broker this iteration, and when.
        self._arrived: list[float] = []
        self._arrived_at = 0.0
        #: Origin times fanned out this iteration.
        self._origins: list[float] = []
        #: Set by the iteration's first fan-out: the callback after the flush is due.
        self._writing = False
        self._clock = clock

    def received(self, origin_time: float) -> None:
        """A publication accepted at ``origin_time`` came from the broker."""
        arrived = self._arrived
        if not arrived:  # the first of this iteration
            self._arrived_at = self._clock()
            asyncio.get_running_loop().call_soon(self._count_arrivals)
        arrived.append(origin_time)

    def _count_arrivals(self) -> None:
        arrived, self._arrived = self._arrived, []
        self.broker_lag.observe_since(self._arrived_at, arrived)

    def fan_out(self, channel: LocalChannel, publication: Publication) -> None:
        """``channel.send(publication)`` to the local subscribers, timed."""
        if self._writing:
            channel.send(publication)
        else:
            self._writing = True
            started = time.perf_counter()
            channel.send(publication)
            self.fanout.observe(time.perf_counter() - started)
            # After the send: the flush its first frame scheduled runs before this.
            asyncio.get_running_loop().call_soon(self._written)
        origin = publication.origin_time
        if origin is not None:
            self._origins.append(origin)

    def _written(self) -> None:
        now = self._clock()
        origins, self._origins = self._origins, []
        self._writing = False
        self.latency.observe_since(now, origins)
