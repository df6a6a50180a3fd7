"""One channel's sessions on this process, and the broadcast path: encode once, send to each."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import protocol
from .broker import Publication
from .counters import AppCounters
from .protocol import ChannelKind
from .streams import MESSAGES_LOST, ChannelStream, Joiner, Position

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)


class LocalChannel:
    """One channel's subscribers on this process.

    ``ready`` resolves once the broker delivers the channel here (and a
    history channel's stream knows its position), so that no subscriber is
    told it succeeded before it can receive. On a history channel, a session
    is in ``joining`` until it has what it missed, then in ``subscribers``.
    """

    __slots__ = ("name", "kind", "counters", "subscribers", "joining", "stream", "ready")

    def __init__(self, name: str, kind: ChannelKind, counters: AppCounters) -> None:
        self.name = name
        self.kind = kind
        #: The app's counters: deliveries and bytes sent are added once per publication.
        self.counters = counters
        self.subscribers: dict[str, Session] = {}
        self.joining: dict[str, Joiner] = {}
        self.stream: ChannelStream | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def size(self) -> int:
        """Local sessions on the channel, live or joining."""
        return len(self.subscribers) + len(self.joining)

    def add(self, session: Session) -> None:
        """A subscriber; on a history channel it joins first (see :meth:`go_live`)."""
        if self.stream is None:
            self.subscribers[session.socket_id] = session
        else:
            self.joining[session.socket_id] = Joiner(session, self.stream.position)

    def remove(self, socket_id: str) -> None:
        self.subscribers.pop(socket_id, None)
        self.joining.pop(socket_id, None)

    def send(self, publication: Publication) -> int:
        """Write one publication to the subscribers: encode once, send to each.
        Returns how many live subscribers it was written to, which it adds to the app's
        ``deliveries`` (and their bytes to ``sent_bytes``)."""
        try:
            frame = protocol.encode_frame(
                publication.event, publication.data, publication.channel, publication.user_id,
                publication.epoch, publication.offset)
        except UnicodeEncodeError:
            self._skip(publication)
            return 0
        excluded = publication.exclude
        # No copy of the subscribers: send() only queues (transports write at the
        # end of the loop iteration), so nothing here can change the dict. Counted
        # in bulk here, not per socket: see Session.deliver.
        for socket_id, session in self.subscribers.items():
            if socket_id != excluded:
                session.deliver(frame)
        for joiner in self.joining.values():
            joiner.hold(publication, frame)
        sent = len(self.subscribers) - (excluded in self.subscribers)
        counters = self.counters
        counters.deliveries += sent
        counters.sent_bytes += sent * len(frame)
        return sent

    def _skip(self, publication: Publication) -> None:
        """Drop a publication that cannot be encoded (older data in a store, from before
        :mod:`.text` refused such text at the edge); on a history channel, announce the gap
        with ``continuity_lost``, so that no subscriber waits for it."""
        log.warning("dropped an event on %s: it holds text UTF-8 cannot carry", self.name)
        if publication.epoch is not None and publication.offset is not None:
            self.send_frame(Position(publication.epoch, publication.offset).frame(
                protocol.CONTINUITY_LOST, self.name, reason=MESSAGES_LOST))

    def send_frame(self, frame: bytes) -> None:
        """Write a frame that is no publication (``continuity_lost``) to every session."""
        for session in self.subscribers.values():
            session.send(frame)
        for joiner in self.joining.values():
            joiner.hold(None, frame)

    def go_live(self, joiner: Joiner, sent: Position) -> None:
        """A joining session has what it missed up to ``sent``: it gets the held
        frames after that, then every publication as it comes."""
        socket_id = joiner.session.socket_id
        del self.joining[socket_id]
        self.subscribers[socket_id] = joiner.session
        joiner.release(sent)
