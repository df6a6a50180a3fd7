"""History channels on this process: offsets delivered in order, and resumes.

Every publication on a history channel gets its offset once, at the process
where it was published (:meth:`Hub.trigger`, :meth:`Hub.relay`), and carries
it through the broker. Over Redis, publications from several origins may
reach a process out of offset order, and pub/sub drops what is sent while a
subscriber reconnects. So each local history channel has a
:class:`ChannelStream` that delivers strictly in offset order, without gaps:
a publication ahead of the next offset waits up to :data:`HOLD` seconds for
the ones before it, which are then read from the store. What the store no
longer has (trimmed, expired, or a changed epoch) is announced with
``pusher_internal:continuity_lost``, never skipped silently.

A session joining a history channel is a :class:`Joiner` until it is live:
it holds the stream's frames from the position it joined at, while
:func:`replay` sends what a resuming client missed from the store; the held
frames follow, without the ones already sent. docs/history.md specifies the
wire side.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import protocol
from .broker import Publication
from .errors import BrokerUnavailable, ErrorCode, MessageRejected
from .history import Entry, HistoryStore, Page, Retention

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

#: Seconds a publication ahead of the next offset waits for those before it, before
#: the store is read for them; and the interval of further reads while it lacks them.
HOLD = 0.1
#: Seconds a gap may stay open while the store lacks its offsets (not yet visible
#: there, or the store unreachable); then the stream moves on and says so.
GIVE_UP = 2.0

#: ``reason`` of ``resume_failed`` and ``continuity_lost``.
EPOCH_CHANGED = "epoch_changed"
MESSAGES_LOST = "messages_lost"
UNAVAILABLE = "unavailable"
NO_HISTORY = "no_history"
ALREADY_SUBSCRIBED = "already_subscribed"


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client stands on a history channel: it has every offset up to ``offset``."""

    epoch: str
    offset: int

    @classmethod
    def parse(cls, value: Any) -> Position:
        """The ``resume`` object of a subscribe, or :class:`MessageRejected`."""
        if not isinstance(value, dict):
            raise MessageRejected("resume must be an object {\"epoch\", \"offset\"}")
        epoch, offset = value.get("epoch"), value.get("offset")
        if (not isinstance(epoch, str) or not epoch or not isinstance(offset, int)
                or isinstance(offset, bool) or offset < 0):
            raise MessageRejected("resume needs an 'epoch' string and an 'offset' of 0 or more")
        return cls(epoch, offset)

    def frame(self, event: str, channel: str, **fields: Any) -> bytes:
        """A frame whose data says this position (and ``fields``, e.g. a reason)."""
        return protocol.encode_event(event, {**fields, "epoch": self.epoch, "offset": self.offset},
                                     channel)


def publication_of(app_id: str, channel: str, epoch: str, entry: Entry) -> Publication:
    """A stored entry as a publication (its sender and exclusion were not stored)."""
    return Publication(app_id, channel, entry.event, entry.data, epoch=epoch, offset=entry.offset)


