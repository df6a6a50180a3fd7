"""Node records: what each process of a deployment reports of itself, for the admin console.

While the admin console is on, every process runs a :class:`NodeReporter`: every
:data:`REPORT_INTERVAL` seconds it writes a record (address, pid, uptime,
connections, channels, subscriptions, event-loop lag, memory, broker state,
draining) to the cluster state, where it expires after :data:`RECORD_TTL`
unless refreshed, so a dead process drops out of the nodes table by itself.
The reporter also handles the ``drain`` control message addressed to its node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

from .errors import BrokerUnavailable

if TYPE_CHECKING:
    from .hub import Hub

log = logging.getLogger(__name__)

#: Seconds between two records of one process.
REPORT_INTERVAL = 2.0
#: Seconds a record stays without a refresh: three reports missed and it is gone.
RECORD_TTL = 3 * REPORT_INTERVAL
#: The control message that asks one node to drain.
DRAIN = "drain"
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class NodeReporter:
    """Writes this process's node record periodically and drains when asked to.

    ``address`` is the host:port this process listens on (told by the
    caller, which knows it); ``drain`` runs the process's graceful stop when
    a ``drain`` control message names this node.
    """

    def __init__(self, hub: Hub, address: str, drain: Callable[[], None],
                 interval: float = REPORT_INTERVAL) -> None:
        self._hub = hub
        self._address = address
        self._drain = drain
        self._interval = interval
        self._started = time.time()
        self._lag = 0.0  # seconds the last periodic sleep overran
        self._task: asyncio.Task[None] | None = None
        hub.control.register(DRAIN, self._on_drain)

    def start(self) -> None:
        """Report now and every interval, on the running loop."""
        self._task = asyncio.ensure_future(self._report_forever())

    async def close(self) -> None:
        """Stop reporting, after one last record (a draining process shows as draining
        until its record is removed with its registration, or expires)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            await self._report()

    async def _report(self) -> None:
        try:
            await self._hub.state.put_node(self._hub.node_id, self.record(), RECORD_TTL)
        except BrokerUnavailable as outage:
            log.warning("node record not written: %s", outage.message)

    def record(self) -> dict[str, Any]:
        """This process's figures now, as the nodes table shows them."""
        hub = self._hub
        apps, channels, subscriptions = {}, 0, 0
        for app in hub.apps:
            apps[app.id], app_channels, app_subscriptions = hub.local_counts(app)
            channels += app_channels
            subscriptions += app_subscriptions
        return {"node": hub.node_id, "address": self._address, "pid": os.getpid(),
                "started": self._started, "uptime": round(time.time() - self._started, 1),
                "connections": hub.connection_count, "apps": apps, "channels": channels,
                "subscriptions": subscriptions, "loop_lag": round(self._lag, 4),
                "rss_bytes": rss_bytes(), "broker": hub.health()["broker"],
                "draining": hub.draining}

    async def _report_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._report()
            due = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            # The loop's own lateness: how long ready callbacks kept this wake-up waiting.
            self._lag = max(0.0, loop.time() - due)

    async def request_drain(self, node_id: int) -> None:
        """Ask node ``node_id`` (this one or another) to drain as on SIGTERM."""
        await self._hub.broadcast({"type": DRAIN, "node": node_id})

    def _on_drain(self, message: dict[str, Any]) -> None:
        if message.get("node") == self._hub.node_id and not self._hub.draining:
            log.warning("draining: asked to by the admin console")
            self._drain()
