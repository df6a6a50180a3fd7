"""The bare Tornado baseline: the naive ``write_message`` broadcast loop.

    python bench/baseline_server.py --port P [--host 127.0.0.1]

What a developer writes in an afternoon with Tornado alone, answering just
enough of Pusher protocol 7 for the benchmark's load client:

- ``/app/{key}`` (WebSocket): sends ``pusher:connection_established`` on open;
  answers ``pusher:subscribe`` with ``pusher_internal:subscription_succeeded``
  (any channel, no authorization), ``pusher:unsubscribe`` and ``pusher:ping``.
- ``POST /apps/{id}/events`` and ``POST /apps/{id}/batch_events``: for each
  event and channel, encodes the Pusher frame with ``json.dumps`` once and calls
  ``write_message`` on every subscribed handler, one Task and one Future per
  delivery. **The request signature is NOT checked** (our server checks it), so
  the HTTP publish figure favours this baseline; nor are bodies validated.

No presence, no limits, no rate limiting, no compression (Tornado's default).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any

import tornado.web
import tornado.websocket

#: channel name -> the handlers subscribed to it, in subscription order.
CHANNELS: dict[str, dict["PusherSocket", None]] = {}
_SOCKET_IDS = itertools.count(1)


class PusherSocket(tornado.websocket.WebSocketHandler):
    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, key: str) -> None:
        self.socket_id = f"1.{next(_SOCKET_IDS)}"
        self.channels: set[str] = set()
        self.write_message(json.dumps({
            "event": "pusher:connection_established",
            "data": json.dumps({"socket_id": self.socket_id, "activity_timeout": 120}),
        }))

    def on_message(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
            event = frame.get("event")
            data = frame.get("data")
        except (ValueError, AttributeError):
            return
        if event == "pusher:subscribe" and isinstance(data, dict):
            channel = data.get("channel")
            CHANNELS.setdefault(channel, {})[self] = None
            self.channels.add(channel)
            self.write_message(json.dumps({"event": "pusher_internal:subscription_succeeded",
                                           "channel": channel, "data": "{}"}))
        elif event == "pusher:unsubscribe" and isinstance(data, dict):
            self._leave(data.get("channel"))
        elif event == "pusher:ping":
            self.write_message(json.dumps({"event": "pusher:pong", "data": "{}"}))

    def on_close(self) -> None:
        for channel in list(getattr(self, "channels", ())):
            self._leave(channel)

    def _leave(self, channel: Any) -> None:
        self.channels.discard(channel)
        subscribers = CHANNELS.get(channel)
        if subscribers is not None:
            subscribers.pop(self, None)
            if not subscribers:
                del CHANNELS[channel]


def broadcast(channel: str, event: str, data: str) -> None:
    """The naive loop: one ``json.dumps``, then ``write_message`` to each subscriber."""
    message = json.dumps({"event": event, "channel": channel, "data": data})
    for handler in list(CHANNELS.get(channel, ())):
        try:
            handler.write_message(message)
        except tornado.websocket.WebSocketClosedError:
            pass


class Publish(tornado.web.RequestHandler):
    """``/apps/{id}/events`` and ``/apps/{id}/batch_events``; signatures are NOT checked."""

    def post(self, app_id: str, kind: str) -> None:
        body = json.loads(self.request.body)
        events = body["batch"] if kind == "batch_events" else [body]
        for event in events:
            channels = event.get("channels") or [event["channel"]]
            for channel in channels:
                broadcast(channel, event["name"], event["data"])
        self.write({})


def make_app() -> tornado.web.Application:
    return tornado.web.Application([
        (r"/app/([^/]+)", PusherSocket),
        (r"/apps/([^/]+)/(events|batch_events)", Publish),
    ])


async def main() -> None:
    parser = argparse.ArgumentParser(description="bare Tornado write_message baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    make_app().listen(args.port, address=args.host)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
