"""The HTTP API's channel queries, answered from the cluster state.

What ``/channels``, ``/channels/{c}`` and ``/channels/{c}/users`` report is
cluster-wide, whichever process answers; nothing here looks at this
process's own connections.
"""

from __future__ import annotations

from typing import Any

from . import protocol
from .apps import App
from .state import ChannelCounts, ClusterState


class ChannelQueries:
    """Occupancy, subscription counts and presence users of an app's channels."""

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    async def channel_info(self, app: App, name: str) -> dict[str, Any]:
        """``occupied``, ``subscription_count`` and, for presence, ``user_count`` of a channel."""
        return _info(name, await self._state.counts(app.id, name))

    async def occupied_channels(self, app: App, prefix: str = "") -> dict[str, dict[str, Any]]:
        """:meth:`channel_info` of every occupied channel whose name starts with ``prefix``."""
        channels = await self._state.channels(app.id, prefix)
        return {name: _info(name, counts) for name, counts in channels.items()}

    async def presence_user_ids(self, app: App, name: str) -> list[str]:
        """The user ids of a presence channel's members."""
        return list(await self._state.members(app.id, name))


def _info(name: str, counts: ChannelCounts) -> dict[str, Any]:
    info: dict[str, Any] = {"occupied": counts.subscriptions > 0,
                            "subscription_count": counts.subscriptions}
    if protocol.channel_kind(name).presence:
        info["user_count"] = counts.users
    return info
