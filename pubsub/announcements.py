"""Webhooks and subscription counts: what a cluster-wide change sends besides presence events.

Each join or leave goes to the :class:`~.state.ClusterState`, which reports
whether it changed something for the whole cluster: the channel's first or
last subscriber, a user's first or last connection on a presence channel.
Only the process whose call caused the change sends its webhook, so each
goes out once per cluster. The presence events (``member_added``,
``member_removed``) are published by the transition itself, so that they
reach every process in the cluster's order (see :meth:`.ClusterState.join`).
What a dead process left behind is removed by a surviving process
(:meth:`Announcer.reap_forever`), which then announces it the same way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from . import protocol
from .apps import App, AppRegistry
from .broker import Broker, Publication
from .channels import LocalChannel
from .counts import SubscriptionCountThrottle
from .errors import BrokerUnavailable
from .presence import Member
from .state import Arrival, ClusterState, Departure, Orphan
from .users import Users
from .webhooks import Webhooks

log = logging.getLogger(__name__)

#: Runs a coroutine in the background, logging its failure with the description.
Spawn = Callable[[Awaitable[Any], str], None]


class Announcer:
    """Sends what the cluster state's transitions mean for clients and webhooks."""

    def __init__(self, apps: AppRegistry, broker: Broker, state: ClusterState,
                 webhooks: Webhooks, users: Users, spawn: Spawn,
                 clock: Callable[[], float]) -> None:
        self._apps = apps
        self._broker = broker
        self._state = state
        self._webhooks = webhooks
        self._users = users
        self._spawn = spawn
        self._counts = SubscriptionCountThrottle(self._announce_count, clock)

    def close(self) -> None:
        """Drop the subscription counts still waiting for their window."""
        self._counts.close()

    def arrived(self, app: App, channel: LocalChannel, arrival: Arrival,
                member: Member | None) -> None:
        """A session (``member`` on presence) subscribed here."""
        if arrival.occupied:
            self._webhooks.channel_occupied(app, channel.name)
        self.subscribers_changed(app, channel)
        if member is not None and arrival.member_added:
            self._webhooks.member_added(app, channel.name, member.user_id)

    def departed(self, app: App, name: str, departure: Departure) -> None:
        """A subscription ended, here or (reaped) on a dead process."""
        if departure.removed_user is not None:
            self._webhooks.member_removed(app, name, departure.removed_user)
        if departure.vacated:
            self._webhooks.channel_vacated(app, name)

    def subscribers_changed(self, app: App, channel: LocalChannel) -> None:
        """The channel's local subscribers changed: its count is due, throttled."""
        # Presence channels count users instead, through member events.
        if not channel.kind.presence:
            self._counts.changed(app, channel.name, channel.size)

    def _announce_count(self, app: App, name: str) -> None:
        self._spawn(self._send_count(app, name), f"subscription count of {name}")

    async def _send_count(self, app: App, name: str) -> None:
        count = (await self._state.counts(app.id, name)).subscriptions
        self._webhooks.subscription_count(app, name, count)
        if app.subscription_count_events and count:
            await self._broker.publish(Publication(
                app.id, name, protocol.SUBSCRIPTION_COUNT,
                protocol.dumps({"subscription_count": count})))

    async def reap_forever(self) -> None:
        """Remove dead processes' leftovers as their deadlines pass, and announce them."""
        while True:
            try:
                await asyncio.sleep(await self._state.until_reap())
                orphans = await self._state.reap()
            except BrokerUnavailable as outage:  # the next round tries again
                log.warning("could not reap dead processes' state: %s", outage.message)
                await asyncio.sleep(self._state.reap_interval or 0)
                continue
            for orphan in orphans:
                await self._announce_orphan(orphan)

    async def _announce_orphan(self, orphan: Orphan) -> None:
        app = self._apps.by_id(orphan.app_id)
        if app is None:
            return
        if orphan.channel is not None and orphan.departure is not None:
            self.departed(app, orphan.channel, orphan.departure)
        if orphan.offline_user is not None:
            await self._users.announce(app.id, orphan.offline_user, "offline")
