"""Tornado handlers: parse what arrives, call the engine in ``pubsub``, write what leaves."""

from __future__ import annotations

import re
from typing import Any

from . import api
from .fallback import FallbackOptions, fallback_routes
from .health import HealthHandler, InFlightRequests, ReadyHandler
from .metrics import MetricsHandler
from .socket import PusherSocketHandler
from .sse import ServerSentEventsHandler
from ..pubsub.hub import Hub
from ..pubsub.metrics import Metrics

_APP = r"/apps/(?P<app_id>[^/]+)"
_CHANNEL = r"(?P<channel>[^/]+)"
_USER = r"(?P<user_id>[^/]+)"


def routes(hub: Hub, in_flight: InFlightRequests | None = None, *, prefix: str = "",
           compression: bool = False,
           max_message_bytes: int | None = None,
           metrics: Metrics | None = None,
           fallback: FallbackOptions | None = None) -> list[tuple[str, type, dict[str, Any]]]:
    """The push server's routes at the paths Pusher clients and SDKs use, under ``prefix``.

    ``prefix`` (e.g. ``"/push"``) mounts every path under it: pusher-js then
    connects with ``wsPath: "/push"``, and the HTTP API still checks signatures
    over the standard ``/apps/{id}/...`` path, which is the one the SDKs sign.
    ``in_flight`` counts the HTTP API requests being served, for a drain to wait on;
    ``compression`` offers permessage-deflate to WebSocket clients;
    ``max_message_bytes`` caps a client's WebSocket message (close 1009 beyond),
    else the Application's ``websocket_max_message_size`` applies;
    ``metrics``, when given, is served at ``{prefix}/metrics`` (this process's only);
    ``fallback`` sets how pusher-js's HTTP fallback sessions, served under
    ``{prefix}/pusher/app/{key}/...``, are kept (:mod:`handlers.fallback`).
    """
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ValueError(f"prefix must start with '/' and not end with one, got {prefix!r}")
    context = {"hub": hub, "in_flight": in_flight or InFlightRequests()}
    signed = {**context, "prefix": prefix}
    socket = {**context, "compression": compression, "max_message_bytes": max_message_bytes}
    at = re.escape(prefix)
    return [
        (rf"{at}/app/([^/]+)", PusherSocketHandler, socket),
        *fallback_routes(hub, at, fallback or FallbackOptions(), max_message_bytes),
        (rf"{at}/app/([^/]+)/sse", ServerSentEventsHandler, context),
        (rf"{at}{_APP}/events", api.EventsHandler, signed),
        (rf"{at}{_APP}/batch_events", api.BatchEventsHandler, signed),
        (rf"{at}{_APP}/channels", api.ChannelsHandler, signed),
        (rf"{at}{_APP}/channels/{_CHANNEL}", api.ChannelHandler, signed),
        (rf"{at}{_APP}/channels/{_CHANNEL}/users", api.ChannelUsersHandler, signed),
        (rf"{at}{_APP}/channels/{_CHANNEL}/history", api.ChannelHistoryHandler, signed),
        (rf"{at}{_APP}/users/{_USER}/terminate_connections", api.TerminateConnectionsHandler, signed),
        # The Python SDK posts here without /apps/{id}: the signed auth_key names the app.
        (rf"{at}/users/{_USER}/terminate_connections", api.TerminateConnectionsHandler, signed),
        (rf"{at}/health", HealthHandler, context),
        (rf"{at}/ready", ReadyHandler, context),
        *([(rf"{at}/metrics", MetricsHandler, {**context, "metrics": metrics})]
          if metrics is not None else []),
    ]
