"""The history store interface: each channel's recent publications, numbered.

Every publication on a channel gets the next offset (1, 2, 3...) once, at the
process where it was published, and is kept while the app's
:class:`Retention` allows. A client that knows its channel's epoch and last
offset can resume exactly where it left off; a changed epoch tells it that
the history it knew was lost (a restarted memory store, a flushed Redis, a
deleted Mongo counter) and the offsets started again at 1.

A channel gets its epoch on its first append or read, whichever comes first,
so every page carries a real epoch to resume against.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

from ..errors import HistoryUnavailable

#: Seconds a channel's epoch and last offset outlive its entries' retention
#: (Redis and memory; a Mongo counter is kept as long as the database), so a
#: client that was away for a while still resumes, or learns nothing was missed.
POSITION_KEPT_FOR = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history an app keeps per channel."""

    max_count: int = 100  # entries kept per channel
    max_age: float = 3600.0  # seconds an entry is kept


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored publication."""

    offset: int  # 1, 2, 3... per channel, assigned once at the origin
    event: str
    data: str
    time: float  # unix seconds at the origin


@dataclass(frozen=True, slots=True)
class Page:
    """Part of a channel's history, with where the whole of it stands."""

    epoch: str  # changes whenever the channel's history is lost
    entries: tuple[Entry, ...]  # ascending offsets
    last_offset: int  # the channel's newest offset (0: none yet)
    first_offset: int  # the oldest offset still retained (last_offset + 1 when none)


class HistoryStore(ABC):
    """Where history lives; one per process, shared by every app."""

    async def start(self) -> None:
        """Connect and prepare (indexes...); called once before any other method.

        Every method raises :class:`~pubsub.errors.HistoryUnavailable` when
        the backend cannot be reached.
        """

    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def append(self, app_id: str, channel: str, event: str, data: str, *,
                     time: float, retention: Retention) -> tuple[str, Entry]:
        """Store a publication under the channel's next offset; (epoch, entry).

        The offset is assigned atomically (concurrent appends from any
        process get distinct, consecutive offsets); entries beyond
        ``retention`` are trimmed.
        """

    @abstractmethod
    async def read(self, app_id: str, channel: str, *, after: int | None = None,
                   before: int | None = None, limit: int = 100,
                   retention: Retention) -> Page:
        """Retained entries with ``after < offset < before``, ascending.

        With ``after``, the ``limit`` entries nearest to it (the oldest of the
        range, to resume from); without, the newest ``limit``. Entries older
        than ``retention.max_age`` are never returned. In Mongo an append
        in flight may already count in ``last_offset`` before its entry shows.
        """

    async def position(self, app_id: str, channel: str, *, retention: Retention) -> Page:
        """The channel's epoch, last and first offsets; no entries."""
        return await self.read(app_id, channel, limit=0, retention=retention)


@contextlib.contextmanager
def reachable(backend: str, errors: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Turn a backend's connection ``errors`` into :class:`HistoryUnavailable`."""
    try:
        yield
    except errors as error:
        detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise HistoryUnavailable(f"{backend} is unreachable: {detail}") from error

