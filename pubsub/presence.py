"""Presence rosters: members counted per user, not per connection; the events they send."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import protocol
from .broker import Publication


@dataclass(frozen=True, slots=True)
class Member:
    """A presence member as the channel_data of its subscription named it."""

    user_id: str
    user_info: Any = None


class PresenceRoster:
    """The members of one presence channel.

    A user with several connections is one member: :meth:`join` reports only
    the first connection and :meth:`leave` only the last, which is when
    ``member_added`` and ``member_removed`` are due.
    """

    __slots__ = ("_members", "_connections")

    def __init__(self) -> None:
        self._members: dict[str, Member] = {}
        self._connections: dict[str, int] = {}

    def join(self, member: Member) -> bool:
        """Count one more connection of the member's user; True if the user is new."""
        count = self._connections.get(member.user_id, 0)
        self._connections[member.user_id] = count + 1
        if count == 0:
            self._members[member.user_id] = member
        return count == 0

    def leave(self, user_id: str) -> Member | None:
        """Count one connection of ``user_id`` less; the member if it was the last."""
        count = self._connections.get(user_id, 0)
        if count > 1:
            self._connections[user_id] = count - 1
            return None
        self._connections.pop(user_id, None)
        return self._members.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._members

    def members(self) -> dict[str, Any]:
        """user_id → user_info, the ``hash`` of a presence subscription."""
        return {user_id: member.user_info for user_id, member in self._members.items()}


def member_added(app_id: str, channel: str, member: Member, joiner: str) -> Publication:
    """``member_added`` for everyone on the channel but the joining connection ``joiner``."""
    data = protocol.dumps({"user_id": member.user_id, "user_info": member.user_info})
    return Publication(app_id, channel, protocol.MEMBER_ADDED, data, exclude=joiner)


def member_removed(app_id: str, channel: str, user_id: str) -> Publication:
    """``member_removed`` for everyone on the channel (the Redis state's Lua builds the same)."""
    return Publication(app_id, channel, protocol.MEMBER_REMOVED,
                       protocol.dumps({"user_id": user_id}))
