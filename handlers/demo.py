"""The demos served at ``/``: chat rooms, a live monitor, notifications.

Their endpoints live under ``/demo/`` and run on one app (``Settings.demo_app``):

    GET  /demo/config   the app key and channel names the pages use, or {"demo": false}
                        when the demos are off (the one route that answers then)
    POST /demo/auth     signs a ``presence-chat-{room}`` subscription for the display
                        name the visitor chose (form: socket_id, channel_name, user_id, name)
    POST /demo/trigger  publishes a chat message (JSON: channel, event "message", data)
    GET  /demo/recent   a room's newest kept messages before an offset, for a page that
                        joins (query: channel, before), oldest first
    POST /demo/notify   publishes a notification to every notifications page (JSON: title, body)

and :class:`MonitorTicker` publishes this process's figures on the monitor
channel once a second while someone watches. They sign and publish for anyone
who asks, within the demo's channels and events: a demo, not a login. So
``settings.py`` turns them on by default only where the app secret is public anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
from typing import Any

from ..pubsub import protocol, rest
from ..pubsub.apps import App
from ..pubsub.errors import ApiError, BrokerUnavailable
from ..pubsub.hub import Hub
from ..pubsub.signing import channel_auth
from .api import JsonHandler

log = logging.getLogger(__name__)

CHAT_PREFIX = "presence-chat-"
CHAT_EVENT = "message"
MONITOR_CHANNEL = "demo-monitor"
MONITOR_EVENT = "figures"
NOTIFICATIONS_CHANNEL = "demo-notifications"
NOTIFICATION_EVENT = "notification"
NOTIFICATION_LEVELS = ("info", "success", "warning")
#: Demo requests are small; anything larger is refused before it is parsed.
MAX_BODY_BYTES = 4096
MAX_NAME_LENGTH = 32
MAX_TEXT_LENGTH = 500
MAX_TITLE_LENGTH = 80
#: Messages a chat page shows from its room's history when it joins.
RECENT_MESSAGES = 50
_ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_USER_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _DemoHandler(JsonHandler):
    def initialize(self, hub: Hub, app: App) -> None:
        self.hub = hub
        self.app = app

    def prepare(self) -> None:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body is over {MAX_BODY_BYTES} bytes")

    def json_body(self) -> dict[str, Any]:
        return rest.load_object(self.request.body)

    async def publish(self, channel: str, event: str, payload: dict[str, Any]) -> None:
        """Publish with an id and a server time, so every page orders and dedupes alike."""
        stamped = {"id": secrets.token_hex(8), "time": time.time(), **payload}
        await self.hub.trigger(self.app, [channel], event, protocol.dumps(stamped))
        self.write_json({"id": stamped["id"]})


def text_field(body: dict[str, Any], name: str, max_length: int) -> str:
    """A required string field, stripped: 1 to ``max_length`` characters, or a 400."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    value = value.strip()
    if len(value) > max_length:
        raise ApiError(400, f"{name} is over {max_length} characters")
    return value


