"""The app server side of the tests: auth endpoints built on the official ``pusher`` SDK.

pusher-js asks an app's own server to sign channel subscriptions and
sign-ins; here that server is a pair of Tornado handlers that call the
official SDK, so the tests prove that our checks accept exactly what the
SDK signs.

Query parameters of the endpoint URL say who the caller is:
``user`` (presence / sign-in user id), ``watch`` (comma-separated watchlist),
``forge=1`` (sign with a wrong secret).
"""

from __future__ import annotations

import base64
import json

import pusher
import tornado.web

from tornado_push.pubsub.apps import App

#: 32 bytes for private-encrypted channels; the server never sees it.
ENCRYPTION_MASTER_KEY = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def sdk_client(app: App, port: int, *, secret: str | None = None) -> pusher.Pusher:
    """The official SDK pointed at a local server."""
    return pusher.Pusher(app_id=app.id, key=app.key, secret=secret or app.secret,
                         host="127.0.0.1", port=port, ssl=False,
                         encryption_master_key_base64=ENCRYPTION_MASTER_KEY)


class _AuthHandler(tornado.web.RequestHandler):
    def initialize(self, app: App) -> None:
        self.app = app

    def signer(self) -> pusher.Pusher:
        forged = self.get_query_argument("forge", "") == "1"
        return sdk_client(self.app, 0, secret="forged-secret" if forged else None)

    def reply(self, payload: dict) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({name: value.decode() if isinstance(value, bytes) else value
                                for name, value in payload.items()}))


class ChannelAuthHandler(_AuthHandler):
    """``channelAuthorization.endpoint``: form body ``socket_id``, ``channel_name``."""

    def post(self) -> None:
        channel = self.get_body_argument("channel_name")
        socket_id = self.get_body_argument("socket_id")
        custom_data = None
        if channel.startswith("presence-"):
            user = self.get_query_argument("user")
            custom_data = {"user_id": user, "user_info": {"name": user.title()}}
        self.reply(self.signer().authenticate(channel, socket_id, custom_data))


class UserAuthHandler(_AuthHandler):
    """``userAuthentication.endpoint``: form body ``socket_id``."""

    def post(self) -> None:
        user_data = {"id": self.get_query_argument("user")}
        watch = self.get_query_argument("watch", "")
        if watch:
            user_data["watchlist"] = watch.split(",")
        self.reply(self.signer().authenticate_user(self.get_body_argument("socket_id"), user_data))


def auth_routes(apps: list[App]) -> list:
    """``/test/{key}/auth`` and ``/test/{key}/user-auth`` for each app."""
    routes = []
    for app in apps:
        routes.append((f"/test/{app.key}/auth", ChannelAuthHandler, {"app": app}))
        routes.append((f"/test/{app.key}/user-auth", UserAuthHandler, {"app": app}))
    return routes
