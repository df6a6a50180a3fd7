"""``/health`` and ``/ready``: what load balancers and supervisors ask of a process."""

from __future__ import annotations

import asyncio
from typing import Any

import tornado.web

from ..pubsub.hub import Hub
from .metrics import tell_answered


#: Health statuses a load balancer should keep sending to: ``partial`` (Redis Cluster
#: with a master down) costs every process the same channels.
SERVING = ("ok", "partial")


class InFlightRequests:
    """Counts HTTP API requests being served, so that a drain can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


class _StatusHandler(tornado.web.RequestHandler):
    #: The route's name in metrics.
    endpoint = "other"

    def initialize(self, hub: Hub, **_: Any) -> None:
        self.hub = hub

    def on_finish(self) -> None:
        tell_answered(self, self.hub, self.endpoint)

    def answer(self, ok: bool, body: dict[str, Any]) -> None:
        # A load balancer reads the status code; people read the body.
        self.set_status(200 if ok else 503)
        self.write(body)


class HealthHandler(_StatusHandler):
    """``/health``: the process and its link to the other processes (Redis)."""

    endpoint = "health"

    def get(self) -> None:
        health = self.hub.health()
        self.answer(health["status"] in SERVING, health)


class ReadyHandler(_StatusHandler):
    """``/ready``: whether to send this process new clients; false while it drains."""

    endpoint = "ready"

    def get(self) -> None:
        health = self.hub.health()
        reason = "draining" if health["draining"] else (
            None if health["status"] in SERVING else "broker unreachable")
        self.answer(reason is None, {"ready": reason is None, "reason": reason})
