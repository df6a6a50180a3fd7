"""Push inside a host Tornado app: mount the routes, run the engine, publish, sign auth.

::

    from tornado_push import App, Push, PushHTTPServer

    push = Push(apps=[App(id="1", key="app-key", secret=SECRET)], redis_url=None)
    application = tornado.web.Application(my_routes + push.routes())
    await push.start()
    # Publishes answered faster than by app.listen; slow or silent clients cut off.
    PushHTTPServer(application, timeouts=push.settings.http_timeouts).listen(8888)
    ...
    await push.trigger("presence-room", "message", {"text": "hi"}, exclude=socket_id)
    self.write(push.authorize_channel(socket_id, channel, user_id=user, user_info={...}))
    ...
    await push.close()

``server.py`` runs the standalone server through this same class, so both
compose the engine (:func:`make_hub`) in one place.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import time
from typing import Any, Callable, Iterable

import tornado
import tornado.httpclient

from .handlers import admin, routes
from .handlers.health import InFlightRequests
from .pubsub import protocol, rest, text
from .pubsub.apps import App, AppChanges, AppRegistry
from .pubsub.errors import ApiError, PushError
from .pubsub.history import HistoryStore, MemoryHistoryStore
from .pubsub.history.redis import RedisHistoryStore
from .pubsub.hub import Hub
from .pubsub.metrics import Metrics
from .pubsub.redis.broker import RedisBroker
from .pubsub.redis.client import connect
from .pubsub.redis.state import RedisState
from .pubsub.session import parse_member, parse_user
from .pubsub.signing import auth_token, channel_auth_message, sse_token, user_auth_message
from .pubsub.webhooks import Poster, Webhooks
from .settings import Settings, load_settings

log = logging.getLogger(__name__)

#: The version of a checkout, which is not installed: pyproject.toml's, kept equal to it.
CHECKOUT_VERSION = "0.1.0"


def version() -> str:
    """This server's version: the installed package's, else the checkout's."""
    try:
        return importlib.metadata.version("tornado-push")
    except importlib.metadata.PackageNotFoundError:
        return CHECKOUT_VERSION


class TriggerRefused(ValueError):
    """:meth:`Push.trigger` refused the event; ``status`` is what the HTTP API would answer.

    400 for an invalid channel or event name, too many channels, a bad
    ``exclude`` or text UTF-8 cannot carry (a lone surrogate); 413 for data
    over the app's ``max_event_bytes``; 403 for a disabled app.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def make_poster(timeout: float) -> Poster:
    """Webhook POSTs with Tornado's HTTP client: the status, or OSError when there is none."""

    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        # The client is per IOLoop, so look it up on the loop that posts.
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            response = await client.fetch(url, method="POST", body=body, headers=headers,
                                          request_timeout=timeout, follow_redirects=False,
                                          raise_error=False)
        except tornado.httpclient.HTTPClientError as error:  # timeouts: 599, no response
            raise OSError(f"{url}: {error}") from error
        return response.code

    return post


def make_hub(settings: Settings, history: HistoryStore | None = None) -> Hub:
    """The engine for these settings: in-process by default, Redis when configured;
    history in ``history`` when given, else where the settings say."""
    webhooks = Webhooks(make_poster(settings.webhooks.timeout), options=settings.webhooks)
    apps = AppRegistry(settings.apps)
    if history is None:
        history = make_history_store(settings)
    if settings.redis is None:
        return Hub(apps, options=settings.hub, webhooks=webhooks, history=history)
    broker = RedisBroker(settings.redis)
    state = RedisState(connect(settings.redis), prefix=settings.redis.prefix,
                       heartbeat_interval=settings.redis.heartbeat_interval,
                       sharded_pubsub=settings.redis.cluster)
    hub = Hub(apps, broker=broker, state=state, options=settings.hub, webhooks=webhooks,
              history=history)
    # Redis may have restarted empty: put this process's connections back.
    broker.add_reconnect_listener(hub.register_again)
    # Pub/sub dropped what was published meanwhile: history channels read it from the store.
    broker.add_reconnect_listener(hub.resync_history)
    return hub


