"""The admin console's debug console: what happens to one app, live, across processes.

Two halves, both on every process:

- :class:`DebugFeeds` is the watching side. A browser watching an app (through
  the admin console's feed) is a :class:`DebugWatcher` on the process it is
  connected to. While an app has watchers, that process broadcasts a
  ``debug_watch`` control message ("app A watched by node N for 10 s, with
  these filters") every :data:`ANNOUNCE_INTERVAL` seconds, and one lasting 0 s
  when its last watcher leaves.
- :class:`DebugTap` is the observing side, an :class:`~pubsub.observe.Observer`.
  Each of its methods first looks the app up in a dict of watched apps: an
  app nobody watches costs that one lookup, nothing more. For a watched app
  it copies a small record (payloads cut to :data:`PREVIEW_CHARS`), keeps at
  most :data:`RATE_CAP` a second per app (the first ones of each second; the
  rest are counted as skipped), and every :data:`FLUSH_DELAY` seconds sends
  what it kept as one ``debug_events`` control message per watching node,
  with the count skipped meanwhile. The broadcast path (one publication to
  many sockets) is never touched: publications are told once, where they
  are accepted.

Announcements expire on their own, so a watcher whose process died stops
costing anything within :data:`WATCH_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from .errors import BrokerUnavailable
from .observe import Observer

if TYPE_CHECKING:
    from .apps import App
    from .broker import Publication
    from .hub import Hub
    from .session import Session

log = logging.getLogger(__name__)

WATCH = "debug_watch"
EVENTS = "debug_events"
#: Events a process sends a second for one watched app; beyond, they are counted, not sent.
RATE_CAP = 50
#: Characters of an event's data shown; the rest is cut.
PREVIEW_CHARS = 200
#: Seconds one announcement lasts, and seconds between two of them.
WATCH_SECONDS = 10.0
ANNOUNCE_INTERVAL = 3.0
#: Seconds events wait on their process to go out together, in one control message.
FLUSH_DELAY = 0.1
#: Filters one watching node may give per app (one per watcher, deduplicated).
MAX_FILTERS = 32
#: The longest channel or event name a filter may give.
MAX_FILTER_CHARS = 200


@dataclass(frozen=True, slots=True)
class DebugFilter:
    """Which events a watcher wants: all when both are None, else those whose channel
    (and event name) are these. Events without a channel (connections, webhooks)
    pass only a filter that names none."""

    channel: str | None = None
    event: str | None = None

    def matches(self, item: dict[str, Any]) -> bool:
        return ((self.channel is None or item.get("channel") == self.channel)
                and (self.event is None or item.get("event") == self.event))

    def to_json(self) -> dict[str, str]:
        return {name: value for name, value in (("channel", self.channel), ("event", self.event))
                if value is not None}

    @classmethod
    def from_json(cls, value: Any) -> DebugFilter | None:
        """The filter a ``debug_watch`` message carries, or None when it is malformed."""
        if not isinstance(value, dict):
            return None
        fields = {name: value.get(name) for name in ("channel", "event")}
        if not all(f is None or (isinstance(f, str) and len(f) <= MAX_FILTER_CHARS)
                   for f in fields.values()):
            return None
        return cls(**fields)


def preview(data: str) -> str:
    """``data`` cut to :data:`PREVIEW_CHARS` characters, with an ellipsis when cut."""
    return data if len(data) <= PREVIEW_CHARS else data[:PREVIEW_CHARS] + "…"


def shown_url(url: str) -> str:
    """A webhook URL without credentials or query, which may carry secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class _AppWatch:
    """What one process knows of the nodes watching one app, and its sending budget."""

    __slots__ = ("nodes", "second", "sent", "skipped", "pending")

    def __init__(self) -> None:
        #: Watching node → when its announcement expires, and its filters.
        self.nodes: dict[int, tuple[float, tuple[DebugFilter, ...]]] = {}
        self.second = 0  # the current one-second window, and events kept in it
        self.sent = 0
        self.skipped = 0  # since the last flush
        self.pending: dict[int, list[dict[str, Any]]] = {}  # node → events to send


