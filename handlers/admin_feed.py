"""The admin console's debug feed: a WebSocket that streams what :mod:`pubsub.debug` copies.

The handshake is refused without a session (401) or from another origin (403);
a filter longer than :data:`~pubsub.debug.MAX_FILTER_CHARS` is refused (400).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import tornado.websocket

from .admin_auth import AdminRequest, audit, refusals
from ..pubsub.debug import MAX_FILTER_CHARS, DebugFilter, DebugWatcher
from ..pubsub.errors import BrokerUnavailable

if TYPE_CHECKING:
    from .admin import AdminConsole

#: Feed batches written to a watching browser and not yet taken by it; beyond, dropped
#: and counted, so a slow browser never grows this process's buffers.
MAX_FEED_WRITES = 64


class FeedHandler(AdminRequest, tornado.websocket.WebSocketHandler):
    """The debug console's feed: one JSON message per batch (``{"node", "events",
    "skipped"}``), first ``{"watching": app}`` once every process has been told."""

    def prepare(self) -> None:
        """The cookie and the Origin, checked for every method before the handshake."""
        if self.session_id() is None:
            self.set_status(401)
            self.finish({"error": "Log in first"})
        elif not self.same_origin():
            refusals.warning("refused the debug feed to %s: Origin %r", self.client,
                          self.request.headers.get("Origin"))
            self.set_status(403)
            self.finish({"error": "Cross-origin request refused"})

    def initialize(self, console: AdminConsole, prefix: str = "") -> None:
        super().initialize(console, prefix)
        self.watcher: DebugWatcher | None = None
        self._writes = 0  # batches written and not yet taken by the browser
        self._dropped = 0  # events dropped since the last batch written, for its count

    async def get(self, app_id: str) -> None:
        if self.console.hub.apps.by_id(app_id) is None:
            self.set_status(404)
            return self.finish({"error": f"Unknown app {app_id!r}"})
        chosen = DebugFilter(self.get_query_argument("channel", None) or None,
                             self.get_query_argument("event", None) or None)
        if any(len(name) > MAX_FILTER_CHARS for name in chosen.to_json().values()):
            self.set_status(400)
            return self.finish({"error": f"Filters are at most {MAX_FILTER_CHARS} characters"})
        self.watcher = DebugWatcher(app_id, chosen, self._send)
        await super().get(app_id)

    def check_origin(self, origin: str) -> bool:
        return self.same_origin()  # checked in prepare() already; Tornado asks again

    async def open(self, app_id: str) -> None:
        assert self.watcher is not None, "get() chose the filter"
        chosen = self.watcher.filter
        audit.info("debug console on app %s (%s) opened by %s", app_id,
                   json.dumps(chosen.to_json()), self.client)
        try:
            await self.console.feeds.watch(self.watcher)
        except BrokerUnavailable as outage:
            self.close(1011, f"Broker unavailable: {outage.message}"[:120])
            return
        self._write({"watching": app_id, "filter": chosen.to_json()})

    def on_message(self, message: str | bytes) -> None:
        pass  # the feed only speaks

    def on_close(self) -> None:
        if self.watcher is not None:
            self.console.feeds.unwatch(self.watcher)

    def _send(self, batch: dict[str, Any]) -> None:
        if self._writes >= MAX_FEED_WRITES:
            self._dropped += len(batch["events"]) + batch["skipped"]
            return
        if self._dropped:
            batch = {**batch, "skipped": batch["skipped"] + self._dropped}
            self._dropped = 0
        self._write(batch)

    def _write(self, message: dict[str, Any]) -> None:
        try:
            written = self.write_message(json.dumps(message))
        except tornado.websocket.WebSocketClosedError:
            return
        self._writes += 1
        written.add_done_callback(self._written)

    def _written(self, future: Any) -> None:
        self._writes -= 1
        if not future.cancelled():
            future.exception()  # a closed socket: nothing to do, on_close unwatches
