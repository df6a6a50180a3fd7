"""Brokers carry publications to every process with subscribers on a channel.

The interface is deliberately small (publish, subscribe, unsubscribe) so that
each backend is one short module: :class:`MemoryBroker` here for one process,
a Redis broker for many.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True, slots=True)
class Publication:
    """One event on one channel, as it travels between processes."""

    app_id: str
    channel: str
    event: str
    data: str
    #: socket_id that must not receive it (the sender, or the HTTP ``socket_id``).
    exclude: str | None = None
    #: Sender of a client event on a presence channel.
    user_id: str | None = None


Deliver = Callable[[Publication], None]


class Broker(ABC):
    """Moves publications between processes; the hub delivers them locally."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def attach(self, deliver: Deliver) -> None:
        """Route every publication this broker receives to ``deliver``."""
        self._deliver = deliver

    async def start(self) -> None:
        """Connect; called once before the first publish."""

    async def close(self) -> None:
        """Disconnect and release resources."""

    @abstractmethod
    async def publish(self, publication: Publication) -> None:
        """Send to every process subscribed to the channel, this one included.

        Publications on one channel arrive in the order they were published.
        """

    @abstractmethod
    async def subscribe(self, app_id: str, channel: str) -> None:
        """Start receiving the channel: its first local subscriber joined."""

    @abstractmethod
    async def unsubscribe(self, app_id: str, channel: str) -> None:
        """Stop receiving the channel: its last local subscriber left."""


class MemoryBroker(Broker):
    """The embedded default: one process, so delivery is a direct call."""

    async def publish(self, publication: Publication) -> None:
        assert self._deliver is not None, "attach() the hub first"
        self._deliver(publication)

    async def subscribe(self, app_id: str, channel: str) -> None:
        pass

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        pass
