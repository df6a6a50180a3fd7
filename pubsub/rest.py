"""Validation of HTTP API publish bodies (``/events`` and ``/batch_events``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import protocol, text
from .apps import App
from .errors import ApiError, MessageRejected
from .history import Retention

MAX_USER_ID_LENGTH = 128
#: Entries one ``GET .../history`` returns by default, and at most.
HISTORY_LIMIT = 100
MAX_HISTORY_LIMIT = 1000

#: ``info`` a publish may ask for; a channel query may also ask for ``cache``.

INFO_ATTRIBUTES = frozenset({"subscription_count", "user_count"})
CHANNEL_INFO_ATTRIBUTES = INFO_ATTRIBUTES | {"cache"}


@dataclass(frozen=True, slots=True)
class Trigger:
    """One validated event to publish on one or more channels."""

    channels: tuple[str, ...]
    event: str
    data: str
    socket_id: str | None = None
    info: frozenset[str] = frozenset()


def load_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (:func:`text.loads`), or a 400."""
    try:
        parsed = text.loads(body)
    except text.InvalidText as error:
        raise ApiError(400, f"Body is not valid JSON: {error.message}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "Body must be a JSON object")
    return parsed


def check_channel(name: Any) -> str:
    if not isinstance(name, str):
        raise ApiError(400, "Channel names must be strings")
    try:
        protocol.channel_kind(name)
    except MessageRejected as rejection:
        raise ApiError(400, rejection.message) from None
    return name


def parse_info(value: Any, allowed: frozenset[str] = INFO_ATTRIBUTES) -> frozenset[str]:
    """The attributes of an ``info`` parameter, refusing unknown ones."""
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise ApiError(400, "info must be a comma-separated string")
    attributes = frozenset(part for part in value.split(",") if part)
    unknown = attributes - allowed
    if unknown:
        raise ApiError(400, f"Unknown info attributes: {', '.join(sorted(unknown))}")
    return attributes


def parse_trigger(app: App, event: dict[str, Any], *, multi_channel: bool) -> Trigger:
    """Validate one event object; ``multi_channel`` allows ``channels`` (``/events`` only)."""
    name = event.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "Event 'name' must be a non-empty string")
    if len(name) > app.max_event_name_length:
        raise ApiError(400, f"Event name is over {app.max_event_name_length} characters")
    data = event.get("data")
    if not isinstance(data, str):
        raise ApiError(400, "Event 'data' must be a string (JSON-encode objects first)")
    if len(data.encode()) > app.max_event_bytes:
        raise ApiError(413, f"Event data is over {app.max_event_bytes} bytes")
    channels = _event_channels(app, event, multi_channel)
    socket_id = event.get("socket_id")
    if socket_id is not None and not protocol.is_valid_socket_id(socket_id):
        raise ApiError(400, "socket_id must look like '123.456'")
    return Trigger(channels, name, data, socket_id, parse_info(event.get("info")))


def _event_channels(app: App, event: dict[str, Any], multi_channel: bool) -> tuple[str, ...]:
    if multi_channel and "channels" in event:
        channels = event["channels"]
        if not isinstance(channels, list) or not channels:
            raise ApiError(400, "'channels' must be a non-empty list")
    elif "channel" in event:
        channels = [event["channel"]]
    else:
        raise ApiError(400, "Name the target with 'channels' or 'channel'")
    if len(channels) > app.max_channels_per_event:
        raise ApiError(400, f"At most {app.max_channels_per_event} channels per event")
    # A channel named twice still gets the event once.
    names = tuple(dict.fromkeys(check_channel(name) for name in channels))
    if len(names) > 1 and any(protocol.channel_kind(n).encrypted for n in names):
        raise ApiError(400, "Events to encrypted channels must name exactly one channel")
    return names


def parse_events_body(app: App, body: bytes) -> Trigger:
    """The body of ``POST /apps/{id}/events``."""
    return parse_trigger(app, load_object(body), multi_channel=True)


def parse_batch_body(app: App, body: bytes) -> list[Trigger]:
    """The body of ``POST /apps/{id}/batch_events``."""
    batch = load_object(body).get("batch")
    if not isinstance(batch, list) or not batch:
        raise ApiError(400, "'batch' must be a non-empty list of events")
    if len(batch) > app.max_batch_size:
        raise ApiError(400, f"At most {app.max_batch_size} events per batch")
    if not all(isinstance(event, dict) for event in batch):
        raise ApiError(400, "Each batch entry must be an event object")
    return [parse_trigger(app, event, multi_channel=False) for event in batch]


def parse_channels_query(prefix: str, info: str | None) -> frozenset[str]:
    """``info`` of ``GET /channels``: ``user_count`` only with a ``presence-`` prefix."""
    attributes = parse_info(info)
    if "user_count" in attributes and not prefix.startswith("presence-"):
        raise ApiError(400, "info=user_count needs filter_by_prefix=presence-...")
    return attributes


def parse_channel_query(channel: str, info: str | None) -> frozenset[str]:
    """``info`` of ``GET /channels/{channel}``: ``user_count`` only on presence channels."""
    check_channel(channel)
    attributes = parse_info(info, CHANNEL_INFO_ATTRIBUTES)
    if "user_count" in attributes and not protocol.channel_kind(channel).presence:
        raise ApiError(400, "info=user_count is only for presence channels")
    return attributes


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated ``GET /channels/{channel}/history``."""

    retention: Retention
    limit: int
    after: int | None
    before: int | None


def parse_history_query(app: App, channel: str, limit: str | None, after: str | None,
                        before: str | None) -> HistoryQuery:
    """The query's numbers (400 when not whole numbers in range); 404 for a channel
    the app keeps no history of."""
    check_channel(channel)
    retention = app.history_retention(channel)
    if retention is None:
        raise ApiError(404, f"Channel {channel} keeps no history: its name matches none of "
                            "the app's history_channels patterns")
    count = _whole_number("limit", limit, 1)
    if count is not None and count > MAX_HISTORY_LIMIT:
        raise ApiError(400, f"limit must be at most {MAX_HISTORY_LIMIT}")
    return HistoryQuery(retention, HISTORY_LIMIT if count is None else count,
                        _whole_number("after", after, 0), _whole_number("before", before, 1))


def _whole_number(name: str, value: str | None, least: int) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) < least:
        raise ApiError(400, f"{name} must be a whole number of at least {least}, got {value!r}")
    return int(value)


def check_user_id(user_id: str) -> str:
    if not protocol.is_valid_name(user_id, MAX_USER_ID_LENGTH):
        raise ApiError(400, f"Invalid user id {user_id!r}")
    return user_id