def make_history_store(settings: Settings) -> HistoryStore:
    """Where history lives: MongoDB when configured, else Redis when configured, else memory."""
    if settings.mongo_url is not None:
        # Imported only when configured: motor and pymongo take ~0.13 s to import.
        from .pubsub.history.mongo import MongoHistoryStore

        return MongoHistoryStore(settings.mongo_url, database_name=settings.mongo_database)
    if settings.redis is not None:
        return RedisHistoryStore(connect(settings.redis), prefix=settings.redis.prefix)
    return MemoryHistoryStore()


class Push:
    """The push server as a part of a host Tornado app.

    ``Push(apps=[...], redis_url=...)`` configures it from arguments;
    :meth:`from_settings` takes a :class:`~tornado_push.settings.Settings`
    (``Push.from_settings(load_settings())`` reads the same ``PUSH_*``
    environment as ``server.py``).
    """

    settings: Settings
    hub: Hub
    in_flight: InFlightRequests
    #: This process's Prometheus metrics (``/metrics``); None with ``PUSH_METRICS=0``.
    metrics: Metrics | None

    def __init__(self, apps: Iterable[App] | None = None, *, redis_url: str | None = None,
                 history: HistoryStore | None = None, **settings: Any) -> None:
        """``apps`` default to the one default app (id ``1``, key ``app-key``, secret
        ``app-secret``); ``redis_url`` joins a cluster through Redis (validated as
        ``PUSH_REDIS_URL`` is); ``history`` is where history channels keep their
        messages, e.g. ``MongoHistoryStore(database=the_hosts_own_database)``
        (default: MongoDB if ``mongo_url`` is set, else Redis if configured, else
        memory); ``settings`` set any other field of ``Settings``.
        Raises :class:`~tornado_push.settings.SettingsError` (a ``ValueError``).
        """
        environ = {} if redis_url is None else {"PUSH_REDIS_URL": redis_url}
        chosen = None if apps is None else tuple(apps)
        configured = load_settings(environ, apps=chosen, **settings)
        self._compose(configured, None if history is None else make_hub(configured, history))

    @classmethod
    def from_settings(cls, settings: Settings, hub: Hub | None = None) -> Push:
        """Push configured by ``settings`` as they are (``load_settings`` validates them),
        on ``hub`` when given (an engine the caller built, e.g. with its own broker)."""
        push = cls.__new__(cls)
        push._compose(settings, hub)
        return push

    def _compose(self, settings: Settings, hub: Hub | None = None) -> None:
        if not settings.apps:
            raise ValueError("Push needs at least one app")
        self.settings = settings
        self.hub = hub if hub is not None else make_hub(settings)
        self.in_flight = InFlightRequests()
        #: Called when the admin console asks this process to drain; ``server.py`` sets its
        #: SIGTERM path. Unset, the hub drains (:meth:`Hub.drain`) and the host decides the rest.
        self.on_drain_request: Callable[[], None] | None = None
        self.admin = (admin.AdminConsole(self.hub, settings.admin_password, self._drain_requested)
                      if settings.admin_password else None)
        self.metrics = (Metrics(self.hub, version=version(), tornado=tornado.version)
                        if settings.metrics else None)

    # -- the host's Application ------------------------------------------------------

    def routes(self, prefix: str = "") -> list[tuple[str, type, dict[str, Any]]]:
        """Routes for the host's ``Application``: ``{prefix}/app/{key}`` (WebSocket),
        ``{prefix}/pusher/app/{key}/...`` (pusher-js's HTTP fallbacks, docs/fallbacks.md),
        ``{prefix}/app/{key}/sse`` (Server-Sent Events, docs/fallbacks.md),
        ``{prefix}/apps/{id}/...`` (HTTP API), ``{prefix}/health``, ``{prefix}/ready``,
        unless metrics are off ``{prefix}/metrics`` (this process's, for Prometheus), and
        ``{prefix}/admin/`` (the admin console; 404 unless ``admin_password`` is set).

        With a ``prefix`` such as ``"/push"``, pusher-js connects with
        ``wsPath: "/push"``; the HTTP API checks signatures over the
        standard ``/apps/{id}/...`` path, the one the SDKs sign.
        """
        engine = routes(self.hub, self.in_flight, prefix=prefix,
                        compression=self.settings.websocket_compression,
                        max_message_bytes=self.settings.max_message_bytes, metrics=self.metrics,
                        fallback=self.settings.fallback)
        return engine + admin.routes(self.admin, prefix)

    async def start(self, *, address: str | None = None) -> None:
        """Start the engine on the running loop (joins the Redis cluster when configured).

        ``address`` is the host:port this process listens on, shown in the admin
        console's nodes table (default: the settings' host and port).
        """
        await self.hub.start()
        if self.admin is not None:
            self.admin.start(address or f"{self.settings.host}:{self.settings.port}")
        if self.metrics is not None:
            self.metrics.start()
        if self.settings.uses_default_secret:
            log.warning("an app uses the well-known default secret: give it its own "
                        "(PUSH_APP_SECRET for server.py) in production")

    async def close(self, grace: float = 0.0) -> None:
        """Close every client with 4200 (pusher-js reconnects at once), let HTTP API
        requests in flight finish, then stop the engine.

        Departures wait ``grace`` seconds, so that a user who reconnects to
        another process of the cluster meanwhile is never seen to leave.
        """
        self.hub.drain(grace)
        await self.in_flight.idle()
        if self.admin is not None:
            await self.admin.close()
        await self.hub.close()  # waits for the held departures
        if self.metrics is not None:
            self.metrics.close()

    def _drain_requested(self) -> None:
        if self.on_drain_request is not None:
            self.on_drain_request()
        else:
            self.hub.drain(self.settings.drain_grace)

    def reload_apps(self, apps: Iterable[App]) -> AppChanges:
        """Serve ``apps`` instead of the current ones, without a restart: new apps at once,
        a changed app's options for new requests and connections, a removed or now
        disabled app's connections closed (4001, 4003); the others untouched. Raises
        ``ValueError`` (no apps, a duplicate id or key) with nothing changed."""
        apps = tuple(apps)
        if not apps:
            raise ValueError("Push needs at least one app")
        changes = self.hub.reload_apps(apps)
        self.settings = dataclasses.replace(self.settings, apps=apps)
        return changes

    def app(self, app_id: str | None = None) -> App:
        """The app with ``app_id``, by default the first one; ``LookupError`` if none."""
        if app_id is None:
            return self.settings.apps[0]
        app = self.hub.apps.by_id(app_id)
        if app is None:
            raise LookupError(f"No app with id {app_id!r}")
        return app

    # -- publishing ------------------------------------------------------------------

    async def trigger(self, channels: str | Iterable[str], event: str, data: Any, *,
                      exclude: str | None = None, app_id: str | None = None) -> None:
        """Publish ``event`` on each channel, as ``POST /apps/{id}/events`` does.

        ``data`` is sent as it is when a string, else as JSON. ``exclude`` is
        a socket id (the sender's, from the request) that does not receive it.
        Returns once the event is handed to the broker; raises
        :class:`TriggerRefused` for an invalid event, ``LookupError`` for an
        unknown ``app_id`` and :class:`~tornado_push.pubsub.errors.BrokerUnavailable`
        while Redis cannot be reached.
        """
        app = self.app(app_id)
        if not app.enabled:
            raise TriggerRefused("App is disabled", 403)
        names = [channels] if isinstance(channels, str) else list(channels)
        body = {"channels": names, "name": event, "data": protocol.data_string(data),
                "socket_id": exclude}
        try:
            # The host's strings arrive here, not through text.loads: check them as it would.
            if isinstance(event, str):
                text.check_string(event)
            text.check_string(body["data"])
            checked = rest.parse_trigger(app, body, multi_channel=True)
        except text.InvalidText as error:
            raise TriggerRefused(error.message, 400) from None
        except ApiError as error:
            raise TriggerRefused(error.message, error.status) from None
        await self.hub.trigger(app, checked.channels, checked.event, checked.data,
                               checked.socket_id)

    # -- authorization ---------------------------------------------------------------

    def authorize_channel(self, socket_id: str, channel: str, *, user_id: str | int | None = None,
                          user_info: Any = None, app_id: str | None = None) -> dict[str, str]:
        """The answer to pusher-js's channel authorization request, as the official SDKs
        build it (``pusher.authenticate``): ``{"auth"}``, plus ``"channel_data"`` on
        presence channels, which need ``user_id`` (and may have ``user_info``).
        A private channel signs no member, so one auth handler can pass the
        user to both kinds.

        Raises ``ValueError`` naming what is wrong: a socket id not like
        ``123.456``, an invalid or public channel name, a presence member the
        server would refuse. ``private-encrypted-`` channels need the official
        SDK with the encryption master key, which this server never holds.
        """
        app = self.app(app_id)
        _check_socket_id(socket_id)
        kind = protocol.channel_kind(_checked(rest.check_channel, channel))
        if kind.encrypted:
            raise ValueError(f"{channel}: sign encrypted channels with the official SDK and "
                             "your encryption master key")
        if not kind.authorized:
            raise ValueError(f"{channel} is public: only private- and presence- channels "
                             "are authorized")
        if not kind.presence:
            return {"auth": auth_token(app, channel_auth_message(socket_id, channel))}
        if user_id is None:
            raise ValueError(f"{channel} is a presence channel: give the user_id")
        member: dict[str, Any] = {"user_id": user_id}
        if user_info is not None:
            member["user_info"] = user_info
        channel_data = json.dumps(member)  # written as the SDKs write it
        _checked(parse_member, app, channel_data)
        return {"auth": auth_token(app, channel_auth_message(socket_id, channel, channel_data)),
                "channel_data": channel_data}

    def authorize_sse(self, channels: Iterable[str], *, expires_in: float = 600,
                      user_id: str | int | None = None,
                      app_id: str | None = None) -> dict[str, str]:
        """The query parameters of an SSE stream (``{prefix}/app/{key}/sse``) over
        ``channels``: ``{"channels", "token"}``, plus ``"user_id"`` for presence channels.
        URL-encode them onto the stream's URL (``urllib.parse.urlencode``).

        The token signs the channels, the user and an expiry ``expires_in`` seconds from
        now; it is checked when the stream connects, and so on each of the browser's
        reconnects, which fail (403) once it has expired: give a page a fresh URL then.
        Raises ``ValueError`` for an invalid channel name or a presence channel without
        ``user_id``.
        """
        app = self.app(app_id)
        names = [_checked(rest.check_channel, name) for name in channels]
        if not names:
            raise ValueError("name at least one channel")
        if user_id is None and any(protocol.channel_kind(n).presence for n in names):
            raise ValueError("presence channels need the user_id")
        listed = ",".join(names)
        user = None if user_id is None else str(user_id)
        query = {"channels": listed,
                 "token": sse_token(app, listed, int(time.time() + expires_in), user)}
        if user is not None:
            query["user_id"] = user
        return query

    def authenticate_user(self, socket_id: str, user_id: str, *, user_info: Any = None,
                          watchlist: Iterable[str] | None = None,
                          app_id: str | None = None) -> dict[str, str]:
        """The answer to pusher-js's user sign-in request (``pusher.signin()``), as the
        official SDKs build it (``pusher.authenticate_user``): ``{"auth", "user_data"}``.

        Raises ``ValueError`` for a socket id not like ``123.456``, a user id
        or watchlist the server would refuse.
        """
        app = self.app(app_id)
        _check_socket_id(socket_id)
        user: dict[str, Any] = {"id": user_id}
        if user_info is not None:
            user["user_info"] = user_info
        if watchlist is not None:
            user["watchlist"] = list(watchlist)
        user_data = json.dumps(user)  # written as the SDKs write it
        _checked(parse_user, app, user_data)
        return {"auth": auth_token(app, user_auth_message(socket_id, user_data)),
                "user_data": user_data}


def _check_socket_id(socket_id: Any) -> None:
    if not protocol.is_valid_socket_id(socket_id):
        raise ValueError(f"socket_id must look like '123.456', got {socket_id!r}")


def _checked(check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, its refusal raised as a ``ValueError`` with the same message."""
    try:
        return check(*args)
    except PushError as refusal:
        raise ValueError(refusal.message) from None
