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

#: One publication in this many has its fan-out timed: two clock reads per publication
#: were a measurable part of a small fan-out's cost (bench/metrics_overhead.py).
FANOUT_SAMPLE = 8
#: Broker lags measured but not yet in the buckets, at most (see PublishTimer.received).
MAX_PENDING = 1024
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

    def observe_all(self, values: list[float]) -> None:
        """Observe each of ``values``, negative ones as 0 (clocks of different machines).

        Sorted once, then counted a bucket at a time (a C bisect each) up to the
        largest value: most batches end within the first few buckets, so this costs
        far less than a bisect per value (bench/metrics_overhead.py)."""
        if not values:
            return
        values = sorted(values)
        counts, taken, size = self.counts, 0, len(values)
        positive = bisect_right(values, 0.0)
        self.sum += sum(values[positive:])
        for index, bound in enumerate(self.bounds):
            below = bisect_right(values, bound, taken)
            counts[index] += below - taken
            taken = below
            if taken == size:
                return
        counts[-1] += size - taken

    @property
    def count(self) -> int:
        return sum(self.counts)


class PublishTimer:
    """Times each publication on this process, from its origin's acceptance (``origin_time``).

    * ``broker_lag``: from acceptance to :meth:`received` (the broker handed it here);
    * ``fanout``: the seconds of one publication's local send loop (:meth:`fan_out`), for
      one publication in :data:`FANOUT_SAMPLE`;
    * ``latency``: from acceptance to the end of the loop iteration that queued it to its
      sockets. Transports write what they queued in a ``call_soon`` callback scheduled by
      the first frame of the iteration (``handlers/outbound.py``'s Flusher); the callback
      this timer schedules after the iteration's first fan-out comes after it (callbacks
      run in order), so it runs once the last socket write of those publications is done.

    Only :meth:`fan_out` schedules that callback: scheduled at :meth:`received`, before
    the fan-out queued the iteration's first frame, it would run before the flush. The
    broadcast path only appends numbers to lists, and the callback sorts them into the
    buckets. Clock skew between processes can make a difference negative: it is
    counted as 0.
    """

    __slots__ = ("broker_lag", "fanout", "latency", "_lags", "_fanouts", "_origins",
                 "_scheduled", "_countdown", "_clock")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.broker_lag = Buckets()
        self.fanout = Buckets()
        self.latency = Buckets()
        #: Broker lags measured since the buckets last took them (see :meth:`received`).
        self._lags: list[float] = []
        #: This iteration's fan-out seconds and fanned-out origin times.
        self._fanouts: list[float] = []
        self._origins: list[float] = []
        self._scheduled = False
        #: Publications until the next one whose fan-out is timed.
        self._countdown = 1
        self._clock = clock

    def received(self, origin_time: float) -> None:
        """A publication accepted at ``origin_time`` came from the broker.

        Its lag is measured now and sorted into the buckets with the iteration's
        latencies (or at a scrape, :meth:`settle`): one clock read and one append
        here. A process that only holds what it receives (history streams waiting
        for a gap) sorts them once :data:`MAX_PENDING` wait."""
        lags = self._lags
        lags.append(self._clock() - origin_time)
        if len(lags) >= MAX_PENDING:
            self.settle()

    def settle(self) -> None:
        """Sort the lags measured so far into :attr:`broker_lag` (a scrape calls it first)."""
        lags, self._lags = self._lags, []
        self.broker_lag.observe_all(lags)

    def fan_out(self, channel: LocalChannel, publication: Publication) -> None:
        """``channel.send(publication)`` to the local subscribers, timed."""
        self._countdown -= 1
        if self._countdown:
            channel.send(publication)
        else:
            self._countdown = FANOUT_SAMPLE
            started = time.perf_counter()
            channel.send(publication)
            self._fanouts.append(time.perf_counter() - started)
        if publication.origin_time is not None:
            self._origins.append(publication.origin_time)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._written)

    def _written(self) -> None:
        now = self._clock()
        fanouts, origins = self._fanouts, self._origins
        self._fanouts, self._origins = [], []
        self._scheduled = False
        self.settle()
        self.fanout.observe_all(fanouts)
        self.latency.observe_all([now - origin for origin in origins])
