"""All configuration, read once at start from the environment (and flags).

Nothing else in the project reads the environment: :func:`load_settings`
builds one :class:`Settings` and everything receives what it needs from it.
An invalid value raises :class:`SettingsError` naming the setting.

Environment:
    PUSH_HOST, PUSH_PORT            where to listen (default 127.0.0.1:6001)
    PUSH_APP_ID, PUSH_APP_KEY,      the default app (default 1, app-key, app-secret);
    PUSH_APP_SECRET                 ids are digits, as the official SDKs require
    PUSH_APP_CLIENT_EVENTS          client events on the default app (default true)
    PUSH_DEFAULT_APP                false: no default app (then PUSH_APPS_FILE must give apps)
    PUSH_APPS_FILE                  JSON list of more apps, each {"id", "key", "secret", options...}
    PUSH_ACTIVITY_TIMEOUT           seconds of silence before the server pings (default 120)
    PUSH_PONG_TIMEOUT               seconds to answer that ping before close 4201 (default 30)
    PUSH_MAX_CONNECTIONS            connections per process, 4100 beyond (default 0: no limit)
    PUSH_MAX_INBOUND_RATE           messages per second per connection (default 100)
    PUSH_MAX_MESSAGE_BYTES          largest WebSocket message; larger closes 1009 (default 65536)
    PUSH_MAX_BODY_BYTES             largest HTTP API body (default 1048576)
    PUSH_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (default INFO)
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

from pubsub.apps import App
from pubsub.hub import HubOptions

DEFAULT_APP_SECRET = "app-secret"
_APP_ID_RE = re.compile(r"[0-9]+")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_HUB_DEFAULTS = HubOptions()


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 6001
    apps: tuple[App, ...] = ()
    hub: HubOptions = field(default_factory=HubOptions)
    max_message_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024
    log_level: str = "INFO"

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
    inbound_rate = env.number("PUSH_MAX_INBOUND_RATE", _HUB_DEFAULTS.max_inbound_rate, positive=True)
    hub = HubOptions(
        activity_timeout=env.number("PUSH_ACTIVITY_TIMEOUT", _HUB_DEFAULTS.activity_timeout, positive=True),
        pong_timeout=env.number("PUSH_PONG_TIMEOUT", _HUB_DEFAULTS.pong_timeout, positive=True),
        max_connections=env.integer("PUSH_MAX_CONNECTIONS", _HUB_DEFAULTS.max_connections),
        max_inbound_rate=inbound_rate,
        max_inbound_burst=max(1, int(2 * inbound_rate)),
    )
    values: dict[str, Any] = dict(
        host=env.text("PUSH_HOST", Settings.host),
        port=env.integer("PUSH_PORT", Settings.port),
        apps=apps,
        hub=hub,
        max_message_bytes=env.integer("PUSH_MAX_MESSAGE_BYTES", Settings.max_message_bytes, positive=True),
        max_body_bytes=env.integer("PUSH_MAX_BODY_BYTES", Settings.max_body_bytes, positive=True),
        log_level=env.text("PUSH_LOG_LEVEL", Settings.log_level).upper(),
    )
    values.update({name: value for name, value in overrides.items() if value is not None})
    settings = Settings(**values)
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"port must be 0-65535, got {settings.port}")
    if settings.log_level not in _LOG_LEVELS:
        raise SettingsError(f"PUSH_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    return settings


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


def _apps(env: _Env) -> tuple[App, ...]:
    apps: list[tuple[str, App]] = []  # (where it was configured, app)
    if env.flag("PUSH_DEFAULT_APP", True):
        apps.append(("PUSH_APP_*", _app("PUSH_APP_*", {
            "id": env.text("PUSH_APP_ID", "1"),
            "key": env.text("PUSH_APP_KEY", "app-key"),
            "secret": env.text("PUSH_APP_SECRET", DEFAULT_APP_SECRET),
            "client_events": env.flag("PUSH_APP_CLIENT_EVENTS", True),
        })))
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
    defaults = {f.name: f.default for f in dataclasses.fields(App) if f.default is not dataclasses.MISSING}
    for name, value in entry.items():
        if name in defaults:
            _check_option(where, name, value, types[name], defaults[name])
    return App(**entry)


def _check_option(where: str, name: str, value: Any, kind: type, default: Any) -> None:
    """``kind`` is the field's annotation: ``cache_ttl: float = 1800`` takes 90.5 as well as 90."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif kind is float:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and value >= 0)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise SettingsError(f"{where}: {name} must be a {kind.__name__} like {default!r}, "
                            f"got {value!r}")
