"""Webhooks: what happened on an app's channels, batched, signed and posted to its URLs.

The hub calls the event methods (``channel_occupied`` ...) synchronously; they
only enqueue. Each of an app's :class:`~pubsub.apps.WebhookTarget` URLs has an
outbox and one background task that collects events for ``batch_seconds``,
posts them as one signed batch and retries that same batch with exponential
backoff until it is accepted or ``retry_for`` has passed. A failing URL
therefore never delays another, and each URL sees its events in order.

Cluster seam: these methods describe cluster-wide transitions (first
subscriber anywhere, last member anywhere). With one process the hub's local
view is the cluster's. A multi-process broker must call them only from the
process that observes the cluster-wide transition (e.g. the one whose Redis
counter went 0 → 1), so that each webhook fires once per cluster.

Different processes' outboxes are not ordered with each other: a leave held on
one process may expire after the user (or channel) came back through another,
which has already sent its ``member_added``. So right before each POST
(first attempt or retry) the occupancy and membership events of the batch are
checked against the cluster state, and those it no longer bears out are
dropped (counted as ``superseded``): what the app receives last for a channel
or member is what the cluster state said when it was sent, at the batch's
``time_ms``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .apps import App, WebhookTarget
from .errors import BrokerUnavailable
from .observe import Observer
from .signing import webhook_signature
from .state import ClusterState

log = logging.getLogger(__name__)

#: ``await post(url, body, headers)`` returns the HTTP status; raises OSError on network errors.
Poster = Callable[[str, bytes, dict[str, str]], Awaitable[int]]

#: Seconds between two "queue full" warnings for one URL: a flood logs a count, not a line per event.
_OVERFLOW_LOG_INTERVAL = 10.0
#: Events that state something of the cluster state, checked before each POST: whether
#: the channel is occupied, or the user a member, as each says.
_STATES = {"channel_occupied": True, "channel_vacated": False,
           "member_added": True, "member_removed": False}


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """Process-wide delivery settings (which URLs and events: per app, on :class:`App`)."""

    #: Seconds that collect events into one POST after the first one arrives.
    batch_seconds: float = 0.25
    #: Seconds ``channel_vacated`` and ``member_removed`` wait, dropped if the channel or user is back.
    leave_delay: float = 3.0
    #: Seconds after a batch's first attempt during which it is retried; then it is dropped.
    retry_for: float = 300.0
    #: Seconds before the first retry; each later wait doubles, up to ``max_retry``.
    first_retry: float = 1.0
    max_retry: float = 60.0
    #: Events waiting per URL; when full, the oldest is dropped and counted.
    queue_size: int = 10_000
    #: Events in one POST at most; more wait for the next batch.
    max_batch: int = 100
    #: Seconds one POST may take.
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.queue_size < 1 or self.max_batch < 1:
            raise ValueError("queue_size and max_batch must be at least 1")


@dataclass(slots=True)
class WebhookStats:
    """Counters for one app over all its URLs, for tests and metrics."""

    delivered: int = 0
    #: Dropped unsent because an outbox was full (the oldest go first).
    dropped: int = 0
    #: Dropped after ``retry_for`` of failed attempts.
    failed: int = 0
    #: Attempts that were not a batch's first.
    retries: int = 0
    #: Dropped unsent because the cluster state no longer said what they said (the
    #: channel or user came back, or left, through another process meanwhile).
    superseded: int = 0


class _Outbox:
    """Events waiting for one URL of one app."""

    __slots__ = ("app", "target", "events", "sending", "ready", "task", "overflow_logged_at",
                 "unlogged_drops")

    def __init__(self, app: App, target: WebhookTarget) -> None:
        self.app = app
        self.target = target
        self.events: deque[dict[str, Any]] = deque()
        #: Events in the batch being posted (or waiting for its next attempt).
        self.sending = 0
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.overflow_logged_at = float("-inf")
        self.unlogged_drops = 0


class Webhooks:
    """Collects webhook events per app and URL and delivers them in the background.

    Every public method returns at once and never raises into the hub. With
    ``post=None`` (no HTTP client) events are discarded: webhooks are off.
    """

    def __init__(self, post: Poster | None = None, *, options: WebhookOptions = WebhookOptions(),
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._post = post
        self.options = options
        self._clock = clock
        self._wall_clock = wall_clock
        self._outboxes: dict[tuple[str, WebhookTarget], _Outbox] = {}
        self._stats: dict[str, WebhookStats] = {}
        #: Held leaves, by (app id, channel) or (app id, channel, user id).
        self._held: dict[tuple[str, ...], asyncio.TimerHandle] = {}
        self._closed = False
        #: Set by the hub: what occupancy and membership events are checked against
        #: before each POST (None: sent as they are).
        self.cluster: ClusterState | None = None
        #: Set by the hub: told each attempt and each drop (see :mod:`.observe`).
        self.observers = Observer()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to connect: outbox tasks start with an app's first event."""
        self._closed = False

    async def close(self) -> None:
        """Cancel held leaves and deliveries; what was still pending is dropped and logged."""
        self._closed = True
        for handle in self._held.values():
            handle.cancel()
        pending = len(self._held) + sum(len(outbox.events) + outbox.sending
                                        for outbox in self._outboxes.values())
        self._held.clear()
        tasks = [outbox.task for outbox in self._outboxes.values() if outbox.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._outboxes.clear()
        if pending:
            log.warning("webhooks closed with %d event(s) undelivered", pending)

    def stats(self, app: App) -> WebhookStats:
        """This app's counters (zeros for an app that never had an event)."""
        return self._stats.setdefault(app.id, WebhookStats())

    def queue_depth(self, app: App) -> int:
        """The app's events waiting to be posted, over all its URLs (those of the batch
        being posted included; held leaves, which may yet be cancelled, not)."""
        return sum(len(outbox.events) + outbox.sending
                   for (app_id, _), outbox in self._outboxes.items() if app_id == app.id)

    # -- events from the hub -------------------------------------------------------

    def channel_occupied(self, app: App, channel: str) -> None:
        if self._wants(app) and not self._cancel_leave((app.id, channel)):
            self._enqueue(app, {"name": "channel_occupied", "channel": channel})

    def channel_vacated(self, app: App, channel: str) -> None:
        if self._wants(app):
            self._hold_leave(app, (app.id, channel), {"name": "channel_vacated", "channel": channel})

    def member_added(self, app: App, channel: str, user_id: str) -> None:
        if self._wants(app) and not self._cancel_leave((app.id, channel, user_id)):
            self._enqueue(app, {"name": "member_added", "channel": channel, "user_id": user_id})

    def member_removed(self, app: App, channel: str, user_id: str) -> None:
        if self._wants(app):
            event = {"name": "member_removed", "channel": channel, "user_id": user_id}
            self._hold_leave(app, (app.id, channel, user_id), event)

    def client_event(self, app: App, channel: str, event: str, data: str,
                     socket_id: str, user_id: str | None) -> None:
        if self._wants(app):
            body = {"name": "client_event", "channel": channel, "event": event, "data": data,
                    "socket_id": socket_id}
            if user_id is not None:
                body["user_id"] = user_id
            self._enqueue(app, body)

    def cache_miss(self, app: App, channel: str) -> None:
        if self._wants(app):
            self._enqueue(app, {"name": "cache_miss", "channel": channel})

    def subscription_count(self, app: App, channel: str, count: int) -> None:
        # Counting is an opt-in app feature, as on the hosted service.
        if self._wants(app) and app.subscription_count_events:
            self._enqueue(app, {"name": "subscription_count", "channel": channel,
                                "subscription_count": count})

    def _wants(self, app: App) -> bool:
        """Whether an event of ``app`` can go anywhere; the fast path for most apps."""
        return bool(app.webhooks) and self._post is not None and not self._closed

    # -- leave suppression ---------------------------------------------------------

    def _hold_leave(self, app: App, key: tuple[str, ...], event: dict[str, Any]) -> None:
        """Enqueue ``event`` after ``leave_delay`` unless :meth:`_cancel_leave` comes first."""
        delay = self.options.leave_delay
        if delay <= 0:
            self._enqueue(app, event)
            return

        def expired() -> None:
            self._held.pop(key, None)
            self._enqueue(app, event)

        previous = self._held.pop(key, None)
        if previous is not None:  # a second leave without a join between: keep one
            previous.cancel()
        self._held[key] = asyncio.get_running_loop().call_later(delay, expired)

    def _cancel_leave(self, key: tuple[str, ...]) -> bool:
        """True when a held leave for ``key`` was dropped: the join that follows is dropped too."""
        handle = self._held.pop(key, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    # -- delivery ----------------------------------------------------------------

    def _enqueue(self, app: App, event: dict[str, Any]) -> None:
        if self._closed:  # a held leave may expire while closing
            return
        for target in app.webhooks:
            if target.wants(event["name"], event["channel"]):
                outbox = self._outbox(app, target)
                outbox.events.append(event)
                self._trim(outbox)

    def _outbox(self, app: App, target: WebhookTarget) -> _Outbox:
        outbox = self._outboxes.get((app.id, target))
        if outbox is None:
            outbox = self._outboxes[(app.id, target)] = _Outbox(app, target)
            outbox.task = asyncio.get_running_loop().create_task(self._deliver_forever(outbox))
            outbox.task.add_done_callback(_log_crash)
        outbox.ready.set()
        return outbox

    def _trim(self, outbox: _Outbox) -> None:
        """Drop the oldest events beyond ``queue_size``; warn at most every few seconds."""
        excess = len(outbox.events) - self.options.queue_size
        if excess <= 0:
            return
        dropped = [outbox.events.popleft() for _ in range(excess)]
        self.stats(outbox.app).dropped += excess
        self.observers.webhook_dropped(outbox.app, outbox.target.url, dropped, "queue_full")
        outbox.unlogged_drops += excess
        now = self._clock()
        if now - outbox.overflow_logged_at >= _OVERFLOW_LOG_INTERVAL:
            log.warning("app %s: webhook queue for %s is full (%d events): dropped the %d oldest",
                        outbox.app.id, outbox.target.url, self.options.queue_size,
                        outbox.unlogged_drops)
            outbox.overflow_logged_at = now
            outbox.unlogged_drops = 0

    async def _deliver_forever(self, outbox: _Outbox) -> None:
        while True:
            await outbox.ready.wait()
            await asyncio.sleep(self.options.batch_seconds)  # let more events join this batch
            size = min(len(outbox.events), self.options.max_batch)
            batch = [outbox.events.popleft() for _ in range(size)]
            if not outbox.events:
                outbox.ready.clear()
            if batch:
                outbox.sending = len(batch)
                await self._deliver(outbox, batch)
                outbox.sending = 0

    async def _deliver(self, outbox: _Outbox, batch: list[dict[str, Any]]) -> None:
        """Post one batch until it is accepted or ``retry_for`` has passed."""
        app, url, options = outbox.app, outbox.target.url, self.options
        give_up_at = self._clock() + options.retry_for
        delay, attempt = options.first_retry, 0
        while True:
            attempt += 1
            batch = await self._still_true(app, url, batch)
            if not batch:
                return
            if attempt > 1:
                self.stats(app).retries += 1
            failure = await self._attempt(app, url, batch)
            if failure is None:
                self.stats(app).delivered += len(batch)
                return
            if self._clock() + delay > give_up_at:
                break
            log.warning("app %s: webhook to %s failed (%s, attempt %d): retrying in %g s",
                        app.id, url, failure, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, options.max_retry)
        self.stats(app).failed += len(batch)
        self.observers.webhook_dropped(app, url, batch, "retries_exhausted")
        log.error("app %s: webhook to %s failed (%s) for %g s: dropped %d event(s)",
                  app.id, url, failure, options.retry_for, len(batch))

    async def _still_true(self, app: App, url: str,
                          batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``batch`` without the occupancy and membership events that the cluster
        state no longer bears out."""
        if self.cluster is None or not any(event["name"] in _STATES for event in batch):
            return batch
        holds = await asyncio.gather(*(self._holds(app, event) for event in batch))
        kept = [event for event, true in zip(batch, holds) if true]
        if len(kept) < len(batch):
            self.stats(app).superseded += len(batch) - len(kept)
            superseded = [event for event, true in zip(batch, holds) if not true]
            self.observers.webhook_dropped(app, url, superseded, "superseded")
        return kept

    async def _holds(self, app: App, event: dict[str, Any]) -> bool:
        claim = _STATES.get(event["name"])
        if claim is None:
            return True
        assert self.cluster is not None
        channel = event["channel"]
        try:
            if "user_id" in event:
                actual = event["user_id"] in await self.cluster.members(app.id, channel)
            else:
                actual = (await self.cluster.counts(app.id, channel)).subscriptions > 0
        except BrokerUnavailable:  # nothing can change the state while Redis is away either
            return True
        return actual == claim

    def _sign(self, app: App, batch: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
        """Body and headers of one attempt. ``time_ms`` is when it is sent: the official
        SDKs refuse a body over 5 minutes old, which a late retry would otherwise be.
        """
        body = json.dumps({"time_ms": int(self._wall_clock() * 1000), "events": batch},
                          separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Pusher-Key": app.key,
                   "X-Pusher-Signature": webhook_signature(app, body)}
        return body, headers

    async def _attempt(self, app: App, url: str, batch: list[dict[str, Any]]) -> str | None:
        """One POST of ``batch``, told to observers: None when accepted, else what went wrong."""
        assert self._post is not None
        body, headers = self._sign(app, batch)
        started = self._clock()
        status: int | None = None
        try:
            status = await asyncio.wait_for(self._post(url, body, headers), self.options.timeout)
        except asyncio.TimeoutError as error:
            outcome, failure = "timeout", f"{type(error).__name__}: {error}"
        except OSError as error:
            outcome, failure = "connection_error", f"{type(error).__name__}: {error}"
        except Exception as error:  # a broken Poster must not end this URL's deliveries
            log.exception("webhook poster raised for %s", url)
            outcome, failure = "connection_error", f"{type(error).__name__}: {error}"
        else:
            accepted = 200 <= status < 300
            outcome = "success" if accepted else "http_error"
            failure = None if accepted else f"HTTP {status}"
        self.observers.webhook_attempted(app, url, batch, outcome, status,
                                         self._clock() - started)
        return failure


def _log_crash(task: asyncio.Task[None]) -> None:
    """A delivery task ends only when cancelled; anything else is a bug worth a traceback."""
    if not task.cancelled() and task.exception() is not None:
        log.error("webhook delivery task crashed", exc_info=task.exception())
