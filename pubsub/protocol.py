"""Pusher protocol 7 on the wire: event names, channel kinds, frames.

Server-to-client frames carry ``data`` as a JSON *string* (double encoded);
pusher-js parses it when it is a string. Clients may send ``data`` as an
object or a string.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from . import text
from .errors import MessageRejected

PROTOCOL_VERSION = 7

# Events a client sends.
PING = "pusher:ping"
PONG = "pusher:pong"
SUBSCRIBE = "pusher:subscribe"
UNSUBSCRIBE = "pusher:unsubscribe"
SIGNIN = "pusher:signin"
CLIENT_EVENT_PREFIX = "client-"

# Events the server sends.
CONNECTION_ESTABLISHED = "pusher:connection_established"
ERROR = "pusher:error"
SUBSCRIPTION_ERROR = "pusher:subscription_error"
SIGNIN_SUCCESS = "pusher:signin_success"
CACHE_MISS = "pusher:cache_miss"
SUBSCRIPTION_SUCCEEDED = "pusher_internal:subscription_succeeded"
MEMBER_ADDED = "pusher_internal:member_added"
MEMBER_REMOVED = "pusher_internal:member_removed"
SUBSCRIPTION_COUNT = "pusher_internal:subscription_count"
WATCHLIST_EVENTS = "pusher_internal:watchlist_events"
# The history extension (docs/history.md); stock pusher-js ignores pusher_internal: events.
RESUME_SUCCEEDED = "pusher_internal:resume_succeeded"
RESUME_FAILED = "pusher_internal:resume_failed"
CONTINUITY_LOST = "pusher_internal:continuity_lost"

SERVER_TO_USER_PREFIX = "#server-to-user-"
MAX_CHANNEL_NAME_LENGTH = 164
_NAME_RE = re.compile(r"[-a-zA-Z0-9_=@,.;]+")
_SOCKET_ID_RE = re.compile(r"\d+\.\d+")


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """What a channel name implies: who may join and what it does."""

    authorized: bool  # needs a signed ``auth`` to subscribe (private, presence)
    presence: bool
    encrypted: bool
    cache: bool
    server_to_user: bool

    @property
    def allows_client_events(self) -> bool:
        """Client events go only to private and presence channels, never encrypted ones."""
        return self.authorized and not self.encrypted


@functools.lru_cache(maxsize=4096)
def channel_kind(name: str) -> ChannelKind:
    """Classify a channel name, raising :class:`MessageRejected` when it is invalid."""
    if name.startswith(SERVER_TO_USER_PREFIX):
        user_id = name[len(SERVER_TO_USER_PREFIX):]
        if not is_valid_name(user_id, MAX_CHANNEL_NAME_LENGTH - len(SERVER_TO_USER_PREFIX)):
            raise MessageRejected(f"Invalid channel name {name!r}")
        return ChannelKind(False, False, False, False, True)
    if not is_valid_name(name, MAX_CHANNEL_NAME_LENGTH):
        raise MessageRejected(
            f"Invalid channel name {name!r}: at most {MAX_CHANNEL_NAME_LENGTH} characters "
            "of a-z A-Z 0-9 and -_=@,.;"
        )
    presence = name.startswith("presence-")
    authorized = presence or name.startswith("private-")
    encrypted = name.startswith("private-encrypted-")
    cache = name.startswith(("cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"))
    return ChannelKind(authorized, presence, encrypted, cache, False)


def is_valid_name(name: Any, max_length: int) -> bool:
    """True for a non-empty channel name or user id within the allowed characters."""
    return isinstance(name, str) and 0 < len(name) <= max_length and _NAME_RE.fullmatch(name) is not None


def is_valid_socket_id(socket_id: Any) -> bool:
    return isinstance(socket_id, str) and _SOCKET_ID_RE.fullmatch(socket_id) is not None


def dumps(value: Any) -> str:
    """Compact JSON, as every frame and data string is written."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_frame(event: str, data: str | None = None, channel: str | None = None,
                 user_id: str | None = None, epoch: str | None = None,
                 offset: int | None = None) -> bytes:
    """Encode one server-to-client frame as UTF-8; ``data`` is already a string.

    ``epoch`` and ``offset`` (history channels) are top-level keys, which
    pusher-js drops when it decodes a frame.
    """
    frame: dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    if data is not None:
        frame["data"] = data
    if user_id is not None:
        frame["user_id"] = user_id
    if epoch is not None:
        frame["epoch"] = epoch
        frame["offset"] = offset
    return dumps(frame).encode()


def encode_error(code: int | None, message: str, channel: str | None = None) -> bytes:
    """A ``pusher:error`` frame; ASCII JSON, so that it encodes whatever ``message`` holds:
    the reply to a bad message cannot fail on what the message carried."""
    frame: dict[str, Any] = {"event": ERROR, "data": {"code": code, "message": message}}
    if channel is not None:
        frame["channel"] = channel
    return json.dumps(frame, separators=(",", ":")).encode("ascii")


def encode_event(event: str, payload: Any, channel: str | None = None) -> bytes:
    """Encode a frame whose ``data`` is ``payload`` as a JSON string."""
    return encode_frame(event, dumps(payload), channel)


def data_string(data: Any) -> str:
    """Client ``data`` as the string relayed to others: strings as sent, else JSON."""
    return data if isinstance(data, str) else dumps(data)


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """One parsed client-to-server frame."""

    event: str
    channel: str | None
    data: Any

    def data_object(self) -> dict[str, Any]:
        """``data`` as an object, decoding a JSON string if the client sent one."""
        data = self.data
        if isinstance(data, str):
            try:
                data = text.loads(data)
            except text.InvalidText as error:
                raise MessageRejected(f"{self.event}: data is not valid JSON: {error.message}"
                                      ) from None
        if not isinstance(data, dict):
            raise MessageRejected(f"{self.event}: data must be an object")
        return data


def parse_client_frame(message: str | bytes) -> ClientFrame:
    """Parse one inbound WebSocket message, raising :class:`MessageRejected`.

    The whole message goes through :func:`text.loads`, so every string of the
    frame (event, channel, data) encodes as UTF-8.
    """
    if isinstance(message, bytes):
        raise MessageRejected("Binary frames are not supported: send UTF-8 JSON text")
    try:
        frame = text.loads(message)
    except text.InvalidText as error:
        raise MessageRejected(error.message) from None
    if not isinstance(frame, dict):
        raise MessageRejected("A message must be a JSON object")
    event = frame.get("event")
    if not isinstance(event, str) or not event:
        raise MessageRejected("A message needs an 'event' string")
    channel = frame.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise MessageRejected("'channel' must be a string")
    return ClientFrame(event, channel, frame.get("data"))
