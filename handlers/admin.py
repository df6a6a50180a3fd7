"""The admin console at ``{prefix}/admin/``: nodes, apps, a debug console and actions.

Off unless ``PUSH_ADMIN_PASSWORD`` is set: then :func:`routes` gives one route
that answers 404 for every admin path. On, every route but the login form,
its stylesheets and the 404 is refused without a session: the page redirects to
the login, the JSON API and the debug feed answer 401. Every action is a POST
that needs the session's CSRF token (``X-CSRF-Token`` header or ``_csrf``
field) and an ``Origin`` equal to the page's own; so does the login, and the
feed's WebSocket handshake checks the cookie and the Origin. Every answer
carries a strict Content-Security-Policy (no inline script or style: the page
is ``static/admin.html`` with ``admin.js``, served here so embedding works and
the policy applies). Logins, refused logins and every action are logged on
the ``tornado_push.admin.audit`` logger, never with the password, a cookie or
a token.

JSON API (under ``{prefix}/admin/api/``)::

    GET  session                       the CSRF token, this node, the apps
    GET  nodes                         every live process's record (pubsub/nodes.py)
    POST nodes/{node}/drain            that process drains as on SIGTERM
    GET  apps                          each app's connections (sum of the node records)
    GET  apps/{id}/channels?prefix=    occupied channels, subscription and user counts
    GET  apps/{id}/members?channel=    a presence channel's members
    POST apps/{id}/events              {"channels", "name", "data"}: publish, as the HTTP API
    POST apps/{id}/terminate           {"user_id"}: close that user's connections everywhere
    GET  apps/{id}/debug?channel=&event=   WebSocket: the debug console's feed (admin_feed.py)

The checks every request goes through are :class:`~.admin_auth.AdminRequest`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import tornado.escape
import tornado.web

from .admin_auth import (COOKIE, CSRF_FIELD, CSRF_HEADER, SESSION_SECONDS, AdminKeys,
                         AdminRequest, LoginThrottle, audit, refusals)
from .admin_feed import FeedHandler
from .metrics import tell_answered
from .api import JsonHandler
from ..pubsub import rest
from ..pubsub.apps import App
from ..pubsub.debug import DebugFeeds, DebugTap
from ..pubsub.errors import ApiError
from ..pubsub.hub import Hub
from ..pubsub.nodes import NodeReporter
from ..pubsub.observe import SOURCE_ADMIN

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
#: Channels one listing returns at most (the page searches by prefix for the rest).
MAX_CHANNELS = 500
#: Admin requests are small; anything larger is refused before it is parsed.
MAX_BODY_BYTES = 64 * 1024
_LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Admin login · tornado-push</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="demo.css">
<link rel="stylesheet" href="admin.css">
</head>
<body>
<header class="bar"><span class="brand">tornado-push admin</span></header>
<main class="login">
  <form class="panel stack" method="post" action="login">
    <h1>Log in</h1>
    <label>Password <input type="password" name="password" autocomplete="current-password"
      autofocus required></label>
    <p class="error" role="alert">{error}</p>
    <button type="submit">Log in</button>
  </form>
</main>
</body>
</html>
"""


class AdminConsole:
    """The admin console of one engine: credentials, the node reporter, the debug console.

    ``drain`` runs this process's graceful stop when the console asks this
    node to drain (``server.py`` gives its SIGTERM path).
    """

    def __init__(self, hub: Hub, password: str, drain: Callable[[], None]) -> None:
        self.hub = hub
        self.keys = AdminKeys(password)
        self.throttle = LoginThrottle()
        self.tap = DebugTap(hub)
        self.feeds = DebugFeeds(hub)
        self._drain = drain
        self.reporter: NodeReporter | None = None

    def start(self, address: str) -> None:
        """Report this node (listening at ``address``, host:port) from now on."""
        self.reporter = NodeReporter(self.hub, address, self._drain)
        self.reporter.start()

    async def close(self) -> None:
        await self.feeds.close()
        if self.reporter is not None:
            await self.reporter.close()


