"""All configuration, read once at start from the environment (and flags).

Nothing else in the project reads the environment: :func:`load_settings`
builds one :class:`Settings` and everything receives what it needs from it.
An invalid value raises :class:`SettingsError` naming the setting.

Environment:
    PUSH_HOST, PUSH_PORT            where to listen (default 127.0.0.1:6001)
    PUSH_APP_ID, PUSH_APP_KEY,      the default app (default 1, app-key, app-secret);
    PUSH_APP_SECRET                 ids are digits, as the official SDKs require
    PUSH_APP_CLIENT_EVENTS          client events on the default app (default true)
    PUSH_APP_WEBHOOKS               comma-separated http(s) URLs that receive every webhook
                                    of the default app (default none)
    PUSH_APP_SUBSCRIPTION_COUNT     subscription_count events and webhooks on the default app
                                    (default false)
    PUSH_APP_HISTORY_CHANNELS       comma-separated glob patterns (fnmatch, e.g. presence-chat-*)
                                    of the default app's channels that keep history, with
                                    offsets and resume (default none: no history; with
                                    PUSH_DEMO on, presence-chat-*, the demo's chat rooms)
    PUSH_APP_HISTORY_SIZE           messages kept per history channel (default 100)
    PUSH_APP_HISTORY_TTL            seconds a history message is kept (default 3600)
    PUSH_APP_HISTORY_CLIENT_EVENTS  keep and number client events on history channels too
                                    (default false: they pass live only, like typing indicators)
    PUSH_APP_ALLOWED_ORIGINS        comma-separated page origins that may connect to the default
                                    app: exact (https://app.example.com; scheme and host in any
                                    case, default ports optional) or subdomain wildcards
                                    (https://*.example.com, not the apex); others are refused with
                                    4009 (default *: any origin)
    PUSH_APP_ALLOW_MISSING_ORIGIN   connections without an Origin header (server-side clients,
                                    mobile SDKs) may connect to the default app (default true)
    PUSH_DEFAULT_APP                false: no default app (then PUSH_APPS_FILE must give apps)
    PUSH_APPS_FILE                  JSON list of more apps, each {"id", "key", "secret", options...};
                                    "webhooks" lists URLs or {"url", "event_types": [...],
                                    "channel_name_starts_with", "channel_name_ends_with"};
                                    "history_channels" lists glob patterns, with
                                    "history_size" and "history_ttl" as above;
                                    "allowed_origins" lists origins as PUSH_APP_ALLOWED_ORIGINS
                                    does, with "allow_missing_origin"; read again on SIGHUP
                                    (server.py's reload_apps, supervisor/reload.sh)
    PUSH_ACTIVITY_TIMEOUT           seconds of silence before the server pings (default 120)
    PUSH_PONG_TIMEOUT               seconds to answer that ping before close 4201 (default 30)
    PUSH_MAX_CONNECTIONS            connections per process, 4100 beyond (default 0: no limit)
    PUSH_MAX_INBOUND_RATE           messages per second per connection (default 100)
    PUSH_MAX_OUTBOUND_DELAY         seconds what a client is sent may wait unread in the server's
                                    buffer (its kernel buffers full) before it is closed 4100 as
                                    a slow consumer, however little it is: closed 1 to 1.5 times
                                    this after (default 10); an app's max_outbound_bytes (1 MiB
                                    by default) bounds the bytes meanwhile
    PUSH_MAX_MESSAGE_BYTES          largest WebSocket message; larger closes 1009 (default 65536)
    PUSH_MAX_BODY_BYTES             largest HTTP API body (default 1048576)
    PUSH_HTTP_IDLE_TIMEOUT          seconds a connection may wait before the first byte of a
                                    request, once accepted or answered (default 5; connections
                                    Tornado serves, TLS ones among them, wait idle + header)
    PUSH_HTTP_HEADER_TIMEOUT        a request's line and headers must be complete within idle +
                                    this many seconds of that start (default 10); covers
                                    WebSocket handshakes
    PUSH_HTTP_BODY_TIMEOUT          seconds a request's body may take after its head (default 30);
                                    past any of these the connection is closed (see
                                    handlers.front.HTTPTimeouts)
    PUSH_HTTP_FALLBACK_DISCONNECT_TIMEOUT
                                    seconds a pusher-js HTTP fallback session (xhr_streaming,
                                    xhr_polling) lives with no receive request open before it
                                    is closed as gone (default 10; docs/fallbacks.md)
    PUSH_HTTP_FALLBACK_MAX_SESSIONS HTTP fallback sessions per process, closed ones awaiting
                                    expiry included; beyond, new ones get 503 (default 10000)
    PUSH_HTTP_FALLBACK_MAX_SESSIONS_PER_IP
                                    of those, the most one client address may hold; beyond,
                                    its new ones get 429 (default 1000)
    PUSH_HTTP_FALLBACK_HOSTNAME     this process's own host name: HTTP fallback clients send the
                                    rest of a session's requests to it, so sessions need no
                                    sticky routing (default empty: not sent)
    PUSH_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (default INFO)
    PUSH_LOG_FORMAT                 text, or json: one JSON object per line with app, socket_id
                                    and channel where known (default text; pubsub/logjson.py)
    PUSH_MAX_CONNECTIONS_PER_IP     connections per client address per process, 4004 beyond
                                    (default 0: no limit)
    PUSH_XHEADERS                   trust X-Real-IP / X-Forwarded-For from a proxy in front
                                    (nginx): client addresses come from them (default false)
    PUSH_TLS_CERT, PUSH_TLS_KEY     serve wss:// and https:// directly (PEM files; both or none)
    PUSH_DRAIN_GRACE                on SIGTERM, seconds a closed client's presence is kept so
                                    that reconnecting elsewhere shows no leave (default 5)
    PUSH_DRAIN_TIMEOUT              on SIGTERM, seconds the whole drain may take (default 10)
    PUSH_WEBSOCKET_COMPRESSION      offer permessage-deflate; such connections leave the
                                    frame-once broadcast path (default false)
    PUSH_GC_THRESHOLD               allocations between young garbage collections (default
                                    20000; Python's own is 700, 0 keeps it): see server.py
    PUSH_WEBHOOK_BATCH_SECONDS      seconds that collect webhook events into one POST (default 0.25)
    PUSH_WEBHOOK_LEAVE_DELAY        seconds channel_vacated and member_removed wait, dropped
                                    if the channel or user is back meanwhile (default 3); any
                                    of the four occupancy and member events is also dropped if
                                    the cluster state no longer bears it out when it is posted
    PUSH_WEBHOOK_RETRY_FOR          seconds a failed webhook batch is retried (default 300)
    PUSH_WEBHOOK_QUEUE_SIZE         webhook events waiting per URL; beyond, the oldest are
                                    dropped (default 10000)
    PUSH_METRICS                    serve this process's Prometheus metrics at /metrics (default
                                    true; 0 turns them off: no /metrics route, nothing observed);
                                    each process answers for itself (docs/observability.md)
    PUSH_DEMO                       the demo pages at / (chat, monitor, notifications) and their
                                    endpoints under /demo/, on the first app (the default app
                                    when it is on); they sign and publish for anyone, so the
                                    default is on only for the embedded default: the default
                                    app with its well-known secret (default: true then, else false)
    PUSH_ADMIN_PASSWORD             turns the admin console on at /admin/ (docs/admin.md): its login
                                    password, at least 12 characters, the same in every process of
                                    a deployment (default none: off, every /admin path answers 404)

Redis (many processes as one cluster; off unless PUSH_REDIS_URL or PUSH_REDIS_HOST is set):
    PUSH_REDIS_URL                  redis://[user:password@]host[:port][/db], or rediss:// for
                                    TLS; special characters in the user or password are
                                    percent-encoded, as in any URL (# is %23, @ is %40)
    PUSH_REDIS_HOST, PUSH_REDIS_PORT, PUSH_REDIS_DB
                                    instead of the URL (port default 6379, db default 0)
    PUSH_REDIS_USERNAME, PUSH_REDIS_PASSWORD
                                    with PUSH_REDIS_HOST; taken exactly as written, no encoding
    PUSH_REDIS_TLS                  with PUSH_REDIS_HOST: connect with TLS (default false)
    PUSH_REDIS_CLUSTER              Redis Cluster: sharded pub/sub, db 0 only (default false)
    PUSH_REDIS_PREFIX               start of every key and channel name, so deployments can
                                    share one Redis; no spaces or braces (default push)
    PUSH_NODE_HEARTBEAT             seconds between a process's heartbeats; a process silent
                                    for two is dead, and its connections are removed as that
                                    deadline passes: within two heartbeats of its death, once
                                    the survivors have run for two (default 15)
    PUSH_REDIS_TIMEOUT              seconds one Redis command may take in all (pool wait, connect,
                                    retry); past it a publish answers 503 and a subscribe gets a
                                    503 subscription_error (default 3: above Redis's own 2 s
                                    "fsync is taking too long" stalls, below the 5 s timeout of
                                    SDKs, so they get the 503 before they give up and retry)

History store: MongoDB when PUSH_MONGO_URL is set, else Redis when configured, else memory:
    PUSH_MONGO_URL                  mongodb:// or mongodb+srv:// URL (credentials percent-encoded)
    PUSH_MONGO_DATABASE             the database of the history collections (default tornado_push)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from .handlers.fallback import FallbackOptions
from .handlers.front import HTTPTimeouts
from .pubsub.apps import WEBHOOK_EVENT_TYPES, App, WebhookTarget
from .pubsub.hub import HubOptions
from .pubsub.origins import ANY, OriginRules
from .pubsub.redis.client import RedisConfig, parse_url
from .pubsub.webhooks import WebhookOptions

DEFAULT_APP_SECRET = "app-secret"
MIN_ADMIN_PASSWORD = 12
_APP_ID_RE = re.compile(r"[0-9]+")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("text", "json")
_HUB_DEFAULTS = HubOptions()
_APP_DEFAULTS = {f.name: f.default for f in dataclasses.fields(App)
                 if f.default is not dataclasses.MISSING}
_WEBHOOK_DEFAULTS = WebhookOptions()
_HTTP_DEFAULTS = HTTPTimeouts()
_FALLBACK_DEFAULTS = FallbackOptions()
_REDIS_DEFAULTS = RedisConfig()
#: Braces would change which part of a key Redis Cluster hashes.
_REDIS_PREFIX_RE = re.compile(r"[^\s{}]+")
#: What PUSH_REDIS_URL gives at once; each is refused next to it.
_REDIS_ENDPOINT = ("PUSH_REDIS_HOST", "PUSH_REDIS_PORT", "PUSH_REDIS_DB", "PUSH_REDIS_USERNAME",
                   "PUSH_REDIS_PASSWORD", "PUSH_REDIS_TLS")
#: App options that must be above 0 (a history channel keeps at least one message).
_POSITIVE_OPTIONS = frozenset({"history_size", "history_ttl"})
_REDIS_OPTIONS = ("PUSH_REDIS_CLUSTER", "PUSH_REDIS_PREFIX", "PUSH_NODE_HEARTBEAT",
                  "PUSH_REDIS_TIMEOUT")
#: The demo's chat rooms (``handlers/demo.py``): they keep history while the demo is on,
#: so a chat page that lost its connection shows what it missed.
DEMO_HISTORY_CHANNELS = ("presence-chat-*",)
#: What MongoDB accepts as a database name.
_MONGO_DATABASE_RE = re.compile(r'[^\s/\\."$]{1,63}')


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 6001
    apps: tuple[App, ...] = ()
    hub: HubOptions = field(default_factory=HubOptions)
    webhooks: WebhookOptions = field(default_factory=WebhookOptions)
    max_message_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024
    http_timeouts: HTTPTimeouts = field(default_factory=HTTPTimeouts)
    #: pusher-js's HTTP fallback sessions (``handlers/fallback.py``).
    fallback: FallbackOptions = field(default_factory=FallbackOptions)
    log_level: str = "INFO"
    log_format: str = "text"
    #: None: one process, the in-process broker.
    redis: RedisConfig | None = None
    xheaders: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    drain_grace: float = 5.0
    drain_timeout: float = 10.0
    websocket_compression: bool = False
    #: None: history in Redis when configured, else in memory. Not in a repr: it may hold a password.
    mongo_url: str | None = field(default=None, repr=False)
    mongo_database: str = "tornado_push"
    #: Young-generation GC threshold (0: Python's default); see server.tune_gc.
    gc_threshold: int = 20000
    #: The demo pages and their unauthenticated endpoints (``handlers/demo.py``).
    demo: bool = False
    #: The admin console's password (``handlers/admin.py``); None: the console is off.
    admin_password: str | None = field(default=None, repr=False)
    #: Prometheus metrics at ``/metrics`` (``pubsub/metrics.py``).
    metrics: bool = True

    @property
    def demo_app(self) -> App:
        """The app the demos run on: the first one (the default app when it is on)."""
        return self.apps[0]

    @property
    def uses_default_secret(self) -> bool:
        return any(app.secret == DEFAULT_APP_SECRET for app in self.apps)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``environ`` (default: the process environment).

    ``overrides`` (e.g. ``host``, ``port`` from command-line flags) win over
    the environment.
    """
    env = _Env(os.environ if environ is None else environ)
    apps = _apps(env)
    # Demo endpoints sign for anyone: on by default only where the secret is public anyway.
    demo = env.flag("PUSH_DEMO", _is_embedded_default(env, apps))
    if demo:
        apps = _with_demo_history(env, apps)
    inbound_rate = env.number("PUSH_MAX_INBOUND_RATE", _HUB_DEFAULTS.max_inbound_rate, positive=True)
    hub = HubOptions(
        activity_timeout=env.number("PUSH_ACTIVITY_TIMEOUT", _HUB_DEFAULTS.activity_timeout, positive=True),
        pong_timeout=env.number("PUSH_PONG_TIMEOUT", _HUB_DEFAULTS.pong_timeout, positive=True),
        max_connections=env.integer("PUSH_MAX_CONNECTIONS", _HUB_DEFAULTS.max_connections),
        max_inbound_rate=inbound_rate,
        max_inbound_burst=max(1, int(2 * inbound_rate)),
        max_connections_per_ip=env.integer("PUSH_MAX_CONNECTIONS_PER_IP",
                                           _HUB_DEFAULTS.max_connections_per_ip),
        max_outbound_delay=env.number("PUSH_MAX_OUTBOUND_DELAY", _HUB_DEFAULTS.max_outbound_delay,
                                      positive=True),
    )
    webhooks = WebhookOptions(
        batch_seconds=env.number("PUSH_WEBHOOK_BATCH_SECONDS", _WEBHOOK_DEFAULTS.batch_seconds),
        leave_delay=env.number("PUSH_WEBHOOK_LEAVE_DELAY", _WEBHOOK_DEFAULTS.leave_delay),
        retry_for=env.number("PUSH_WEBHOOK_RETRY_FOR", _WEBHOOK_DEFAULTS.retry_for),
        queue_size=env.integer("PUSH_WEBHOOK_QUEUE_SIZE", _WEBHOOK_DEFAULTS.queue_size, positive=True),
    )
    values: dict[str, Any] = dict(
        host=env.text("PUSH_HOST", Settings.host),
        port=env.integer("PUSH_PORT", Settings.port),
        apps=apps,
        hub=hub,
        webhooks=webhooks,
        max_message_bytes=env.integer("PUSH_MAX_MESSAGE_BYTES", Settings.max_message_bytes, positive=True),
        max_body_bytes=env.integer("PUSH_MAX_BODY_BYTES", Settings.max_body_bytes, positive=True),
        http_timeouts=HTTPTimeouts(
            idle=env.number("PUSH_HTTP_IDLE_TIMEOUT", _HTTP_DEFAULTS.idle, positive=True),
            header=env.number("PUSH_HTTP_HEADER_TIMEOUT", _HTTP_DEFAULTS.header, positive=True),
            body=env.number("PUSH_HTTP_BODY_TIMEOUT", _HTTP_DEFAULTS.body, positive=True)),
        fallback=FallbackOptions(
            disconnect_timeout=env.number("PUSH_HTTP_FALLBACK_DISCONNECT_TIMEOUT",
                                          _FALLBACK_DEFAULTS.disconnect_timeout, positive=True),
            max_sessions=env.integer("PUSH_HTTP_FALLBACK_MAX_SESSIONS",
                                     _FALLBACK_DEFAULTS.max_sessions, positive=True),
            max_sessions_per_ip=env.integer("PUSH_HTTP_FALLBACK_MAX_SESSIONS_PER_IP",
                                            _FALLBACK_DEFAULTS.max_sessions_per_ip,
                                            positive=True),
            hostname=env.environ.get("PUSH_HTTP_FALLBACK_HOSTNAME", "").strip()),
        log_level=env.text("PUSH_LOG_LEVEL", Settings.log_level).upper(),
        log_format=env.text("PUSH_LOG_FORMAT", Settings.log_format).lower(),
        redis=_redis(env),
        xheaders=env.flag("PUSH_XHEADERS", Settings.xheaders),
        drain_grace=env.number("PUSH_DRAIN_GRACE", Settings.drain_grace),
        drain_timeout=env.number("PUSH_DRAIN_TIMEOUT", Settings.drain_timeout, positive=True),
        websocket_compression=env.flag("PUSH_WEBSOCKET_COMPRESSION", Settings.websocket_compression),
        metrics=env.flag("PUSH_METRICS", Settings.metrics),
        gc_threshold=env.integer("PUSH_GC_THRESHOLD", Settings.gc_threshold),
        demo=demo,
        admin_password=env.environ.get("PUSH_ADMIN_PASSWORD") or None,
        **_tls(env),
        **_mongo(env),
    )
    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = Settings(**values)
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"port must be 0-65535, got {settings.port}")
    if settings.log_level not in _LOG_LEVELS:
        raise SettingsError(f"PUSH_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    if settings.log_format not in _LOG_FORMATS:
        raise SettingsError(f"PUSH_LOG_FORMAT must be one of {', '.join(_LOG_FORMATS)}")
    if settings.admin_password is not None and len(settings.admin_password) < MIN_ADMIN_PASSWORD:
        raise SettingsError(f"PUSH_ADMIN_PASSWORD must be at least {MIN_ADMIN_PASSWORD} characters")
    return settings


def _is_embedded_default(env: "_Env", apps: tuple[App, ...]) -> bool:
    """The default app is on and keeps its well-known secret, as plain ``python server.py`` does."""
    return env.flag("PUSH_DEFAULT_APP", True) and apps[0].secret == DEFAULT_APP_SECRET


def _with_demo_history(env: "_Env", apps: tuple[App, ...]) -> tuple[App, ...]:
    """The default app's chat rooms keep history, unless PUSH_APP_HISTORY_CHANNELS says otherwise."""
    if not env.flag("PUSH_DEFAULT_APP", True) or "PUSH_APP_HISTORY_CHANNELS" in env.environ:
        return apps
    return (dataclasses.replace(apps[0], history_channels=DEMO_HISTORY_CHANNELS), *apps[1:])


def _tls(env: "_Env") -> dict[str, str | None]:
    """Certificate and key files for serving TLS directly: both or neither, readable."""
    files = {"tls_cert": env.environ.get("PUSH_TLS_CERT") or None,
             "tls_key": env.environ.get("PUSH_TLS_KEY") or None}
    if (files["tls_cert"] is None) != (files["tls_key"] is None):
        raise SettingsError("Set both PUSH_TLS_CERT and PUSH_TLS_KEY, or neither")
    for name, path in (("PUSH_TLS_CERT", files["tls_cert"]), ("PUSH_TLS_KEY", files["tls_key"])):
        if path is not None and not os.access(path, os.R_OK):
            raise SettingsError(f"{name} {path!r} cannot be read")
    return files


def _mongo(env: "_Env") -> dict[str, str | None]:
    """Where MongoDB history lives; the URL is checked for its scheme only, never echoed."""
    url = env.environ.get("PUSH_MONGO_URL", "").strip() or None
    if url is not None and not url.startswith(("mongodb://", "mongodb+srv://")):
        raise SettingsError("PUSH_MONGO_URL must start with mongodb:// or mongodb+srv://")
    database = env.text("PUSH_MONGO_DATABASE", Settings.mongo_database)
    if _MONGO_DATABASE_RE.fullmatch(database) is None:
        raise SettingsError(f"PUSH_MONGO_DATABASE {database!r} must be 1-63 characters without "
                            "spaces or any of /\\. \"$")
    return {"mongo_url": url, "mongo_database": database}


class _Env:
    """Typed reads of environment variables; errors name the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def text(self, name: str, default: str) -> str:
        value = self.environ.get(name, default).strip()
        if not value:
            raise SettingsError(f"{name} must not be empty")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.environ.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name} must be true or false, got {value!r}")

    def integer(self, name: str, default: int, *, positive: bool = False) -> int:
        value = self.environ.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
        return _check_range(name, number, positive)

    def number(self, name: str, default: float, *, positive: bool = False) -> float:
        value = self.environ.get(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise SettingsError(f"{name} must be a finite number, got {value!r}")
        return _check_range(name, number, positive)


def _check_range(name: str, number: Any, positive: bool) -> Any:
    if number < 0 or (positive and number == 0):
        raise SettingsError(f"{name} must be {'above' if positive else 'at least'} 0, got {number}")
    return number


def _redis(env: _Env) -> RedisConfig | None:
    given = [name for name in ("PUSH_REDIS_URL", *_REDIS_ENDPOINT, *_REDIS_OPTIONS)
             if name in env.environ]
    if "PUSH_REDIS_URL" not in given and "PUSH_REDIS_HOST" not in given:
        if given:
            raise SettingsError(f"{given[0]} needs PUSH_REDIS_URL or PUSH_REDIS_HOST")
        return None
    options = {
        "cluster": env.flag("PUSH_REDIS_CLUSTER", False),
        "prefix": env.text("PUSH_REDIS_PREFIX", _REDIS_DEFAULTS.prefix),
        "heartbeat_interval": env.number("PUSH_NODE_HEARTBEAT", _REDIS_DEFAULTS.heartbeat_interval,
                                         positive=True),
        "timeout": env.number("PUSH_REDIS_TIMEOUT", _REDIS_DEFAULTS.timeout, positive=True),
    }
    if not _REDIS_PREFIX_RE.fullmatch(options["prefix"]):
        raise SettingsError("PUSH_REDIS_PREFIX must not contain spaces or braces")
    if "PUSH_REDIS_URL" in given:
        config = _redis_url(env, given, options)
        db, where = parse_url(config.url)["db"], "PUSH_REDIS_URL"
    else:
        config = _redis_fields(env, options)
        db, where = config.db, "PUSH_REDIS_DB"
    if config.cluster and db != 0:
        raise SettingsError(f"{where}: Redis Cluster has only database 0, got {db}")
    return config


def _redis_url(env: _Env, given: list[str], options: dict[str, Any]) -> RedisConfig:
    beside = [name for name in given if name in _REDIS_ENDPOINT]
    if beside:
        raise SettingsError(f"{', '.join(beside)}: not with PUSH_REDIS_URL, which gives host, "
                            "port, db, credentials and TLS")
    url = env.text("PUSH_REDIS_URL", "")
    try:
        parse_url(url)
    except ValueError as error:  # the message never repeats the URL: it may hold a password
        raise SettingsError(f"PUSH_REDIS_URL {error}") from None
    return RedisConfig(url=url, **options)


def _redis_fields(env: _Env, options: dict[str, Any]) -> RedisConfig:
    port = env.integer("PUSH_REDIS_PORT", _REDIS_DEFAULTS.port)
    if not 1 <= port <= 65535:
        raise SettingsError(f"PUSH_REDIS_PORT must be 1-65535, got {port}")
    credentials = {}
    for name, field_name in (("PUSH_REDIS_USERNAME", "username"), ("PUSH_REDIS_PASSWORD", "password")):
        if name in env.environ:  # as written: spaces and any character may belong to it
            if not env.environ[name]:
                raise SettingsError(f"{name} must not be empty")
            credentials[field_name] = env.environ[name]
    return RedisConfig(host=env.text("PUSH_REDIS_HOST", ""), port=port,
                       db=env.integer("PUSH_REDIS_DB", _REDIS_DEFAULTS.db),
                       tls=env.flag("PUSH_REDIS_TLS", False), **credentials, **options)


def _apps(env: _Env) -> tuple[App, ...]:
    apps: list[tuple[str, App]] = []  # (where it was configured, app)
    if env.flag("PUSH_DEFAULT_APP", True):
        default = _app("PUSH_APP_*", {
            "id": env.text("PUSH_APP_ID", "1"),
            "key": env.text("PUSH_APP_KEY", "app-key"),
            "secret": env.text("PUSH_APP_SECRET", DEFAULT_APP_SECRET),
            "client_events": env.flag("PUSH_APP_CLIENT_EVENTS", True),
            "subscription_count_events": env.flag("PUSH_APP_SUBSCRIPTION_COUNT", False),
            "history_channels": _comma_list(env, "PUSH_APP_HISTORY_CHANNELS"),
            "history_size": env.integer("PUSH_APP_HISTORY_SIZE", _APP_DEFAULTS["history_size"],
                                        positive=True),
            "history_ttl": env.number("PUSH_APP_HISTORY_TTL", _APP_DEFAULTS["history_ttl"],
                                      positive=True),
            "history_client_events": env.flag("PUSH_APP_HISTORY_CLIENT_EVENTS", False),
            "allow_missing_origin": env.flag("PUSH_APP_ALLOW_MISSING_ORIGIN", True),
        })
        webhooks = _webhook_targets("PUSH_APP_WEBHOOKS", _comma_list(env, "PUSH_APP_WEBHOOKS"))
        origins = _allowed_origins("PUSH_APP_ALLOWED_ORIGINS",
                                   _comma_list(env, "PUSH_APP_ALLOWED_ORIGINS") or [ANY])
        apps.append(("PUSH_APP_*", dataclasses.replace(default, webhooks=webhooks,
                                                       allowed_origins=origins)))
    path = env.environ.get("PUSH_APPS_FILE")
    if path:
        apps.extend(_apps_file(path))
    if not apps:
        raise SettingsError("No apps: set PUSH_APPS_FILE or leave PUSH_DEFAULT_APP on")
    for kind in ("id", "key"):
        seen: dict[str, str] = {}
        for where, app in apps:
            value = getattr(app, kind)
            if value in seen:
                raise SettingsError(f"{where}: {kind} {value!r} is already used by {seen[value]}")
            seen[value] = where
    return tuple(app for _, app in apps)


def _comma_list(env: _Env, name: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated variable (none when unset)."""
    items = (item.strip() for item in env.environ.get(name, "").split(","))
    return [item for item in items if item]


def _apps_file(path: str) -> list[tuple[str, App]]:
    try:
        with open(path, encoding="utf-8") as file:
            entries = json.load(file)
    except OSError as error:
        raise SettingsError(f"PUSH_APPS_FILE {path!r} cannot be read: {error.strerror}") from None
    except ValueError as error:
        raise SettingsError(f"PUSH_APPS_FILE {path!r} is not valid JSON: {error}") from None
    if not isinstance(entries, list):
        raise SettingsError(f"PUSH_APPS_FILE {path!r} must hold a JSON list of apps")
    apps = []
    for number, entry in enumerate(entries, 1):
        where = f"PUSH_APPS_FILE app #{number}"
        apps.append((where, _app(where, entry)))
    return apps


def _app(where: str, entry: Any) -> App:
    """Validate one app's options against the annotated types of :class:`App`'s fields."""
    if not isinstance(entry, dict):
        raise SettingsError(f"{where} must be an object")
    unknown = set(entry) - App.option_names()
    if unknown:
        raise SettingsError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    for required in ("id", "key", "secret"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise SettingsError(f"{where}: {required!r} must be a non-empty string")
    if not _APP_ID_RE.fullmatch(entry["id"]):
        raise SettingsError(f"{where}: id {entry['id']!r} must be digits (the official SDKs refuse others)")
    if any(separator in entry["key"] for separator in "/?:"):
        # '/' and '?' would break the socket path, ':' the "key:signature" auth tokens.
        raise SettingsError(f"{where}: key must not contain '/', '?' or ':'")
    types = typing.get_type_hints(App)
    options = dict(entry)
    for name, value in entry.items():
        if name == "webhooks":  # tuple[WebhookTarget, ...] is no class for isinstance
            options[name] = _webhook_targets(f"{where}: webhooks", value)
        elif name == "history_channels":
            options[name] = _glob_patterns(f"{where}: history_channels", value)
        elif name == "allowed_origins":
            options[name] = _allowed_origins(f"{where}: allowed_origins", value)
        elif name in _APP_DEFAULTS:
            _check_option(where, name, value, types[name], _APP_DEFAULTS[name],
                          positive=name in _POSITIVE_OPTIONS)
    return App(**options)


def _glob_patterns(where: str, items: Any) -> tuple[str, ...]:
    """A list of non-empty fnmatch patterns such as ``presence-chat-*``."""
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise SettingsError(f"{where} must be a list of channel name patterns like "
                            f"\"presence-chat-*\", got {items!r}")
    return tuple(items)


def _allowed_origins(where: str, items: Any) -> tuple[str, ...]:
    """A list of ``*``, exact origins and ``https://*.example.com`` wildcards, each
    well-formed (``pubsub/origins.py``)."""
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SettingsError(f"{where} must be a list of origins like \"https://app.example.com\" "
                            f"or \"https://*.example.com\", got {items!r}")
    try:
        OriginRules.parse(tuple(items))
    except ValueError as error:
        raise SettingsError(f"{where}: {error}") from None
    return tuple(items)


#: A webhook target's channel filters, and every key its object may have.
_CHANNEL_NAME_FILTERS = ("channel_name_starts_with", "channel_name_ends_with")
_WEBHOOK_TARGET_KEYS = frozenset({"url", "event_types", *_CHANNEL_NAME_FILTERS})


def _webhook_targets(where: str, items: Any) -> tuple[WebhookTarget, ...]:
    """URL strings (every event of every channel) or objects naming ``url`` and, optionally,
    ``event_types``, ``channel_name_starts_with`` and ``channel_name_ends_with``; validated."""
    if not isinstance(items, list):
        raise SettingsError(f"{where} must be a list of URLs or {{\"url\", ...}} objects")
    targets = []
    for number, item in enumerate(items, 1):
        here = f"{where} #{number}"
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not set(item) <= _WEBHOOK_TARGET_KEYS:
            raise SettingsError(f"{here} must be a URL or an object with only "
                                f"{', '.join(sorted(_WEBHOOK_TARGET_KEYS))}")
        url = item.get("url")
        if not _is_http_url(url):
            raise SettingsError(f"{here}: url must be an http or https URL with a host, got {url!r}")
        kinds = item.get("event_types", sorted(WEBHOOK_EVENT_TYPES))
        if (not isinstance(kinds, list) or not kinds
                or not all(isinstance(kind, str) and kind in WEBHOOK_EVENT_TYPES for kind in kinds)):
            raise SettingsError(f"{here}: event_types must be a non-empty list of "
                                f"{', '.join(sorted(WEBHOOK_EVENT_TYPES))}; got {kinds!r}")
        affixes = {name: item.get(name, "") for name in _CHANNEL_NAME_FILTERS}
        for name, affix in affixes.items():
            if not isinstance(affix, str) or (name in item and not affix):
                raise SettingsError(f"{here}: {name} must be a non-empty string, got {affix!r}")
        if any(target.url == url for target in targets):
            raise SettingsError(f"{here}: url {url!r} is listed twice")
        targets.append(WebhookTarget(url, frozenset(kinds), **affixes))
    return tuple(targets)


def _is_http_url(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not 0-65535
    except ValueError:  # e.g. an unclosed IPv6 bracket or a bad port
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0


def _check_option(where: str, name: str, value: Any, kind: type, default: Any, *,
                  positive: bool = False) -> None:
    """``kind`` is the field's annotation: ``cache_ttl: float = 1800`` takes 90.5 as well as 90.

    Numbers must be at least 0, or above 0 when ``positive``.
    """
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind in (int, float):
        ok = (isinstance(value, (int, float) if kind is float else int)
              and not isinstance(value, bool) and math.isfinite(value)
              and (value > 0 if positive else value >= 0))
    else:
        ok = isinstance(value, kind)
    if not ok:
        above = "above 0 " if positive else ""
        raise SettingsError(f"{where}: {name} must be a {kind.__name__} {above}like {default!r}, "
                            f"got {value!r}")
