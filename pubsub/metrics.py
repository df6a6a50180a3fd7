"""This process's Prometheus metrics (``tornado_push_*``), on a registry of its own.

:class:`Metrics` is built with ``prometheus_client``, on its own
``CollectorRegistry`` (several hubs may share one process, in tests or a host
app; the library's global registry is never used), with the default process,
GC and platform collectors on it. It gathers in two ways:

* rare events (connections, refusals, webhooks, signature failures) as an
  :class:`~.observe.Observer`, into ``prometheus_client`` counters;
* the hot paths (publications, deliveries, frames, bytes, publication timings,
  HTTP answers) and the gauges are read at scrape time by :class:`_Collector`,
  from the plain counters kept where things happen (:mod:`.counters`,
  :mod:`.timing`, :attr:`Metrics.http_answers`) and from the hub's own
  structures, so the broadcast path pays no lock and no call per socket and
  each gauge is right by construction.

Labels take values from bounded sets only: ``app`` a configured app id (else
``_unknown``), ``channel_type`` from the channel's name prefix, close codes
from the protocol's (else ``other``); never a channel, socket, user, event or
address. docs/observability.md lists every metric.
"""

from __future__ import annotations

import asyncio
import platform
from collections import Counter as Tally
from typing import TYPE_CHECKING, Iterable, Iterator

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from .apps import App
from .counters import FRAME_KINDS, SOURCES
from .errors import ErrorCode
from .observe import Observer
from .protocol import ChannelKind
from .redis.client import COMMAND_SECONDS
from .timing import LATENCY_BUCKETS, Buckets, PublishTimer

if TYPE_CHECKING:
    from .hub import Hub
    from .session import Session

PREFIX = "tornado_push_"
#: The ``app`` label of anything that names no configured app (unknown key, failed auth).
UNKNOWN_APP = "_unknown"
#: The ``transport`` label of the zeroes made at start and of the byte counters, which are
#: kept per app, not per transport; connections are labelled by ``session.transport.kind``.
TRANSPORT = "ws"
#: Close codes that are labels as they are; any other a client chose is ``other``.
CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011}
                        | {int(code) for code in ErrorCode})
#: Seconds between two event-loop lag probes.
LOOP_PROBE_INTERVAL = 0.5


def channel_type(kind: ChannelKind) -> str:
    """The ``channel_type`` label of a channel: public, private, private_encrypted, presence,
    each with ``_cache`` for cache channels (``cache`` alone for public ones), or
    server_to_user (``#server-to-user-``)."""
    if kind.server_to_user:
        return "server_to_user"
    base = ("presence" if kind.presence else "private_encrypted" if kind.encrypted
            else "private" if kind.authorized else "")
    if kind.cache:
        return f"{base}_cache" if base else "cache"
    return base or "public"


