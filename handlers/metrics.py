"""``/metrics``: this process's Prometheus metrics, and the HTTP answers they count.

The metrics are **per process**: each process of a server run one per core
answers for itself, so Prometheus scrapes every process's own port (the
``run/prometheus-targets.json`` file_sd list ``supervisor/start.sh`` writes)
and sums across them (``sum without(instance)``). A proxy in front must not
route ``/metrics``: it would show one process chosen at random, and publish
the server's internals. See docs/observability.md.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from ..pubsub.apps import App
from ..pubsub.hub import Hub
from ..pubsub.metrics import Metrics


def tell_answered(handler: tornado.web.RequestHandler, hub: Hub, endpoint: str,
                  app: App | None = None) -> None:
    """Tell the hub's observers that ``handler`` answered, as ``endpoint`` (a route name)."""
    observers = hub.observers
    if observers:
        observers.http_answered(app, endpoint, handler.get_status(),
                                handler.request.request_time())


class MetricsHandler(tornado.web.RequestHandler):
    """``GET /metrics``: the Prometheus text format, as ``prometheus_client`` writes it."""

    def initialize(self, hub: Hub, metrics: Metrics, **_: Any) -> None:
        self.hub = hub
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.metrics.exposition())

    def on_finish(self) -> None:
        tell_answered(self, self.hub, "metrics")
