"""``/health``: a cheap liveness answer for load balancers and supervisors."""

from __future__ import annotations

import tornado.web

from pubsub.hub import Hub


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self) -> None:
        health = self.hub.health()
        # A load balancer reads the status code; people read the body.
        self.set_status(200 if health["status"] == "ok" else 503)
        self.write(health)
