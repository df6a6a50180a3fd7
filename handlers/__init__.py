"""Tornado handlers: parse what arrives, call the engine in ``pubsub``, write what leaves."""

from __future__ import annotations

from typing import Any

from handlers.api import BatchEventsHandler, EventsHandler
from handlers.health import HealthHandler
from handlers.socket import PusherSocketHandler
from pubsub.hub import Hub


def routes(hub: Hub) -> list[tuple[str, type, dict[str, Any]]]:
    """The push server's routes at the paths Pusher clients and SDKs use."""
    context = {"hub": hub}
    return [
        (r"/app/([^/]+)", PusherSocketHandler, context),
        (r"/apps/([^/]+)/events", EventsHandler, context),
        (r"/apps/([^/]+)/batch_events", BatchEventsHandler, context),
        (r"/health", HealthHandler, context),
    ]