class ChannelStream:
    """One history channel's publications on this process, delivered in offset order.

    ``send`` writes a publication to the channel's local subscribers;
    ``announce`` writes a ``continuity_lost`` frame to them. ``epoch`` and
    ``last`` say what has been delivered here: every later delivery is
    ``last + 1`` of ``epoch``, or follows a ``continuity_lost``.
    """

    def __init__(self, store: HistoryStore, app_id: str, channel: str, retention: Retention,
                 send: Callable[[Publication], None], announce: Callable[[bytes], None]) -> None:
        self.store = store
        self.app_id = app_id
        self.channel = channel
        self.retention = retention
        self._send = send
        self._announce = announce
        self.epoch: str | None = None  # None until start()
        self.last = 0
        self._pending: dict[tuple[str | None, int], Publication] = {}
        self._filling: asyncio.Task[None] | None = None

    @property
    def position(self) -> Position:
        assert self.epoch is not None, "start() first"
        return Position(self.epoch, self.last)

    async def start(self) -> None:
        """Take the store's position; call once the broker delivers the channel here,
        so that every later publication either arrives or is in that position."""
        page = await self.store.position(self.app_id, self.channel, retention=self.retention)
        self.epoch, self.last = page.epoch, page.last_offset
        for key in [key for key in self._pending if key[0] == self.epoch and key[1] <= self.last]:
            del self._pending[key]  # published before that position
        self._release()

    def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()

    def receive(self, publication: Publication) -> None:
        """Deliver a publication now if it is next; hold it if it is ahead; drop a repeat."""
        assert publication.offset is not None
        if publication.epoch == self.epoch and publication.offset <= self.last:
            return  # delivered already (read from the store meanwhile)
        self._pending[(publication.epoch, publication.offset)] = publication
        self._release()

    def resync(self) -> None:
        """Read what the store has beyond ``last`` (after a broker reconnect, in which
        pub/sub may have dropped publications)."""
        if self.epoch is not None:  # else start() is about to take the store's position
            self._fill_soon(force=True)

    def _release(self) -> None:
        """Deliver the held publications that are next in order; read the store for a gap."""
        while (publication := self._pending.pop((self.epoch, self.last + 1), None)) is not None:
            self.last += 1
            self._send(publication)
        if self._pending and self.epoch is not None:
            self._fill_soon()

    def _fill_soon(self, force: bool = False) -> None:
        if self._filling is None or self._filling.done():
            self._filling = asyncio.ensure_future(self._fill(force))
            self._filling.add_done_callback(_log_failure)

    async def _fill(self, force: bool) -> None:
        """Wait for the held publications' predecessors, then read them from the store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GIVE_UP
        if not force:
            await asyncio.sleep(HOLD)
        while force or self._pending:
            force = False
            try:
                page = await self.store.read(self.app_id, self.channel, after=self.last,
                                             limit=self.retention.max_count,
                                             retention=self.retention)
            except BrokerUnavailable as outage:
                log.warning("history of %s unreadable: %s", self.channel, outage.message)
            else:
                self._apply(page)
            if self._pending and loop.time() >= deadline:
                self._skip_gap()
                deadline = loop.time() + GIVE_UP
            if self._pending:
                await asyncio.sleep(HOLD)

    def _apply(self, page: Page) -> None:
        """Deliver what a store read fills in; move on where the store says it is lost."""
        if page.epoch != self.epoch:
            # Go on from the new epoch's held publications, or from its newest offset.
            held = [offset for epoch, offset in self._pending if epoch == page.epoch]
            self._restart(page.epoch, min([page.last_offset, *(o - 1 for o in held)]),
                          EPOCH_CHANGED)
            return  # the next read fills what is missing before them
        for key in [key for key in self._pending if key[0] != page.epoch]:
            del self._pending[key]  # published in an epoch the store has lost since
        held = [offset for _, offset in self._pending]
        if self.last + 1 < page.first_offset and page.last_offset > self.last:
            # Trimmed or expired before they could be delivered here.
            self._restart(page.epoch, min([page.first_offset - 1, *(o - 1 for o in held)]),
                          MESSAGES_LOST)
        until = max(held) if held else page.last_offset  # the rest is on its way
        for entry in page.entries:
            if entry.offset <= self.last:
                continue
            if entry.offset != self.last + 1 or entry.offset > until:
                break
            self._pending.setdefault((page.epoch, entry.offset),
                                     publication_of(self.app_id, self.channel, page.epoch, entry))
            self._release()

    def _skip_gap(self) -> None:
        """Give up on offsets the store does not show: say so, go on from the next held one."""
        assert self.epoch is not None
        held = [offset for epoch, offset in self._pending if epoch == self.epoch]
        if held:
            self._restart(self.epoch, min(held) - 1, MESSAGES_LOST)
        else:
            self._pending.clear()

    def _restart(self, epoch: str, last: int, reason: str) -> None:
        """Continue from ``epoch``/``last``, telling the subscribers continuity was lost."""
        log.warning("history of %s: %s, continuing from %s/%d", self.channel, reason, epoch, last)
        self.epoch, self.last = epoch, last
        self._announce(Position(epoch, last).frame(protocol.CONTINUITY_LOST, self.channel,
                                                  reason=reason))
        for key in [key for key in self._pending if key[0] != epoch or key[1] <= last]:
            del self._pending[key]
        self._release()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("history gap filling failed", exc_info=task.exception())


class Joiner:
    """A session joining a history channel, holding the live frames until it is caught up.

    What it holds is bounded like a connection's outbound buffer (the app's
    ``max_outbound_bytes``): past it, while the store is slow and the channel
    busy, the session is closed with 4100 so that it reconnects and resumes.
    """

    __slots__ = ("session", "start", "held", "held_bytes")

    def __init__(self, session: Session, start: Position) -> None:
        self.session = session
        #: The stream's position when the session joined: live frames follow it.
        self.start = start
        self.held: list[tuple[Publication | None, bytes]] | None = []
        self.held_bytes = 0

    def hold(self, publication: Publication | None, frame: bytes) -> None:
        if self.held is None:
            return  # over its bound: closing
        self.held_bytes += len(frame)
        limit = self.session.app.max_outbound_bytes
        if limit and self.held_bytes > limit:
            self.held = None
            # Not now: the channel is iterating over its joining sessions.
            asyncio.get_running_loop().call_soon(
                self.session.close, ErrorCode.OVER_CAPACITY,
                "Too many messages while catching up: reconnect and resume")
            return
        self.held.append((publication, frame))

    def release(self, sent: Position) -> None:
        """Send the held frames, but not the offsets ``sent`` already covers nor excluded ones."""
        if self.held is None:
            return
        session = self.session
        for publication, frame in self.held:
            if publication is not None:
                if publication.exclude == session.socket_id:
                    continue
                if publication.epoch == sent.epoch and (publication.offset or 0) <= sent.offset:
                    continue
                session.counters.deliveries += 1  # held back from LocalChannel.send's count
            session.send(frame)
        self.held.clear()


async def replay(store: HistoryStore, app_id: str, channel: str, retention: Retention,
                 start: Position, resume: Position) -> tuple[Position, list[bytes], bool]:
    """The frames a client resuming from ``resume`` gets, having joined at ``start``,
    the position it is at after them, and whether the resume succeeded.

    The frames are exactly the offsets after ``resume`` up to ``start`` and then
    ``resume_succeeded``; or only ``resume_failed``: a replay is never partial. An
    entry that cannot be encoded fails it with ``messages_lost``, like a lost one.
    """

    def failed(reason: str) -> tuple[Position, list[bytes], bool]:
        return start, [start.frame(protocol.RESUME_FAILED, channel, reason=reason)], False

    if resume.epoch != start.epoch:
        return failed(EPOCH_CHANGED)
    if resume.offset - start.offset > 0:
        # The client saw more elsewhere than this process has delivered yet: its
        # next frames catch up, and the ones it has are not sent again.
        return await _ahead(store, app_id, channel, retention, resume, failed)
    missed = start.offset - resume.offset
    if missed > retention.max_count:
        return failed(MESSAGES_LOST)
    entries: tuple[Entry, ...] = ()
    if missed:
        try:
            page = await store.read(app_id, channel, after=resume.offset, before=start.offset + 1,
                                    limit=missed, retention=retention)
        except BrokerUnavailable:
            return failed(UNAVAILABLE)
        if page.epoch != start.epoch:
            return failed(EPOCH_CHANGED)
        entries = page.entries
        if [entry.offset for entry in entries] != list(range(resume.offset + 1, start.offset + 1)):
            return failed(MESSAGES_LOST)
    try:
        frames = [protocol.encode_frame(entry.event, entry.data, channel, epoch=start.epoch,
                                        offset=entry.offset) for entry in entries]
    except UnicodeEncodeError:  # an entry stored before the edge refused such text
        log.warning("history of %s holds an entry UTF-8 cannot carry: resume failed", channel)
        return failed(MESSAGES_LOST)
    return start, [*frames, start.frame(protocol.RESUME_SUCCEEDED, channel)], True


async def _ahead(store: HistoryStore, app_id: str, channel: str, retention: Retention,
                 resume: Position, failed: Callable[[str], tuple[Position, list[bytes], bool]]
                 ) -> tuple[Position, list[bytes], bool]:
    """A resume beyond the joining position: valid if the store has reached it."""
    try:
        page = await store.position(app_id, channel, retention=retention)
    except BrokerUnavailable:
        return failed(UNAVAILABLE)
    if page.epoch != resume.epoch or resume.offset > page.last_offset:
        return failed(EPOCH_CHANGED)
    return resume, [resume.frame(protocol.RESUME_SUCCEEDED, channel)], True
