"""StateWrites: the cluster-state writes a process owes for its connections, paced and retried.

When thousands of connections close at once (a network blip, a drain, a load
balancer restart), each owes the cluster state its leaves and its sign-out. Sent
all at once they queue in the Redis client's pool past the command deadline and
fail, and the cluster would count those connections, and show their presence
members, until the process exits. The same holds for re-registering every
connection after Redis lost its data. So these writes go through one
:class:`StateWrites`: a bounded number run at a time, and one that Redis did not
answer is run again after a backoff, which is safe because each is idempotent
(the state's scripts check before they change anything). A write is told when it
runs again: Redis may have carried out an earlier attempt whose answer never came,
and the write must then report what that attempt would have (the state reads it
from the keys as they are now), or a ``channel_vacated`` webhook or an "offline"
watchlist event would be lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable, TypeVar

from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Writes in flight at once: well below the Redis client's pool, which other work shares.
AT_ONCE = 16
#: Seconds before a write Redis did not answer is tried again, doubled each time up to
#: the second figure (with jitter, so that a crowd of them does not return together).
RETRY = (0.5, 8.0)


class StateWrites:
    """Runs idempotent cluster-state writes :data:`AT_ONCE` at a time, each until Redis
    answers it.

    After :meth:`close` nothing is retried: a write that finds Redis unreachable then
    raises, and those still waiting give up at once without trying (the process is
    leaving, and its node's leftovers are reaped by the others when it cannot
    deregister).
    """

    def __init__(self, at_once: int = AT_ONCE, retry: tuple[float, float] = RETRY) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._retry = retry
        self._closing = asyncio.Event()
        self._unreachable_at_close: BrokerUnavailable | None = None

    def close(self) -> None:
        """Stop retrying; backoffs under way end now."""
        self._closing.set()

    async def run(self, write: Callable[[bool], Awaitable[T]]) -> T:
        """``await write(again)`` until it does not raise :class:`BrokerUnavailable`; its
        result. ``again`` is False on the first attempt and True on the later ones.

        Raises :class:`BrokerUnavailable` only once closed."""
        delay = self._retry[0]
        again = False
        while True:
            async with self._slots:
                if self._unreachable_at_close is not None:
                    raise self._unreachable_at_close
                try:
                    return await write(again)
                except BrokerUnavailable as error:
                    if self._closing.is_set():
                        self._unreachable_at_close = error
                        raise
                    # One line per write at most; server.py's log rate limit keeps a
                    # crowd of them to a few lines and a count.
                    log.warning("a cluster-state write failed (%s): retrying in about %g s",
                                error.message, delay)
            await self._back_off(delay)
            again = True
            delay = min(2 * delay, self._retry[1])

    async def _back_off(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), delay * random.uniform(0.5, 1.5))
        except asyncio.TimeoutError:
            pass
