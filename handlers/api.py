"""The signed HTTP API that app servers call through the official Pusher SDKs."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import tornado.web

from ..pubsub import logjson, protocol, rest
from ..pubsub.apps import App
from ..pubsub.errors import ApiError, BrokerUnavailable
from .health import InFlightRequests
from .metrics import tell_answered
from ..pubsub.hub import Hub
from ..pubsub.observe import SOURCE_API, SOURCE_BATCH_API
from ..pubsub.signing import verify_request

log = logging.getLogger(__name__)


def refusal(error: Exception) -> tuple[int, str] | None:
    """The status and message answering ``error``, or None for an unexpected one."""
    if isinstance(error, ApiError):
        return error.status, error.message
    if isinstance(error, BrokerUnavailable):
        # Never 200 for an event that was not published: the SDK can retry.
        return 503, f"Service unavailable: {error.message}"
    return None


def authenticate(hub: Hub, app_id: str | None, method: str, path: str,
                 query: dict[str, str], body: bytes) -> App:
    """The enabled app that signed this request; :class:`ApiError` otherwise.

    The app is ``app_id``'s or, on the prefix-less paths some SDKs use, the
    signed ``auth_key``'s; ``path`` is the one the SDKs sign, without any prefix.
    Lines logged for the rest of the request (its task) name the app (:mod:`logjson`);
    observers are told each refused signature (``http_auth_failed``).
    """
    app = (hub.apps.by_id(app_id) if app_id is not None
           else hub.apps.by_key(query.get("auth_key", "")))
    if app is None:
        hub.observers.http_auth_failed(None, "unknown_app")
        raise ApiError(404, f"Unknown app {app_id or query.get('auth_key', '')!r}")
    logjson.about(app=app.id)
    try:
        verify_request(app, method, path, query, body, time.time())
    except ApiError as refusal:
        hub.observers.http_auth_failed(app, refusal.reason or "bad_signature")
        raise
    if not app.enabled:
        raise ApiError(403, "App is disabled")
    return app


async def channel_info(hub: Hub, app: App, channel: str,
                       attributes: frozenset[str]) -> dict[str, Any]:
    """The requested ``info`` attributes of one channel (``occupied`` among them)."""
    info = await hub.queries.channel_info(app, channel)
    selected = {name: info[name] for name in attributes if name in info}
    if "cache" in attributes:
        cached = await hub.cached_event(app, channel)
        if cached is not None:
            selected["cache"] = {"data": cached.data, "ttl": int(cached.ttl)}
    return selected


async def publish_events(hub: Hub, app: App, body: bytes) -> dict[str, Any]:
    """``POST /apps/{id}/events``: one event on up to 100 channels; the answer's body."""
    trigger = rest.parse_events_body(app, body)
    await hub.trigger(app, trigger.channels, trigger.event, trigger.data, trigger.socket_id,
                      source=SOURCE_API)
    if not trigger.info:
        return {}
    return {"channels": {name: await channel_info(hub, app, name, trigger.info)
                         for name in trigger.channels}}


async def publish_batch(hub: Hub, app: App, body: bytes) -> dict[str, Any]:
    """``POST /apps/{id}/batch_events``: up to 10 events, each on one channel, in order."""
    triggers = rest.parse_batch_body(app, body)
    for trigger in triggers:
        await hub.trigger(app, trigger.channels, trigger.event, trigger.data, trigger.socket_id,
                          source=SOURCE_BATCH_API)
    if not any(trigger.info for trigger in triggers):
        return {}
    return {"batch": [await channel_info(hub, app, trigger.channels[0], trigger.info)
                      for trigger in triggers]}


class JsonHandler(tornado.web.RequestHandler):
    """Answers JSON; a refusal (:class:`ApiError`) answers ``{"error": message}`` with its status."""

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        answer = refusal(kwargs.get("exc_info", (None, None))[1])
        if answer is None:
            message = self._reason
        else:
            status, message = answer
            self.set_status(status)
        self.write_json({"error": message})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ApiError, BrokerUnavailable)):
            log.info("%s %s refused: %s", self.request.method, self.request.path, value.message)
        else:
            super().log_exception(typ, value, tb)