class AdminHandler(AdminRequest, JsonHandler):
    """Refuses, before any method runs: a cross-origin POST (403), a request without
    a session (401, or a redirect for pages), a POST without the session's CSRF token (403).
    Every answer counts in the HTTP metrics as endpoint ``admin``."""

    def on_finish(self) -> None:
        tell_answered(self, self.console.hub, "admin")

    def prepare(self) -> None:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body is over {MAX_BODY_BYTES} bytes")
        posted = self.request.method not in ("GET", "HEAD")
        if posted and not self.same_origin():
            refusals.warning("refused %s %s from %s: Origin %r", self.request.method,
                          self.request.path, self.client, self.request.headers.get("Origin"))
            raise ApiError(403, "Cross-origin request refused")
        if self.public:
            return
        session = self.session_id()
        if session is None:
            return self.refuse_unauthenticated()
        if posted:
            token = (self.request.headers.get(CSRF_HEADER)
                     or self.get_body_argument(CSRF_FIELD, None))
            if not self.console.keys.csrf_matches(session, token):
                refusals.warning("refused %s %s from %s: CSRF token missing or wrong",
                              self.request.method, self.request.path, self.client)
                raise ApiError(403, "CSRF token missing or wrong")

    def refuse_unauthenticated(self) -> None:
        raise ApiError(401, "Log in first")

    def app_named(self, app_id: str) -> App:
        app = self.console.hub.apps.by_id(app_id)
        if app is None:
            raise ApiError(404, f"Unknown app {app_id!r}")
        return app

    def json_body(self) -> dict[str, Any]:
        return rest.load_object(self.request.body)

    def write_html(self, html: str) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)


class NotFoundHandler(AdminHandler):
    """Every admin path no route names, and every admin path while the console is off."""

    public = True

    def initialize(self, console: AdminConsole | None = None, prefix: str = "") -> None:
        pass

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class SlashHandler(AdminHandler):
    """``/admin`` → ``/admin/``."""

    public = True

    def get(self) -> None:
        self.redirect(f"{self.prefix}/admin/")


class StaticHandler(AdminHandler):
    """One file of ``static/``, with the admin's headers (``name``; ``public`` for the
    stylesheets the login form uses)."""

    _TYPES = {".css": "text/css", ".js": "text/javascript", ".html": "text/html"}

    def initialize(self, console: AdminConsole, prefix: str = "", name: str = "",
                   public: bool = False) -> None:
        super().initialize(console, prefix)
        self.name = name
        self.public = public

    def refuse_unauthenticated(self) -> None:
        self.redirect(f"{self.prefix}/admin/login")

    def get(self) -> None:
        body = (STATIC_DIR / self.name).read_bytes()
        self.set_header("Content-Type", f"{self._TYPES[Path(self.name).suffix]}; charset=UTF-8")
        self.finish(body)


class LoginHandler(AdminHandler):
    """``GET`` the form; ``POST`` the password: a session cookie, or 401; 429 while throttled."""

    public = True

    def get(self) -> None:
        self.write_html(_LOGIN_PAGE.format(error=""))

    def post(self) -> None:
        keys, throttle = self.console.keys, self.console.throttle
        wait = throttle.wait(self.client)
        if wait > 0:
            refusals.warning("login refused from %s: throttled for %.0f s", self.client, wait)
            self.set_status(429)
            self.set_header("Retry-After", str(int(wait) + 1))
            return self.write_html(_LOGIN_PAGE.format(error=tornado.escape.xhtml_escape(
                f"Too many failed logins: try again in {int(wait) + 1} s")))
        if not keys.password_matches(self.get_body_argument("password", "")):
            throttle.failed(self.client)
            refusals.warning("login failed from %s", self.client)
            self.set_status(401)
            return self.write_html(_LOGIN_PAGE.format(error="Wrong password"))
        throttle.succeeded(self.client)
        self.set_cookie(COOKIE, keys.new_session(), path=self.cookie_path, max_age=SESSION_SECONDS,
                        httponly=True, samesite="Strict", secure=self.request.protocol == "https")
        audit.info("login from %s", self.client)
        self.redirect(f"{self.prefix}/admin/", status=303)


class LogoutHandler(AdminHandler):
    """``POST``: forget the session cookie in this browser."""

    def post(self) -> None:
        self.clear_cookie(COOKIE, path=self.cookie_path)
        audit.info("logout from %s", self.client)
        self.write_json({})


class SessionHandler(AdminHandler):
    def get(self) -> None:
        session = self.session_id()
        assert session is not None, "prepare() refused requests without one"
        hub = self.console.hub
        self.write_json({"csrf": self.console.keys.csrf_token(session), "node": hub.node_id,
                         "apps": [app.id for app in hub.apps]})


class NodesHandler(AdminHandler):
    async def get(self) -> None:
        nodes = await self.console.hub.state.nodes()
        self.write_json({"node": self.console.hub.node_id,
                         "nodes": [nodes[node] for node in sorted(nodes)]})


