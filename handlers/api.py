"""The signed HTTP API that app servers call through the official Pusher SDKs."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import tornado.web

from pubsub import rest
from pubsub.apps import App
from pubsub.errors import ApiError
from pubsub.hub import Hub
from pubsub.signing import verify_request

log = logging.getLogger(__name__)


class ApiHandler(tornado.web.RequestHandler):
    """Base of ``/apps/{id}/...``: finds the app and checks the request signature.

    Refusals are :class:`ApiError` and answer ``{"error": message}`` with their status.
    """

    def initialize(self, hub: Hub) -> None:
        self.hub = hub
        self.app_config: App | None = None

    def prepare(self) -> None:
        app = self.hub.apps.by_id(self.path_args[0])
        if app is None:
            raise ApiError(404, f"Unknown app id {self.path_args[0]}")
        query = {name: self.get_query_argument(name, strip=False)
                 for name in self.request.query_arguments}
        verify_request(app, self.request.method or "", self.request.path, query,
                       self.request.body, time.time())
        if not app.enabled:
            raise ApiError(403, "App is disabled")
        self.app_config = app

    @property
    def app(self) -> App:
        assert self.app_config is not None, "prepare() sets the app"
        return self.app_config

    def write_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, ApiError):
            self.set_status(error.status)
            message = error.message
        else:
            message = self._reason
        self.write_json({"error": message})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            log.info("%s %s refused %d: %s", self.request.method, self.request.path,
                     value.status, value.message)
        else:
            super().log_exception(typ, value, tb)

    def channel_info(self, channel: str, attributes: frozenset[str]) -> dict[str, Any]:
        info = self.hub.channel_info(self.app, channel)
        return {name: value for name, value in info.items() if name in attributes}


class EventsHandler(ApiHandler):
    """``POST /apps/{id}/events``: one event on up to 100 channels."""

    async def post(self, app_id: str) -> None:
        trigger = rest.parse_events_body(self.app, self.request.body)
        await self.hub.trigger(self.app, trigger.channels, trigger.event, trigger.data,
                               trigger.socket_id)
        if not trigger.info:
            return self.write_json({})
        self.write_json({"channels": {name: self.channel_info(name, trigger.info)
                                      for name in trigger.channels}})


class BatchEventsHandler(ApiHandler):
    """``POST /apps/{id}/batch_events``: up to 10 events, each on one channel, in order."""

    async def post(self, app_id: str) -> None:
        triggers = rest.parse_batch_body(self.app, self.request.body)
        for trigger in triggers:
            await self.hub.trigger(self.app, trigger.channels, trigger.event, trigger.data,
                                   trigger.socket_id)
        if not any(trigger.info for trigger in triggers):
            return self.write_json({})
        self.write_json({"batch": [self.channel_info(trigger.channels[0], trigger.info)
                                   for trigger in triggers]})
