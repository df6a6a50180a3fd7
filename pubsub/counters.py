"""Plain counters of what one app does on this process, kept where it happens.

They are ints on a slotted object, not Prometheus metrics: incrementing one
is an attribute add on the event loop's one thread, cheap enough for the
paths that run per message or per delivery. :mod:`.metrics` reads them at
scrape time; they are kept whether metrics are on or not.
"""

from __future__ import annotations

from .observe import SOURCE_ADMIN, SOURCE_API, SOURCE_BATCH_API, SOURCE_CLIENT_EVENT, SOURCE_SERVER

#: Where a publication entered the cluster, for ``publications``.
SOURCES = (SOURCE_API, SOURCE_BATCH_API, SOURCE_CLIENT_EVENT, SOURCE_SERVER, SOURCE_ADMIN)
#: What a client frame was, for ``frames_received``.
FRAME_KINDS = ("subscribe", "unsubscribe", "ping", "pong", "signin", "client_event", "invalid")


class AppCounters:
    """Totals since the process started, for one app.

    ``sent_bytes`` counts the channel-event frames handed to sockets (the
    frame's length times its recipients) and every frame the session sends
    itself (greeting, replies, errors); ``received_bytes`` the length of each
    client message in bytes (a text message's UTF-8 size).
    """

    __slots__ = ("publications", "deliveries", "sent_bytes", "received_bytes", "frames", "signins",
                 "history_appends", "history_reads", "history_replayed", "resumes_succeeded",
                 "resumes_failed", "slow_consumers", "inbound_limited", "client_events_limited")

    def __init__(self) -> None:
        #: Publications accepted here (one per channel), by source (:data:`SOURCES`).
        self.publications = dict.fromkeys(SOURCES, 0)
        #: Channel-event frames handed to sockets' write queues.
        self.deliveries = 0
        self.sent_bytes = 0
        self.received_bytes = 0
        #: Client frames received, by kind (:data:`FRAME_KINDS`).
        self.frames = dict.fromkeys(FRAME_KINDS, 0)
        self.signins = 0
        #: Publications stored in history at their origin here.
        self.history_appends = 0
        #: History reads for clients: HTTP API history queries and resumes.
        self.history_reads = 0
        #: Publications sent again from history to resuming clients.
        self.history_replayed = 0
        self.resumes_succeeded = 0
        self.resumes_failed = 0
        #: Connections closed for not reading what they were sent.
        self.slow_consumers = 0
        #: Client messages dropped over the inbound rate, client events refused over theirs.
        self.inbound_limited = 0
        self.client_events_limited = 0
