"""A host app's own handlers, for the embedding tests: users from a bearer token,
channel authorization and publishing through push.

test_embedding.py mounts them in-process. test_installed_package.py copies
this file as the ``handlers`` package of a host app run on the installed
package, so it imports nothing but Tornado and ``tornado_push``.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from tornado_push import Push

ROOM = "presence-room"


def bearer_token(cookie_secret: str, user: str) -> str:
    """The host's credential for ``user``: a Tornado signed value, as its cookies are.
    (pusher-js in Node may not send cookies, so it goes in an Authorization header.)"""
    return tornado.web.create_signed_value(cookie_secret, "user", user).decode()


class HostHandler(tornado.web.RequestHandler):
    """A host handler: its user comes from the host's own login, never from push."""

    def initialize(self, push: Push, cookie_secret: str, user_info: dict[str, str]) -> None:
        self.push = push
        self.cookie_secret = cookie_secret
        self.user_info = user_info

    def get_current_user(self) -> str | None:
        scheme, _, credential = self.request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer":
            return None
        user = tornado.web.decode_signed_value(self.cookie_secret, "user", credential)
        return user.decode() if user else None

    def prepare(self) -> None:
        if self.current_user is None:
            raise tornado.web.HTTPError(403)

    def check_xsrf_cookie(self) -> None:
        """None: a bearer token is no ambient credential a forged form could send."""


class ChannelAuthHandler(HostHandler):
    """Authorizes any channel for the user, named after it on presence channels."""

    def post(self) -> None:
        self.write(self.push.authorize_channel(
            self.get_body_argument("socket_id"), self.get_body_argument("channel_name"),
            user_id=self.current_user,
            user_info={"name": self.current_user.title(), **self.user_info}))


class SayHandler(HostHandler):
    """Publishes the user's message to the room, except to the socket that sent it."""

    async def post(self) -> None:
        await self.push.trigger(ROOM, "message",
                                {"from": self.current_user, "text": self.get_body_argument("text")},
                                exclude=self.get_body_argument("socket_id", None))
        self.write({})


def routes(push: Push, cookie_secret: str, **user_info: str) -> list[tuple[str, type, dict[str, Any]]]:
    """``/pusher/auth`` and ``/say``; ``user_info`` is added to each member's info."""
    context = {"push": push, "cookie_secret": cookie_secret, "user_info": user_info}
    return [(r"/pusher/auth", ChannelAuthHandler, context), (r"/say", SayHandler, context)]