def user_id_field(body: dict[str, Any]) -> str:
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not _USER_ID_RE.fullmatch(user_id):
        raise ApiError(400, "user_id must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    return user_id


def chat_channel(channel: Any) -> str:
    """``presence-chat-{room}`` with a short room name, or a 400."""
    if not (isinstance(channel, str) and channel.startswith(CHAT_PREFIX)
            and _ROOM_RE.fullmatch(channel[len(CHAT_PREFIX):])):
        raise ApiError(400, f"channel must be {CHAT_PREFIX}{{room}}, the room 1 to 40 "
                            "characters of A-Z a-z 0-9 _ -")
    return channel


class ConfigHandler(JsonHandler):
    """``GET /demo/config``: what the pages need to connect and subscribe; no app: demos off."""

    def initialize(self, app: App | None) -> None:
        self.app = app

    def get(self) -> None:
        if self.app is None:
            return self.write_json({"demo": False})
        self.write_json({"demo": True, "key": self.app.key, "client_events": self.app.client_events,
                         "channels": {"chat_prefix": CHAT_PREFIX, "monitor": MONITOR_CHANNEL,
                                      "notifications": NOTIFICATIONS_CHANNEL}})


class AuthHandler(_DemoHandler):
    """``POST /demo/auth``: the channel auth pusher-js would get from an app server."""

    def post(self) -> None:
        form = {name: self.get_body_argument(name, "") for name in
                ("socket_id", "channel_name", "user_id", "name")}
        if not protocol.is_valid_socket_id(form["socket_id"]):
            raise ApiError(400, "socket_id must look like 123.456")
        channel = chat_channel(form["channel_name"])
        member = {"user_id": user_id_field(form),
                  "user_info": {"name": text_field(form, "name", MAX_NAME_LENGTH)}}
        channel_data = protocol.dumps(member)
        self.write_json({"auth": channel_auth(self.app, form["socket_id"], channel, channel_data),
                         "channel_data": channel_data})


class TriggerHandler(_DemoHandler):
    """``POST /demo/trigger``: a chat message to everyone in the room, its sender included."""

    async def post(self) -> None:
        body = self.json_body()
        channel = chat_channel(body.get("channel"))
        if body.get("event") != CHAT_EVENT:
            raise ApiError(400, f"event must be {CHAT_EVENT!r}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise ApiError(400, "data must be an object with user_id, name and text")
        await self.publish(channel, CHAT_EVENT, {
            "user_id": user_id_field(data), "name": text_field(data, "name", MAX_NAME_LENGTH),
            "text": text_field(data, "text", MAX_TEXT_LENGTH)})


class RecentHandler(_DemoHandler):
    """``GET /demo/recent?channel=presence-chat-{room}&before=N``: the chat messages a page
    that joined at offset N - 1 missed, from the room's history (404 when it keeps none)."""

    async def get(self) -> None:
        channel = chat_channel(self.get_query_argument("channel", None))
        query = rest.parse_history_query(self.app, channel, str(RECENT_MESSAGES), None,
                                         self.get_query_argument("before", None))
        page = await self.hub.history.read(self.app.id, channel, before=query.before,
                                           limit=query.limit, retention=query.retention)
        self.write_json({"messages": [json.loads(entry.data) for entry in page.entries
                                      if entry.event == CHAT_EVENT]})


class NotifyHandler(_DemoHandler):
    """``POST /demo/notify``: a notification to every page viewing notifications."""

    async def post(self) -> None:
        body = self.json_body()
        level = body.get("level", NOTIFICATION_LEVELS[0])
        if level not in NOTIFICATION_LEVELS:
            raise ApiError(400, f"level must be one of {', '.join(NOTIFICATION_LEVELS)}")
        message = body.get("body") or ""
        if not isinstance(message, str) or len(message) > MAX_TEXT_LENGTH:
            raise ApiError(400, f"body must be a string of at most {MAX_TEXT_LENGTH} characters")
        await self.publish(NOTIFICATIONS_CHANNEL, NOTIFICATION_EVENT, {
            "title": text_field(body, "title", MAX_TITLE_LENGTH), "body": message.strip(),
            "level": level})


def routes(hub: Hub, app: App | None) -> list[tuple[str, type, dict[str, Any]]]:
    """The demo endpoints for ``app``; with None (demos off), only the config that says so."""
    if app is None:
        return [(r"/demo/config", ConfigHandler, {"app": None})]
    context = {"hub": hub, "app": app}
    return [
        (r"/demo/config", ConfigHandler, {"app": app}),
        (r"/demo/auth", AuthHandler, context),
        (r"/demo/trigger", TriggerHandler, context),
        (r"/demo/recent", RecentHandler, context),
        (r"/demo/notify", NotifyHandler, context),
    ]


def rss_bytes() -> int | None:
    """This process's resident memory now, where ``/proc`` tells it (Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MonitorTicker:
    """Publishes this process's figures on :data:`MONITOR_CHANNEL` every ``interval`` seconds.

    Only while the channel has subscribers, so an unwatched demo costs one
    query a second. Event-loop lag is how late the ticker's own sleep wakes up.
    """

    def __init__(self, hub: Hub, app: App, interval: float = 1.0) -> None:
        self.hub = hub
        self.app = app
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking on the running loop."""
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        sent, since = self.hub.messages_sent, loop.time()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            now = loop.time()
            rate = (self.hub.messages_sent - sent) / (now - since)
            sent, since = self.hub.messages_sent, now
            try:
                await self._publish(rate, lag=max(0.0, now - due))
            except BrokerUnavailable as outage:  # the next tick tries again
                log.warning("demo monitor could not publish: %s", outage.message)

    async def _publish(self, messages_per_second: float, lag: float) -> None:
        watched = await self.hub.queries.channel_info(self.app, MONITOR_CHANNEL)
        if not watched["occupied"]:
            return
        rss = rss_bytes()
        figures = {"time": time.time(), "node": self.hub.node_id,
                   "connections": self.hub.connection_count,
                   "watchers": watched["subscription_count"],
                   "messages_per_second": round(messages_per_second, 1),
                   "loop_lag_ms": round(lag * 1000, 2),
                   "rss_mb": None if rss is None else round(rss / 2**20, 1)}
        await self.hub.trigger(self.app, [MONITOR_CHANNEL], MONITOR_EVENT, protocol.dumps(figures))
