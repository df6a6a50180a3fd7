"""The WebSocket endpoint ``/app/{key}``: one :class:`pubsub.session.Session` per socket."""

from __future__ import annotations

import asyncio

import tornado.websocket

from pubsub import protocol
from pubsub.apps import App
from pubsub.errors import ConnectionRefused, ErrorCode
from pubsub.hub import Hub
from pubsub.session import Session

#: A close frame's reason may hold at most 123 bytes.
_MAX_CLOSE_REASON = 123


def _retrieve_outcome(future: asyncio.Future) -> None:
    # A write to a client that has gone fails; nothing is owed to it, so
    # retrieve the error instead of letting asyncio log it as unhandled.
    if not future.cancelled():
        future.exception()


class PusherSocketHandler(tornado.websocket.WebSocketHandler):
    """Carries Pusher frames between one client and its session; the transport of that session."""

    def initialize(self, hub: Hub, **_: object) -> None:
        self.hub = hub
        self.session: Session | None = None

    def check_origin(self, origin: str) -> bool:
        # Pusher clients connect from any page: the app key names the tenant and
        # channel signatures guard everything private, as on the hosted service.
        return True

    def open(self, key: str) -> None:
        try:
            app = self._app_for(key)
        except ConnectionRefused as refusal:
            self.send(protocol.dumps({"event": protocol.ERROR,
                                      "data": {"code": refusal.code, "message": refusal.message}}
                                     ).encode())
            self.close(refusal.code, refusal.message)
            return
        self.session = Session(self.hub, app, self, self.request.remote_ip or "")
        self.session.open()

    def _app_for(self, key: str) -> App:
        """The app this connection is for, or :class:`ConnectionRefused`."""
        app = self.hub.apps.by_key(key)
        if app is None:
            raise ConnectionRefused(ErrorCode.NO_SUCH_APP, f"App key {key} does not exist")
        version = self.get_query_argument("protocol", None)
        if version is None:
            raise ConnectionRefused(ErrorCode.NO_PROTOCOL, "No protocol version given: add ?protocol=7")
        if version != str(protocol.PROTOCOL_VERSION):
            raise ConnectionRefused(ErrorCode.UNSUPPORTED_PROTOCOL,
                                    f"Protocol {version} is not supported: use 7")
        if not app.enabled:
            raise ConnectionRefused(ErrorCode.APP_DISABLED, "App is disabled")
        return app

    async def on_message(self, message: str | bytes) -> None:
        # Tornado reads this socket's next message only after this returns,
        # so each client's messages are handled in the order sent.
        if self.session is not None:
            await self.session.receive(message)

    def on_ping(self, data: bytes) -> None:
        if self.session is not None:
            self.session.mark_activity()

    def on_pong(self, data: bytes) -> None:
        if self.session is not None:
            self.session.mark_activity()

    def on_close(self) -> None:
        if self.session is not None:
            self.session.closed()

    # -- the session's transport ------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one text frame (``frame`` is UTF-8 JSON); a closed socket drops it."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        connection.write_message(frame).add_done_callback(_retrieve_outcome)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if reason is not None:
            reason = reason.encode()[:_MAX_CLOSE_REASON].decode(errors="ignore")
        super().close(code, reason)