class ApiHandler(JsonHandler):
    """Base of the HTTP API: finds the app and checks the request signature
    (:func:`authenticate`) before any method runs.

    The signature covers the path without the ``prefix`` the routes are
    mounted under, as the SDKs sign it. Refusals are :class:`ApiError` and
    answer ``{"error": message}`` with their status. Each answer is told to the
    hub's observers (``http_answered``) under the handler's ``endpoint`` name.
    """

    endpoint = "other"

    def initialize(self, hub: Hub, in_flight: InFlightRequests, prefix: str = "") -> None:
        self.hub = hub
        self.in_flight = in_flight
        self.prefix = prefix
        self.app_config: App | None = None
        in_flight.enter()

    def on_finish(self) -> None:
        # Tornado finishes every request it started, errors and gone clients included.
        self.in_flight.leave()
        tell_answered(self, self.hub, self.endpoint, self.app_config)

    def check_xsrf_cookie(self) -> None:
        """None: requests are signed with the app secret, never carried by a browser's cookies.

        A host app that embeds these routes may turn ``xsrf_cookies`` on for its own forms.
        """

    def prepare(self) -> None:
        query = {name: self.get_query_argument(name, strip=False)
                 for name in self.request.query_arguments}
        path = self.request.path[len(self.prefix):]  # the route matched, so it starts with it
        logjson.about(channel=self.path_kwargs.get("channel"))
        self.app_config = authenticate(self.hub, self.path_kwargs.get("app_id"),
                                       self.request.method or "", path, query, self.request.body)

    @property
    def app(self) -> App:
        assert self.app_config is not None, "prepare() sets the app"
        return self.app_config


class EventsHandler(ApiHandler):
    """``POST /apps/{id}/events`` (:func:`publish_events`)."""

    endpoint = "events"

    async def post(self, app_id: str) -> None:
        self.write_json(await publish_events(self.hub, self.app, self.request.body))


class BatchEventsHandler(ApiHandler):
    """``POST /apps/{id}/batch_events`` (:func:`publish_batch`)."""

    endpoint = "batch_events"

    async def post(self, app_id: str) -> None:
        self.write_json(await publish_batch(self.hub, self.app, self.request.body))


class ChannelsHandler(ApiHandler):
    """``GET /apps/{id}/channels?filter_by_prefix=&info=``: the occupied channels."""

    endpoint = "channels"

    async def get(self, app_id: str) -> None:
        prefix = self.get_query_argument("filter_by_prefix", "", strip=False)
        attributes = rest.parse_channels_query(prefix, self.get_query_argument("info", None))
        channels = await self.hub.queries.occupied_channels(self.app, prefix)
        self.write_json({"channels": {name: {attribute: info[attribute] for attribute in attributes
                                             if attribute in info}
                                      for name, info in channels.items()}})


class ChannelHandler(ApiHandler):
    """``GET /apps/{id}/channels/{channel}?info=``: one channel's state."""

    endpoint = "channel"

    async def get(self, app_id: str, channel: str) -> None:
        attributes = rest.parse_channel_query(channel, self.get_query_argument("info", None))
        self.write_json(await channel_info(self.hub, self.app, channel, attributes | {"occupied"}))


class ChannelUsersHandler(ApiHandler):
    """``GET /apps/{id}/channels/{channel}/users``: a presence channel's users."""

    endpoint = "channel_users"

    async def get(self, app_id: str, channel: str) -> None:
        rest.check_channel(channel)
        if not protocol.channel_kind(channel).presence:
            raise ApiError(400, "Users can only be listed on presence channels")
        users = await self.hub.queries.presence_user_ids(self.app, channel)
        self.write_json({"users": [{"id": user_id} for user_id in users]})


class ChannelHistoryHandler(ApiHandler):
    """``GET /apps/{id}/channels/{channel}/history?limit=&after=&before=``: stored messages,
    ascending; with ``after``, the oldest after it, else the newest (docs/history.md)."""

    endpoint = "channel_history"

    async def get(self, app_id: str, channel: str) -> None:
        query = rest.parse_history_query(self.app, channel, *(
            self.get_query_argument(name, None) for name in ("limit", "after", "before")))
        self.hub.counters(self.app).history_reads += 1
        page = await self.hub.history.read(self.app.id, channel, after=query.after,
                                           before=query.before, limit=query.limit,
                                           retention=query.retention)
        self.write_json({
            "epoch": page.epoch,
            "items": [{"offset": entry.offset, "event": entry.event, "data": entry.data,
                       "time": entry.time} for entry in page.entries],
            "first_offset": page.first_offset,
            "last_offset": page.last_offset,
        })


class TerminateConnectionsHandler(ApiHandler):
    """``POST [/apps/{id}]/users/{user_id}/terminate_connections``: sign a user out everywhere."""

    endpoint = "terminate_user_connections"

    async def post(self, user_id: str, app_id: str | None = None) -> None:
        await self.hub.users.terminate(self.app, rest.check_user_id(user_id))
        self.write_json({})