class DrainHandler(AdminHandler):
    async def post(self, node: str) -> None:
        node_id = int(node)
        if node_id not in await self.console.hub.state.nodes():
            raise ApiError(404, f"No live node {node_id}")
        assert self.console.reporter is not None, "the console reports once started"
        await self.console.reporter.request_drain(node_id)
        audit.warning("drain of node %d asked by %s", node_id, self.client)
        self.write_json({})


class AppsHandler(AdminHandler):
    async def get(self) -> None:
        hub = self.console.hub
        nodes = (await hub.state.nodes()).values()
        self.write_json({"apps": [
            {"id": app.id, "key": app.key, "enabled": app.enabled,
             "connections": sum(record.get("apps", {}).get(app.id, 0) for record in nodes)}
            for app in hub.apps]})


class ChannelsHandler(AdminHandler):
    async def get(self, app_id: str) -> None:
        app = self.app_named(app_id)
        prefix = self.get_query_argument("prefix", "")
        channels = await self.console.hub.queries.occupied_channels(app, prefix)
        names = sorted(channels)
        self.write_json({"total": len(names), "channels": [
            {"name": name, **channels[name]} for name in names[:MAX_CHANNELS]]})


class MembersHandler(AdminHandler):
    async def get(self, app_id: str) -> None:
        app = self.app_named(app_id)
        channel = rest.check_channel(self.get_query_argument("channel", ""))
        members = await self.console.hub.state.members(app.id, channel)
        self.write_json({"members": [{"user_id": user, "user_info": info}
                                     for user, info in sorted(members.items())]})


class EventHandler(AdminHandler):
    """The event creator: publishes as ``POST /apps/{id}/events`` would (same validation)."""

    async def post(self, app_id: str) -> None:
        app = self.app_named(app_id)
        trigger = rest.parse_trigger(app, self.json_body(), multi_channel=True)
        await self.console.hub.trigger(app, trigger.channels, trigger.event, trigger.data,
                                       trigger.socket_id, source=SOURCE_ADMIN)
        audit.info("event %r published on app %s channel(s) %s (%d bytes of data) by %s",
                   trigger.event, app.id, ",".join(trigger.channels), len(trigger.data),
                   self.client)
        self.write_json({})


class TerminateHandler(AdminHandler):
    async def post(self, app_id: str) -> None:
        app = self.app_named(app_id)
        user_id = self.json_body().get("user_id")
        if not isinstance(user_id, str):
            raise ApiError(400, "user_id must be a string")
        await self.console.hub.users.terminate(app, rest.check_user_id(user_id))
        audit.warning("connections of user %r of app %s terminated by %s", user_id, app.id,
                      self.client)
        self.write_json({})


_APP = r"(?P<app_id>[^/]+)"


def routes(console: AdminConsole | None,
           prefix: str = "") -> list[tuple[str, type, dict[str, Any]]]:
    """The admin console's routes under ``{prefix}/admin``; with no ``console`` (no
    password set), one route that answers 404 for every admin path."""
    at = re.escape(prefix) + "/admin"
    if console is None:
        return [(rf"{at}(?:/.*)?", NotFoundHandler, {})]
    context = {"console": console, "prefix": prefix}
    return [
        (rf"{at}", SlashHandler, context),
        (rf"{at}/", StaticHandler, {**context, "name": "admin.html"}),  # else the login form
        (rf"{at}/login", LoginHandler, context),
        (rf"{at}/logout", LogoutHandler, context),
        (rf"{at}/demo\.css", StaticHandler, {**context, "name": "demo.css", "public": True}),
        (rf"{at}/admin\.css", StaticHandler, {**context, "name": "admin.css", "public": True}),
        (rf"{at}/admin\.js", StaticHandler, {**context, "name": "admin.js"}),
        (rf"{at}/api/session", SessionHandler, context),
        (rf"{at}/api/nodes", NodesHandler, context),
        (rf"{at}/api/nodes/(?P<node>[0-9]+)/drain", DrainHandler, context),
        (rf"{at}/api/apps", AppsHandler, context),
        (rf"{at}/api/apps/{_APP}/channels", ChannelsHandler, context),
        (rf"{at}/api/apps/{_APP}/members", MembersHandler, context),
        (rf"{at}/api/apps/{_APP}/events", EventHandler, context),
        (rf"{at}/api/apps/{_APP}/terminate", TerminateHandler, context),
        (rf"{at}/api/apps/{_APP}/debug", FeedHandler, context),
        (rf"{at}/.*", NotFoundHandler, {}),
    ]
