"""Tornado handlers: parse what arrives, call the engine in ``pubsub``, write what leaves."""

from __future__ import annotations

from typing import Any

from . import api
from .health import HealthHandler, InFlightRequests, ReadyHandler
from .socket import PusherSocketHandler
from ..pubsub.hub import Hub

_APP = r"/apps/(?P<app_id>[^/]+)"
_CHANNEL = r"(?P<channel>[^/]+)"
_USER = r"(?P<user_id>[^/]+)"


def routes(hub: Hub, in_flight: InFlightRequests | None = None, *,
           compression: bool = False) -> list[tuple[str, type, dict[str, Any]]]:
    """The push server's routes at the paths Pusher clients and SDKs use.

    ``in_flight`` counts the HTTP API requests being served, for a drain to wait on;
    ``compression`` offers permessage-deflate to WebSocket clients.
    """
    context = {"hub": hub, "in_flight": in_flight or InFlightRequests()}
    return [
        (r"/app/([^/]+)", PusherSocketHandler, {**context, "compression": compression}),
        (rf"{_APP}/events", api.EventsHandler, context),
        (rf"{_APP}/batch_events", api.BatchEventsHandler, context),
        (rf"{_APP}/channels", api.ChannelsHandler, context),
        (rf"{_APP}/channels/{_CHANNEL}", api.ChannelHandler, context),
        (rf"{_APP}/channels/{_CHANNEL}/users", api.ChannelUsersHandler, context),
        (rf"{_APP}/channels/{_CHANNEL}/history", api.ChannelHistoryHandler, context),
        (rf"{_APP}/users/{_USER}/terminate_connections", api.TerminateConnectionsHandler, context),
        # The Python SDK posts here without /apps/{id}: the signed auth_key names the app.
        (rf"/users/{_USER}/terminate_connections", api.TerminateConnectionsHandler, context),
        (r"/health", HealthHandler, context),
        (r"/ready", ReadyHandler, context),
    ]