class DebugTap(Observer):
    """Copies a watched app's events to the nodes watching it; nothing for other apps."""

    def __init__(self, hub: Hub, *, rate_cap: int = RATE_CAP,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._hub = hub
        self._rate_cap = rate_cap
        self._clock = clock
        self._watched: dict[str, _AppWatch] = {}
        self._flush_scheduled = False
        hub.control.register(WATCH, self._on_watch)
        hub.observers.add(self)

    def watched(self, app_id: str) -> bool:
        """Whether some node watches the app now (its announcement has not expired)."""
        watch = self._watched.get(app_id)
        return watch is not None and bool(self._live_nodes(app_id, watch, self._clock()))

    def _on_watch(self, message: dict[str, Any]) -> None:
        app_id, node, seconds = message.get("app"), message.get("node"), message.get("for")
        filters = [DebugFilter.from_json(f) for f in message.get("filters") or ()][:MAX_FILTERS]
        if (not isinstance(app_id, str) or self._hub.apps.by_id(app_id) is None
                or not isinstance(node, int) or not isinstance(seconds, (int, float))
                or not filters or None in filters):
            log.warning("ignoring control message %r", message)
            return
        watch = self._watched.setdefault(app_id, _AppWatch())
        if seconds > 0:
            watch.nodes[node] = (self._clock() + min(seconds, 2 * WATCH_SECONDS), tuple(filters))
        else:
            watch.nodes.pop(node, None)
            self._live_nodes(app_id, watch, self._clock())

    def _live_nodes(self, app_id: str, watch: _AppWatch,
                    now: float) -> dict[int, tuple[float, tuple[DebugFilter, ...]]]:
        """The nodes whose announcement holds; an app left unwatched is forgotten."""
        for node in [n for n, (expires, _) in watch.nodes.items() if expires <= now]:
            del watch.nodes[node]
        if not watch.nodes and not watch.pending and not watch.skipped:
            self._watched.pop(app_id, None)
        return watch.nodes

    def _tell(self, app_id: str, item: dict[str, Any]) -> None:
        """Queue ``item`` for the nodes whose filters it passes, within the rate cap."""
        watch = self._watched[app_id]
        now = self._clock()
        second = int(now)
        if second != watch.second:  # a new window; expired announcements go once a second
            watch.second, watch.sent = second, 0
            if not self._live_nodes(app_id, watch, now):
                return
        nodes = [node for node, (expires, filters) in watch.nodes.items()
                 if expires > now and any(f.matches(item) for f in filters)]
        if not nodes:
            return
        if watch.sent >= self._rate_cap:
            watch.skipped += 1
        else:
            watch.sent += 1
            item["time"] = time.time()
            item["node"] = self._hub.node_id
            for node in nodes:
                watch.pending.setdefault(node, []).append(item)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        messages = []
        for app_id, watch in list(self._watched.items()):
            targets = set(watch.pending) | (set(watch.nodes) if watch.skipped else set())
            for node in targets:
                messages.append({"type": EVENTS, "app": app_id, "to": node,
                                 "from": self._hub.node_id, "skipped": watch.skipped,
                                 "events": watch.pending.get(node, [])})
            watch.pending, watch.skipped = {}, 0
            self._live_nodes(app_id, watch, self._clock())
        if messages:
            self._hub.spawn(self._send(messages), "debug console events")

    async def _send(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            await self._hub.broadcast(message)

    # -- what the observers are told --------------------------------------------------

    def connection_opened(self, session: Session) -> None:
        if session.app.id in self._watched:
            self._tell(session.app.id, {"kind": "connection_opened",
                                        "socket_id": session.socket_id})

    def connection_refused(self, app: App | None, reason: str) -> None:
        if app is not None and app.id in self._watched:
            self._tell(app.id, {"kind": "connection_refused", "reason": reason})

    def connection_closed(self, session: Session, code: int) -> None:
        if session.app.id in self._watched:
            self._tell(session.app.id, {"kind": "connection_closed",
                                        "socket_id": session.socket_id, "code": code,
                                        "user_id": session.user_id})

    def subscribed(self, session: Session, channel: str) -> None:
        if session.app.id in self._watched:
            self._tell(session.app.id, {"kind": "subscribed", "socket_id": session.socket_id,
                                        "channel": channel})

    def subscription_refused(self, session: Session, channel: str, status: int) -> None:
        if session.app.id in self._watched:
            self._tell(session.app.id, {"kind": "subscription_refused", "status": status,
                                        "socket_id": session.socket_id, "channel": channel})

    def unsubscribed(self, session: Session, channel: str) -> None:
        if session.app.id in self._watched:
            self._tell(session.app.id, {"kind": "unsubscribed", "socket_id": session.socket_id,
                                        "channel": channel})

    def published(self, app: App, publication: Publication, source: str) -> None:
        if app.id in self._watched:
            self._tell(app.id, {"kind": "published", "source": source,
                                "channel": publication.channel, "event": publication.event,
                                "data": preview(publication.data),
                                "socket_id": publication.exclude,
                                "user_id": publication.user_id})

    def webhook_attempted(self, app: App, url: str, events: list[dict[str, Any]],
                          outcome: str, status: int | None, seconds: float) -> None:
        if app.id in self._watched:
            self._tell(app.id, {"kind": "webhook", "url": shown_url(url), "outcome": outcome,
                                "status": status, "ms": round(seconds * 1000),
                                "events": [str(e.get("name")) for e in events[:10]],
                                "count": len(events)})

    def webhook_dropped(self, app: App, url: str, events: list[dict[str, Any]],
                        reason: str) -> None:
        if app.id in self._watched:
            self._tell(app.id, {"kind": "webhook_dropped", "url": shown_url(url),
                                "reason": reason, "count": len(events)})


class DebugWatcher:
    """One watching browser: an app, a filter, and where its batches go."""

    __slots__ = ("app_id", "filter", "send")

    def __init__(self, app_id: str, filter: DebugFilter,
                 send: Callable[[dict[str, Any]], None]) -> None:
        self.app_id = app_id
        self.filter = filter
        #: Receives ``{"node", "events", "skipped"}``; must be quick and not raise.
        self.send = send


class DebugFeeds:
    """This process's watchers: announces what they watch and hands them what comes back."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._watchers: dict[str, list[DebugWatcher]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        hub.control.register(EVENTS, self._on_events)

    async def watch(self, watcher: DebugWatcher) -> None:
        """Start feeding ``watcher``; returns once every process has been told (or raises
        :class:`~pubsub.errors.BrokerUnavailable`)."""
        self._watchers.setdefault(watcher.app_id, []).append(watcher)
        if self._task is None:
            self._task = asyncio.ensure_future(self._announce_forever())
        await self._announce(watcher.app_id)

    def unwatch(self, watcher: DebugWatcher) -> None:
        """Stop feeding ``watcher``; the last one of an app tells every process at once."""
        watchers = self._watchers.get(watcher.app_id, [])
        if watcher in watchers:
            watchers.remove(watcher)
        if (not watchers and self._watchers.pop(watcher.app_id, None) is not None
                and not self._closed):  # closed: the broker is going, announcements expire
            self._hub.spawn(self._announce(watcher.app_id), "debug console unwatch")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _announce(self, app_id: str) -> None:
        watchers = self._watchers.get(app_id, [])
        filters = list(dict.fromkeys(w.filter for w in watchers))
        if DebugFilter() in filters:  # one watcher wants all: the others' filters add nothing
            filters = [DebugFilter()]
        await self._hub.broadcast({"type": WATCH, "app": app_id, "node": self._hub.node_id,
                                   "for": WATCH_SECONDS if watchers else 0,
                                   "filters": [f.to_json() for f in filters[:MAX_FILTERS]]
                                   or [{}]})

    async def _announce_forever(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_INTERVAL)
            for app_id in list(self._watchers):
                try:
                    await self._announce(app_id)
                except BrokerUnavailable as outage:
                    log.warning("debug console announcement failed: %s", outage.message)

    def _on_events(self, message: dict[str, Any]) -> None:
        if message.get("to") != self._hub.node_id:
            return  # another node's watchers
        events, skipped = message.get("events"), message.get("skipped")
        if not isinstance(events, list) or not isinstance(skipped, int):
            log.warning("ignoring control message %r", message)
            return
        for watcher in self._watchers.get(message.get("app", ""), []):
            mine = [e for e in events if isinstance(e, dict) and watcher.filter.matches(e)]
            if mine or skipped:
                watcher.send({"node": message.get("from"), "events": mine, "skipped": skipped})
