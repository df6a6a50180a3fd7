"""Log lines rate-limited per kind, so that no client can flood the log.

A kind is one logger, level and message template (``record.msg`` before its
arguments are filled in): every "refused" line of one sort, say, whoever
caused it. :class:`RateLimitFilter` lets :data:`BURST` records of a kind
through per :data:`INTERVAL` seconds and drops the rest; the first record of
the kind after a window that dropped some is preceded by one line
``N similar messages suppressed``, so nothing is dropped unannounced.

``server.py`` installs it on its log handlers (:func:`limit`), which covers
every logger: the server's, Tornado's, asyncio's. A host application that
embeds the server may do the same on its own handlers.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Hashable, Iterable

#: Records of one kind let through per window, and the window's length in seconds.
BURST = 10
INTERVAL = 10.0
#: Kinds remembered at most; past it, windows that are over are forgotten.
MAX_KINDS = 1024
#: Loggers never limited: an access log is one line per request by contract, and
#: each of its lines cost the client a whole request; the admin console's audit
#: lines are each an action of someone holding the admin password.
UNLIMITED = frozenset({"tornado.access", "tornado_push.admin.audit"})


class _Window:
    __slots__ = ("start", "passed", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.passed = 0
        self.suppressed = 0


class RateLimitFilter(logging.Filter):
    """Passes at most ``burst`` records of a kind per ``interval`` seconds to ``target``
    (the handler or logger it is installed on, where the summary lines go)."""

    def __init__(self, target: logging.Handler | logging.Logger, burst: int = BURST,
                 interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.target = target
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._windows: dict[Hashable, _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in UNLIMITED:
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg)
        key = (record.name, record.levelno, template)
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            if window is not None and window.suppressed:
                self._summarize(record, window.suppressed)
            window = self._open(key, now)
        if window.passed < self.burst:
            window.passed += 1
            return True
        window.suppressed += 1
        return False

    def _open(self, key: Hashable, now: float) -> _Window:
        if len(self._windows) >= MAX_KINDS:
            self._windows = {k: w for k, w in self._windows.items()
                             if now - w.start < self.interval}
            if len(self._windows) >= MAX_KINDS:
                self._windows.clear()  # a flood of distinct kinds: start over, still bounded
        window = self._windows[key] = _Window(now)
        return window

    def _summarize(self, record: logging.LogRecord, suppressed: int) -> None:
        """One line for what the last window dropped of ``record``'s kind."""
        summary = logging.LogRecord(
            record.name, record.levelno, record.pathname, record.lineno,
            "%d similar messages suppressed (more than %d in %g s): %s",
            (suppressed, self.burst, self.interval, str(record.msg)[:200]), None)
        self.target.handle(summary)


def limit(targets: Iterable[logging.Handler | logging.Logger], burst: int = BURST,
          interval: float = INTERVAL) -> None:
    """Install a :class:`RateLimitFilter` on each handler or logger in ``targets``.

    On a handler it limits every record the handler emits; on a logger, only
    the records made on that logger (not its children's).
    """
    for target in targets:
        target.addFilter(RateLimitFilter(target, burst, interval))
