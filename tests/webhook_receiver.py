"""A real webhook endpoint for the tests: a Tornado app on a free loopback port.

Every POST is recorded, per path, as a :class:`Delivery` (raw body and
headers, and the status it was answered with) and checked with the official
SDK's ``validate_webhook`` for the apps the test named with ``trust``:
reading a delivery that fails the check fails the test. ``fail_next(n)``
answers 500 to the next ``n`` POSTs, whatever their path, so that tests can
watch retries.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pusher
import pytest
import tornado.httpserver
import tornado.testing
import tornado.web

from tornado_push.pubsub.apps import App


@dataclass(frozen=True)
class Delivery:
    """One POST as it arrived."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    #: What the official SDK's ``validate_webhook`` returned (None: refused).
    validated: dict[str, Any] | None

    @property
    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.body)["events"]


class _HookHandler(tornado.web.RequestHandler):
    def initialize(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    def post(self, path: str) -> None:
        status = self.receiver._answer()
        headers, body = dict(self.request.headers), self.request.body
        validated = self.receiver._validate(headers, body)
        self.receiver._record(Delivery(path, headers, body, status, validated))
        self.set_status(status)
        self.finish()


class WebhookReceiver:
    """``await WebhookReceiver.start()``; ``url("all")`` to configure, ``await next("all")`` to read."""

    def __init__(self) -> None:
        self._queues: defaultdict[str, asyncio.Queue[Delivery]] = defaultdict(asyncio.Queue)
        self._failures_left = 0
        self._sdks: dict[str, pusher.Pusher] = {}
        self._server: tornado.httpserver.HTTPServer | None = None
        self.port = 0

    @classmethod
    async def start(cls) -> WebhookReceiver:
        receiver = cls()
        sock, receiver.port = tornado.testing.bind_unused_port()
        application = tornado.web.Application([(r"/hooks/(.*)", _HookHandler, {"receiver": receiver})])
        receiver._server = tornado.httpserver.HTTPServer(application)
        receiver._server.add_sockets([sock])
        return receiver

    async def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{path}"

    def trust(self, *apps: App) -> None:
        """Check webhooks signed with these apps' keys, as their owners would."""
        for app in apps:
            self._sdks[app.key] = pusher.Pusher(app_id=app.id, key=app.key, secret=app.secret)

    def fail_next(self, count: int) -> None:
        """Answer 500 to the next ``count`` POSTs."""
        self._failures_left = count

    async def next(self, path: str, timeout: float = 5.0) -> Delivery:
        """The next POST to ``path``, accepted or not; it must pass the SDK's check."""
        delivery = await asyncio.wait_for(self._queues[path].get(), timeout)
        assert delivery.validated is not None, f"the official SDK refused {delivery}"
        return delivery

    async def events_until(self, path: str, name: str, timeout: float = 5.0,
                           **match: Any) -> list[dict[str, Any]]:
        """Every event accepted at ``path`` up to and including the first named ``name``
        with the fields in ``match``; batching decides nothing about what a test sees.
        """
        events: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            delivery = await self.next(path, max(0.0, deadline - loop.time()))
            if delivery.status == 200:
                events.extend(delivery.events)
                if any(_matches(event, name, match) for event in delivery.events):
                    return events

    def _answer(self) -> int:
        if self._failures_left:
            self._failures_left -= 1
            return 500
        return 200

    def _validate(self, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
        key = headers.get("X-Pusher-Key", "")
        sdk = self._sdks.get(key)
        if sdk is None:
            return None
        return sdk.validate_webhook(key, headers.get("X-Pusher-Signature", ""), body)

    def _record(self, delivery: Delivery) -> None:
        self._queues[delivery.path].put_nowait(delivery)


def _matches(event: dict[str, Any], name: str, match: dict[str, Any]) -> bool:
    return event["name"] == name and all(event.get(key) == value for key, value in match.items())


@pytest.fixture
def receiver(io_loop) -> Any:
    """A started :class:`WebhookReceiver`, closed at teardown."""
    started = io_loop.run_sync(WebhookReceiver.start)
    yield started
    io_loop.run_sync(started.close)
