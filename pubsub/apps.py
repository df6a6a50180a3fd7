"""Applications: the credentials and per-app limits every check reads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Iterable

from .errors import ConnectionRefused
from .history.base import Retention
from .origins import ANY, OriginRules, origin_refusal


#: Every webhook event type, in the order the Pusher docs list them.
WEBHOOK_EVENT_TYPES = frozenset({
    "channel_occupied", "channel_vacated", "member_added", "member_removed",
    "client_event", "cache_miss", "subscription_count",
})


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One URL that receives an app's webhooks: the event types it names, of the channels
    whose names start and end as it says (empty: any), so that a busy app's receiver for
    one kind of channel is not flooded by every other kind."""

    url: str
    event_types: frozenset[str] = WEBHOOK_EVENT_TYPES
    channel_name_starts_with: str = ""
    channel_name_ends_with: str = ""

    def wants(self, event_type: str, channel: str) -> bool:
        """Whether an event of ``event_type`` on ``channel`` goes to this URL."""
        return (event_type in self.event_types
                and channel.startswith(self.channel_name_starts_with)
                and channel.endswith(self.channel_name_ends_with))


@dataclass(frozen=True, slots=True)
class App:
    """One tenant: its credentials, switches and limits.

    Defaults follow the hosted Pusher service so that clients written
    against it see the same limits here.
    """

    id: str
    key: str
    secret: str
    enabled: bool = True
    client_events: bool = True
    #: Connections this app may hold in one process (close 4004 beyond); 0 is unlimited.
    max_connections: int = 0
    #: Size of an event's ``data`` (HTTP or client event), in bytes of UTF-8.
    max_event_bytes: int = 10 * 1024
    max_event_name_length: int = 200
    max_channels_per_event: int = 100
    max_batch_size: int = 10
    max_presence_members: int = 100
    max_presence_user_info_bytes: int = 1024
    max_user_id_length: int = 128
    max_watchlist_size: int = 100
    #: Client events per second per connection, and the burst allowed above it.
    client_event_rate: float = 10.0
    client_event_burst: int = 10
    #: Seconds a cache channel keeps its last event.
    cache_ttl: float = 30 * 60
    #: Close 4009 a connection that has not signed in after this many seconds; 0 is off.
    user_authentication_timeout: float = 0
    #: Bytes queued for one connection that it has not read; beyond, it is closed with 4100.
    max_outbound_bytes: int = 1024 * 1024
    #: Send ``pusher_internal:subscription_count`` to subscribers of non-presence channels.
    subscription_count_events: bool = False
    webhooks: tuple[WebhookTarget, ...] = ()
    #: Glob patterns (``fnmatch``, case-sensitive) of the channels that keep history.
    history_channels: tuple[str, ...] = ()
    #: Entries kept per history channel, and seconds each is kept.
    history_size: int = 100
    history_ttl: float = 3600.0
    #: Client events on history channels are kept and numbered too. Off by default:
    #: most are ephemeral (typing indicators) and would push real messages out.
    history_client_events: bool = False
    #: Page origins that may connect (``pubsub/origins.py``): ``*`` (any), exact origins
    #: such as ``https://app.example.com``, wildcards such as ``https://*.example.com``.
    allowed_origins: tuple[str, ...] = (ANY,)
    #: Connections without an ``Origin`` header (server-side clients, mobile SDKs) may open.
    allow_missing_origin: bool = True
    #: ``allowed_origins`` parsed; building an App with a malformed entry raises ValueError.
    origin_rules: OriginRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_rules", OriginRules.parse(self.allowed_origins))

    def origin_refusal(self, origin: str | None) -> ConnectionRefused | None:
        """The 4009 a connection with this ``Origin`` header (None: without one) is refused
        with, or None when it may open."""
        return origin_refusal(self.origin_rules, self.allow_missing_origin, origin)

    def history_retention(self, channel: str) -> Retention | None:
        """What the channel keeps, or None when it has no history."""
        if not any(fnmatchcase(channel, pattern) for pattern in self.history_channels):
            return None
        return Retention(max_count=self.history_size, max_age=self.history_ttl)

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The field names a configuration file may set."""
        return frozenset(option.name for option in dataclasses.fields(cls) if option.init)


@dataclass(frozen=True)
class AppChanges:
    """What :meth:`AppRegistry.replace` changed, by app id."""

    added: tuple[App, ...] = ()
    #: The new versions of apps whose options changed.
    changed: tuple[App, ...] = ()
    #: The old versions of apps that are gone.
    removed: tuple[App, ...] = ()


class AppRegistry:
    """Looks apps up by id (HTTP API) and by key (WebSocket path).

    :meth:`replace` swaps the whole set at once; whoever holds the registry sees the new
    apps from then on. An :class:`App` itself never changes: a connection keeps the
    version it was admitted with.
    """

    def __init__(self, apps: Iterable[App]) -> None:
        self._by_id, self._by_key = self._index(apps)

    @staticmethod
    def _index(apps: Iterable[App]) -> tuple[dict[str, App], dict[str, App]]:
        by_id: dict[str, App] = {}
        by_key: dict[str, App] = {}
        for app in apps:
            if app.id in by_id:
                raise ValueError(f"duplicate app id {app.id!r}")
            if app.key in by_key:
                raise ValueError(f"duplicate app key {app.key!r}")
            by_id[app.id] = app
            by_key[app.key] = app
        return by_id, by_key

    def replace(self, apps: Iterable[App]) -> AppChanges:
        """Hold ``apps`` instead, all of them or (``ValueError``: a duplicate id or key)
        none, and say what changed."""
        by_id, by_key = self._index(apps)
        old = self._by_id
        changes = AppChanges(
            added=tuple(app for app_id, app in by_id.items() if app_id not in old),
            changed=tuple(app for app_id, app in by_id.items()
                          if app_id in old and old[app_id] != app),
            removed=tuple(app for app_id, app in old.items() if app_id not in by_id))
        self._by_id, self._by_key = by_id, by_key
        return changes

    def by_id(self, app_id: str) -> App | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> App | None:
        return self._by_key.get(key)

    def __iter__(self):
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
