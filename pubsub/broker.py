"""Brokers carry publications to every process with subscribers on a channel.

The interface is deliberately small (publish, subscribe, unsubscribe) so that
each backend is one short module: :class:`MemoryBroker` here for one process,
a Redis broker for many.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable


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
    #: On a history channel: the channel's history epoch and this publication's offset
    #: there, assigned once at the origin (see docs/history.md).
    epoch: str | None = None
    offset: int | None = None
    #: Wall-clock seconds (``time.time()``) when the origin process accepted it (the hub's
    #: trigger or relay, once the request or client frame was read and checked), so that
    #: every process can time its delivery; None for events the server makes (presence).
    origin_time: float | None = None


Deliver = Callable[[Publication], None]
#: Receives a control message (a JSON-able dict) that every process gets.
Control = Callable[[dict[str, Any]], None]


class Broker(ABC):
    """Moves publications between processes; the hub delivers them locally.

    Besides channel traffic, a broker carries rare control messages to every
    process (terminate a user's connections, a watched user came online).
    Methods that must reach other processes raise
    :class:`~pubsub.errors.BrokerUnavailable` when they cannot.
    """

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._control: Control | None = None

    def attach(self, deliver: Deliver, control: Control) -> None:
        """Route publications to ``deliver`` and control messages to ``control``."""
        self._deliver = deliver
        self._control = control

    @property
    def connected(self) -> bool:
        """Whether publications on every channel can be sent now (see :meth:`unreachable`)."""
        return True

    def unreachable(self, app_id: str, channel: str) -> str | None:
        """Why a publication on ``channel`` cannot be sent now, or None if it may be:
        a broker over several nodes (Redis Cluster) may lose one and keep the others."""
        return None

    def status(self) -> dict[str, Any]:
        """What ``/health`` reports of the broker."""
        return {"kind": "memory", "connected": True, "reconnects": 0}

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
    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send a control message to every process, this one included."""

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

    async def broadcast(self, message: dict[str, Any]) -> None:
        assert self._control is not None, "attach() the hub first"
        self._control(message)

    async def subscribe(self, app_id: str, channel: str) -> None:
        pass

    async def unsubscribe(self, app_id: str, channel: str) -> None:
        pass
