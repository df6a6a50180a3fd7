"""What the hub does differently on a history channel: offsets, streams, catch-up.

The hub keeps every channel alike; on one that its app keeps history of
(:meth:`App.history_retention`), :class:`HistoryChannels` gives each
publication its offset at the origin (:meth:`~HistoryChannels.stamp`), gives
the local channel its :class:`~.streams.ChannelStream` once the broker
delivers the channel here (:meth:`~HistoryChannels.open_stream`), and makes a
joining session live once it has what it missed
(:meth:`~HistoryChannels.catch_up`). :mod:`.streams` holds the mechanics.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable

from . import protocol
from .apps import App
from .broker import Broker, Publication
from .channels import LocalChannel
from .errors import BrokerUnavailable
from .history import HistoryStore
from .streams import ChannelStream, Position, replay

if TYPE_CHECKING:
    from .session import Session


class HistoryChannels:
    """The history store as the hub's channels use it."""

    def __init__(self, store: HistoryStore, broker: Broker) -> None:
        self.store = store
        self._broker = broker

    async def stamp(self, app: App, publication: Publication) -> Publication:
        """The publication to hand to the broker: on a history channel, stored first,
        which gives it its epoch and offset; elsewhere, and for client events unless
        the app keeps them (``history_client_events``), unchanged.

        Raises :class:`BrokerUnavailable` when the broker cannot send it, so that
        nothing is stored that no subscriber can receive.
        """
        retention = app.history_retention(publication.channel)
        if retention is None or (publication.event.startswith(protocol.CLIENT_EVENT_PREFIX)
                                 and not app.history_client_events):
            return publication
        why = self._broker.unreachable(app.id, publication.channel)
        if why is not None:
            raise BrokerUnavailable(f"{why}: nothing was stored or sent")
        epoch, entry = await self.store.append(
            app.id, publication.channel, publication.event, publication.data,
            time=time.time(), retention=retention)
        return dataclasses.replace(publication, epoch=epoch, offset=entry.offset)

    async def open_stream(self, app: App, channel: LocalChannel,
                          send: Callable[[Publication], None]) -> None:
        """Give a history channel its stream, at the store's position; call once the
        broker delivers the channel here. Other channels are left as they are."""
        retention = app.history_retention(channel.name)
        if retention is None:
            return
        channel.stream = ChannelStream(self.store, app.id, channel.name, retention,
                                       send=send, announce=channel.send_frame)
        await channel.stream.start()

    async def catch_up(self, session: Session, channel: LocalChannel,
                       resume: Position | None) -> None:
        """Make a session joining ``channel`` live, after sending it what it missed
        since ``resume`` and ``resume_succeeded`` (or ``resume_failed``).

        Nothing happens if the session is not joining (it left, or the channel
        has no history); nothing is sent if it leaves while the store answers.
        """
        joiner = channel.joining.get(session.socket_id)
        if joiner is None or channel.stream is None:
            return
        sent = joiner.start
        if resume is not None:
            counters = session.counters
            counters.history_reads += 1
            sent, frames, resumed = await replay(self.store, session.app.id, channel.name,
                                                 channel.stream.retention, joiner.start, resume)
            if resumed:
                counters.resumes_succeeded += 1
                counters.history_replayed += len(frames) - 1  # the last: resume_succeeded
            else:
                counters.resumes_failed += 1
            if channel.joining.get(session.socket_id) is not joiner:
                return  # it left meanwhile
            for frame in frames:
                session.send(frame)
        channel.go_live(joiner, sent)
