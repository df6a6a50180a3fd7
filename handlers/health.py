"""``/health``: a cheap liveness answer for load balancers and supervisors."""

from __future__ import annotations

import tornado.web

from pubsub.hub import Hub


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self) -> None:
        self.write({"status": "ok", "connections": self.hub.connection_count})
