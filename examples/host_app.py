"""A complete host app with push embedded: its own login, a presence chat room.

    python examples/host_app.py --port 8888      # then open http://127.0.0.1:8888/

What it shows (see docs/embedding.md):
- push's routes mounted next to the app's own, at the standard paths
  (``/app/{key}`` for pusher-js, ``/apps/{id}/...`` for the server SDKs);
- its own login: a form POST sets a signed cookie, ``get_current_user`` reads it;
- ``/pusher/auth`` authorizes the presence channel for the logged-in user
  with ``push.authorize_channel``;
- ``/say`` publishes with ``await push.trigger(...)``, excluding the sender's
  socket (the page shows its own message at once).

Push is configured from the ``PUSH_*`` environment, as ``server.py`` is
(``PUSH_REDIS_URL`` joins a cluster of push servers). With the package
installed (``pip install .``) it imports ``tornado_push``; run from a checkout
without it, it loads the checkout as ``tornado_push`` through ``checkout.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import re
import secrets
import signal
from pathlib import Path

try:
    import tornado_push  # noqa: F401 -- installed
except ImportError:  # a checkout: load it by path, so its modules never shadow an app's own
    _spec = importlib.util.spec_from_file_location(
        "checkout", Path(__file__).resolve().parent.parent / "checkout.py")
    _checkout = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_checkout)
    _checkout.load()

import tornado.escape
import tornado.template
import tornado.web

from tornado_push import Push, PushHTTPServer, load_settings

log = logging.getLogger("host_app")
LOBBY = "presence-lobby"
USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")

LOGIN_PAGE = tornado.template.Template("""<!doctype html>
<title>Log in</title>
<form method="post" action="/login">{% raw xsrf_form_html() %}
  <label>Name <input name="name" pattern="[A-Za-z0-9_-]{1,32}" required autofocus></label>
  <button>Log in</button> {{ error }}
</form>""")

ROOM_PAGE = tornado.template.Template("""<!doctype html>
<title>Lobby</title>
<p>Logged in as <b>{{ user }}</b>. <form method="post" action="/logout" style="display:inline">
  {% raw xsrf_form_html() %}<button>Log out</button></form></p>
<p>Here: <span id="members"></span></p>
<ul id="messages"></ul>
<form id="say"><input id="text" autocomplete="off" required><button>Send</button></form>
<script src="https://js.pusher.com/8.4.0/pusher.min.js"></script>
<script>
const xsrf = {{ json_encode(xsrf) }};
const pusher = new Pusher({{ json_encode(key) }}, {
  wsHost: location.hostname, wsPort: location.port || 80, wssPort: location.port || 443,
  forceTLS: location.protocol === "https:", enabledTransports: ["ws", "wss"], cluster: "mt1",
  channelAuthorization: {endpoint: "/pusher/auth", headers: {"X-XSRFToken": xsrf}},
});
const lobby = pusher.subscribe({{ json_encode(lobby) }});
const members = () => {
  const names = [];
  lobby.members.each((member) => names.push(member.info.name));
  document.getElementById("members").textContent = names.join(", ");
};
const show = (message) => {
  const item = document.createElement("li");
  item.textContent = `${message.from}: ${message.text}`;
  document.getElementById("messages").append(item);
};
lobby.bind("pusher:subscription_succeeded", members);
lobby.bind("pusher:member_added", members);
lobby.bind("pusher:member_removed", members);
lobby.bind("message", show);
document.getElementById("say").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  show({from: {{ json_encode(user) }}, text: text.value});  // the server excludes this socket
  await fetch("/say", {method: "POST", headers: {"X-XSRFToken": xsrf},
                       body: new URLSearchParams({text: text.value,
                                                  socket_id: pusher.connection.socket_id})});
  text.value = "";
});
</script>""")


class BaseHandler(tornado.web.RequestHandler):
    """The app's own handlers: the user comes from its signed login cookie."""

    def initialize(self, push: Push) -> None:
        self.push = push

    def get_current_user(self) -> str | None:
        user = self.get_signed_cookie("user")
        return user.decode() if user else None


class RoomHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        self.finish(ROOM_PAGE.generate(user=self.current_user, key=self.push.app().key,
                                       lobby=LOBBY, xsrf=self.xsrf_token.decode(),
                                       json_encode=tornado.escape.json_encode,
                                       xsrf_form_html=self.xsrf_form_html))


class LoginHandler(BaseHandler):
    def get(self, error: str = "") -> None:
        self.finish(LOGIN_PAGE.generate(error=error, xsrf_form_html=self.xsrf_form_html))

    def post(self) -> None:
        name = self.get_body_argument("name", "").strip()
        if not USER_NAME.fullmatch(name):
            self.set_status(400)
            return self.get("Use 1 to 32 letters, digits, - or _.")
        self.set_signed_cookie("user", name, httponly=True, samesite="Lax")
        self.redirect("/")


class LogoutHandler(BaseHandler):
    def post(self) -> None:
        self.clear_cookie("user")
        self.redirect("/login")


class ChannelAuthHandler(BaseHandler):
    """pusher-js's channel authorization: the lobby, for whoever is logged in."""

    @tornado.web.authenticated
    def post(self) -> None:
        channel = self.get_body_argument("channel_name")
        if channel != LOBBY:
            raise tornado.web.HTTPError(403, f"no access to {channel}")
        try:
            self.write(self.push.authorize_channel(
                self.get_body_argument("socket_id"), channel,
                user_id=self.current_user, user_info={"name": self.current_user}))
        except ValueError as error:
            raise tornado.web.HTTPError(400, str(error)) from None


class SayHandler(BaseHandler):
    """Publish the user's message to the lobby; the sending socket already shows it."""

    @tornado.web.authenticated
    async def post(self) -> None:
        text = self.get_body_argument("text").strip()[:500]
        if text:
            await self.push.trigger(LOBBY, "message", {"from": self.current_user, "text": text},
                                    exclude=self.get_body_argument("socket_id", None) or None)
        self.write({})


def make_application(push: Push, cookie_secret: str) -> tornado.web.Application:
    """The app's own routes, then push's at the standard paths."""
    own = {"push": push}
    return tornado.web.Application([
        (r"/", RoomHandler, own),
        (r"/login", LoginHandler, own),
        (r"/logout", LogoutHandler, own),
        (r"/pusher/auth", ChannelAuthHandler, own),
        (r"/say", SayHandler, own),
    ] + push.routes(), cookie_secret=cookie_secret, login_url="/login", xsrf_cookies=True)


async def serve(host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM, then close push's clients and stop."""
    push = Push.from_settings(load_settings())
    await push.start()
    # A fresh secret per start: logins end with the process. Keep a fixed one in production.
    # PushHTTPServer answers the SDKs' publishes before Tornado parses them; the
    # rest (this app's own pages included) is Tornado's. application.listen works too.
    server = PushHTTPServer(make_application(push, secrets.token_hex(32)),
                            timeouts=push.settings.http_timeouts)
    server.listen(port, address=host)
    log.info("host app listening on http://%s:%d", host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()
    server.stop()
    await push.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A Tornado app with push embedded")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