class Metrics(Observer):
    """One hub's metrics: an observer of the hub, and the registry ``/metrics`` serves.

    Call :meth:`start` on the running loop (it starts timing publications and the
    event-loop probe) and :meth:`close` at the end. ``version`` (this server's) and
    ``tornado`` (Tornado's, given by the caller: this package does not import Tornado)
    label ``tornado_push_build_info`` with Python's.
    """

    def __init__(self, hub: Hub, *, version: str, tornado: str) -> None:
        self.hub = hub
        self.registry = CollectorRegistry()
        registry = self.registry
        for collector in (ProcessCollector, GCCollector, PlatformCollector):
            collector(registry=registry)
        #: Apps this process has served: the ``app`` label's values (bounded by configuration).
        self._app_ids = {app.id for app in hub.apps}

        def counter(name: str, doc: str, labels: Iterable[str]) -> Counter:
            return Counter(PREFIX + name, doc, list(labels), registry=registry)

        self.opened = counter("connections_opened", "Connections admitted.", ("app", "transport"))
        self.closed = counter("connections_closed", "Admitted connections that ended, by close "
                              "code (1006: no close frame).", ("app", "transport", "code"))
        self.refused = counter("connections_refused", "Connections refused before being "
                               "established, by reason.", ("app", "reason"))
        self.subscriptions_refused = counter(
            "subscriptions_refused", "Subscriptions answered pusher:subscription_error, by status.",
            ("app", "status"))
        self.webhook_requests = counter("webhook_requests", "Webhook POSTs, by outcome.",
                                        ("app", "outcome"))
        self.webhooks_dropped = counter("webhook_events_dropped", "Webhook events given up, by "
                                       "reason.", ("app", "reason"))
        self.auth_failures = counter("http_auth_failures", "HTTP API requests whose signature "
                                     "was refused, by reason.", ("app", "reason"))
        self.webhook_seconds = Histogram(PREFIX + "webhook_request_duration_seconds",
                                         "Seconds of one webhook POST.", buckets=LATENCY_BUCKETS,
                                         registry=registry)
        self.loop_lag = Histogram(PREFIX + "event_loop_lag_seconds",
                                  f"How late a callback scheduled every {LOOP_PROBE_INTERVAL:g} s "
                                  "ran.", buckets=LATENCY_BUCKETS, registry=registry)
        Gauge(PREFIX + "build_info", "Always 1: the versions running.",
              ("version", "python", "tornado"), registry=registry
              ).labels(version, platform.python_version(), tornado).set(1)
        for app_id in self._app_ids:  # zeros, so that rates exist before the first event
            self.opened.labels(app_id, TRANSPORT)
        #: HTTP answers (app, endpoint, code) and seconds by endpoint: per request, so plain.
        self.http_answers: Tally[tuple[str, str, str]] = Tally()
        self.http_seconds: dict[str, Buckets] = {}
        self.timer = PublishTimer()
        registry.register(_Collector(self))
        self._probe: asyncio.TimerHandle | None = None
        hub.observers.add(self)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Time publications on the hub and probe the event loop; on the running loop."""
        self.hub.timer = self.timer
        loop = asyncio.get_running_loop()
        self._schedule_probe(loop)

    def close(self) -> None:
        """Stop the probe and stop listening to the hub."""
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self.hub.timer is self.timer:
            self.hub.timer = None
        self.hub.observers.remove(self)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def _schedule_probe(self, loop: asyncio.AbstractEventLoop) -> None:
        due = loop.time() + LOOP_PROBE_INTERVAL
        self._probe = loop.call_at(due, self._probed, loop, due)

    def _probed(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        self.loop_lag.observe(max(0.0, loop.time() - due))
        self._schedule_probe(loop)

    def app_label(self, app: App | None) -> str:
        if app is None:
            return UNKNOWN_APP
        if app.id not in self._app_ids:
            if self.hub.apps.by_id(app.id) is None:
                return UNKNOWN_APP
            self._app_ids.add(app.id)  # added by a reload
        return app.id

    # -- the observer ------------------------------------------------------------

    def connection_opened(self, session: Session) -> None:
        self.opened.labels(self.app_label(session.app), session.transport.kind).inc()

    def connection_refused(self, app: App | None, reason: str) -> None:
        self.refused.labels(self.app_label(app), reason).inc()

    def connection_closed(self, session: Session, code: int) -> None:
        label = str(code) if code in CLOSE_CODES else "other"
        self.closed.labels(self.app_label(session.app), session.transport.kind, label).inc()

    def subscription_refused(self, session: Session, channel: str, status: int) -> None:
        self.subscriptions_refused.labels(self.app_label(session.app), str(status)).inc()

    def webhook_attempted(self, app: App, url: str, events: list[dict[str, object]],
                          outcome: str, status: int | None, seconds: float) -> None:
        self.webhook_requests.labels(self.app_label(app), outcome).inc()
        self.webhook_seconds.observe(seconds)

    def webhook_dropped(self, app: App, url: str, events: list[dict[str, object]],
                        reason: str) -> None:
        self.webhooks_dropped.labels(self.app_label(app), reason).inc(len(events))

    def http_answered(self, app: App | None, endpoint: str, status: int, seconds: float) -> None:
        self.http_answers[self.app_label(app), endpoint, str(status)] += 1
        buckets = self.http_seconds.get(endpoint)
        if buckets is None:
            buckets = self.http_seconds[endpoint] = Buckets()
        buckets.observe(seconds)

    def http_auth_failed(self, app: App | None, reason: str) -> None:
        self.auth_failures.labels(self.app_label(app), reason).inc()


class _Collector(Collector):
    """What is read at scrape time: the hub's structures and plain counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # collected afresh at each scrape; names are checked then

    def collect(self) -> Iterator[Metric]:
        yield from self._local_state()
        yield from self._app_counters()
        yield from self._webhooks()
        yield from self._broker()
        yield from self._timings()
        yield from self._http()

    def _local_state(self) -> Iterator[Metric]:
        hub = self._metrics.hub
        connections = GaugeMetricFamily(PREFIX + "connections", "Open connections.",
                                        labels=("app", "transport"))
        subscriptions = GaugeMetricFamily(PREFIX + "subscriptions", "Subscriptions of this "
                                          "process's connections.", labels=("app", "channel_type"))
        channels = GaugeMetricFamily(PREFIX + "channels", "Channels with a subscriber here.",
                                     labels=("app", "channel_type"))
        members = GaugeMetricFamily(PREFIX + "presence_members", "Distinct users of each "
                                    "presence channel here, summed over channels.", labels=("app",))
        for state in hub.app_states():
            app_id = state.app.id
            by_transport = Tally(session.transport.kind for session in list(state.sessions.values()))
            for transport in by_transport or (TRANSPORT,):
                connections.add_metric((app_id, transport), by_transport[transport])
            subscribed: Tally[str] = Tally()
            occupied: Tally[str] = Tally()
            users = 0
            for channel in list(state.channels.values()):
                kind = channel_type(channel.kind)
                subscribed[kind] += channel.size
                occupied[kind] += 1
                if channel.kind.presence:
                    users += len({member.user_id for session in channel.subscribers.values()
                                  if (member := session.channels.get(channel.name)) is not None})
            for kind in occupied:
                subscriptions.add_metric((app_id, kind), subscribed[kind])
                channels.add_metric((app_id, kind), occupied[kind])
            members.add_metric((app_id,), users)
        yield from (connections, subscriptions, channels, members)
        yield GaugeMetricFamily(PREFIX + "draining", "1 while this process drains.",
                                value=int(hub.draining))

    def _app_counters(self) -> Iterator[Metric]:
        def family(name: str, doc: str, *labels: str) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, labels=("app", *labels))

        publications = family("publications", "Publications accepted here (one per channel), "
                              "by where they came from.", "source")
        deliveries = family("deliveries", "Channel-event frames handed to sockets' write queues.")
        frames = family("frames_received", "Client frames received, by kind.", "kind")
        received = family("received_bytes", "Bytes of the client messages received "
                          "(a text message's UTF-8 size, without framing).", "transport")
        sent = family("sent_bytes", "Bytes of the frames queued to clients (channel events "
                      "times recipients, and the server's own replies).", "transport")
        signins = family("signins", "Users signed in (pusher:signin accepted).")
        appends = family("history_appends", "Publications stored in history at their origin here.")
        reads = family("history_reads", "History reads for clients: API history queries, resumes.")
        replayed = family("history_replayed", "Publications sent again from history to resuming "
                          "clients.")
        resumes = family("history_resumes", "Resumes, by result.", "result")
        slow = family("slow_consumer_disconnects", "Connections closed (4100) for not reading "
                      "what they were sent.")
        limited = family("rate_limited", "Client messages dropped (inbound) or client events "
                         "refused (client_events) over their rate limit.", "limit")
        for state in self._metrics.hub.app_states():
            app_id, counts = state.app.id, state.counters
            for source in SOURCES:
                publications.add_metric((app_id, source), counts.publications[source])
            deliveries.add_metric((app_id,), counts.deliveries)
            for kind in FRAME_KINDS:
                frames.add_metric((app_id, kind), counts.frames[kind])
            received.add_metric((app_id, TRANSPORT), counts.received_bytes)
            sent.add_metric((app_id, TRANSPORT), counts.sent_bytes)
            signins.add_metric((app_id,), counts.signins)
            appends.add_metric((app_id,), counts.history_appends)
            reads.add_metric((app_id,), counts.history_reads)
            replayed.add_metric((app_id,), counts.history_replayed)
            resumes.add_metric((app_id, "succeeded"), counts.resumes_succeeded)
            resumes.add_metric((app_id, "failed"), counts.resumes_failed)
            slow.add_metric((app_id,), counts.slow_consumers)
            limited.add_metric((app_id, "inbound"), counts.inbound_limited)
            limited.add_metric((app_id, "client_events"), counts.client_events_limited)
        yield from (publications, deliveries, frames, received, sent, signins, appends, reads,
                    replayed, resumes, slow, limited)

    def _webhooks(self) -> Iterator[Metric]:
        hub = self._metrics.hub
        depth = GaugeMetricFamily(PREFIX + "webhook_queue_depth", "Webhook events waiting to "
                                  "be posted (the batch being posted included).", labels=("app",))
        retries = CounterMetricFamily(PREFIX + "webhook_retries", "Webhook POSTs that were not "
                                      "a batch's first attempt.", labels=("app",))
        for state in hub.app_states():
            depth.add_metric((state.app.id,), hub.webhooks.queue_depth(state.app))
            retries.add_metric((state.app.id,), hub.webhooks.stats(state.app).retries)
        yield from (depth, retries)

    def _broker(self) -> Iterator[Metric]:
        status = self._metrics.hub.broker_status()
        yield GaugeMetricFamily(PREFIX + "broker_connected", "1 while the broker (Redis) is "
                                "connected; always 1 in one process.",
                                value=int(bool(status["connected"])))
        yield CounterMetricFamily(PREFIX + "broker_reconnects", "Reconnections of the broker's "
                                  "subscriber to Redis.", value=status["reconnects"])
        commands = HistogramMetricFamily(PREFIX + "broker_command_duration_seconds",
                                         "Seconds of each Redis command of this process, by "
                                         "operation.", labels=("op",))
        # The durations are process-wide (redis/client.py): an engine on the memory broker
        # shows none, even beside another engine of the same process that uses Redis.
        if status["kind"] != "memory":
            for op, buckets in sorted(COMMAND_SECONDS.items()):
                commands.add_metric((op,), *_histogram(buckets))
        yield commands

    def _timings(self) -> Iterator[Metric]:
        timer = self._metrics.timer
        for name, buckets, doc in (
                ("publish_latency_seconds", timer.latency, "From acceptance at the origin "
                 "process to the last socket write of the publication on this process."),
                ("broker_lag_seconds", timer.broker_lag, "From acceptance at the origin "
                 "process to the broker handing the publication to this process."),
                ("fanout_duration_seconds", timer.fanout, "Seconds of one publication's local "
                 "send loop.")):
            family = HistogramMetricFamily(PREFIX + name, doc)
            family.add_metric((), *_histogram(buckets))
            yield family

    def _http(self) -> Iterator[Metric]:
        metrics = self._metrics
        answers = CounterMetricFamily(PREFIX + "http_requests", "HTTP requests answered, by "
                                      "route name and status.", labels=("app", "endpoint", "code"))
        for labels, count in sorted(metrics.http_answers.items()):
            answers.add_metric(labels, count)
        seconds = HistogramMetricFamily(PREFIX + "http_request_duration_seconds",
                                        "Seconds from a request's start to its answer.",
                                        labels=("endpoint",))
        for endpoint, buckets in sorted(metrics.http_seconds.items()):
            seconds.add_metric((endpoint,), *_histogram(buckets))
        yield from (answers, seconds)


def _histogram(buckets: Buckets) -> tuple[list[tuple[str, float]], float]:
    """``HistogramMetricFamily.add_metric``'s cumulative buckets and sum of ``buckets``."""
    cumulative, total = [], 0
    for bound, count in zip((*map(str, buckets.bounds), "+Inf"), buckets.counts):
        total += count
        cumulative.append((bound, total))
    return cumulative, buckets.sum
