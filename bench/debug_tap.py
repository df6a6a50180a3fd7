"""What the admin's debug console costs a process: one observer call, timed three ways.

    python bench/debug_tap.py [--calls 200000]

Prints nanoseconds per ``hub.observers.published`` call (told once per publish,
where it is accepted; never per delivery) with one no-op observer, then with
the debug tap added and the app unwatched, then with the app watched and the
rate cap reached, so each call is counted as skipped after copying its record.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import checkout  # noqa: E402

checkout.load()

from tornado_push.pubsub.apps import App, AppRegistry  # noqa: E402
from tornado_push.pubsub.broker import Publication  # noqa: E402
from tornado_push.pubsub.debug import DebugFeeds, DebugFilter, DebugTap, DebugWatcher  # noqa: E402
from tornado_push.pubsub.hub import Hub  # noqa: E402
from tornado_push.pubsub.observe import Observer  # noqa: E402


def nanoseconds_per_call(hub: Hub, app: App, calls: int) -> float:
    publication = Publication(app.id, "news", "event", "{}")
    start = time.perf_counter()
    for _ in range(calls):
        hub.observers.published(app, publication, "api")
    return (time.perf_counter() - start) / calls * 1e9


async def main(calls: int) -> None:
    app = App(id="1", key="key", secret="secret")
    hub = Hub(AppRegistry([app]))
    await hub.start()
    hub.observers.add(Observer())
    alone = nanoseconds_per_call(hub, app, calls)
    DebugTap(hub)
    feeds = DebugFeeds(hub)
    unwatched = nanoseconds_per_call(hub, app, calls)
    await feeds.watch(DebugWatcher(app.id, DebugFilter(), lambda batch: None))
    watched = nanoseconds_per_call(hub, app, calls)
    print(f"one no-op observer: {alone:.0f} ns/call; + debug tap, app unwatched: "
          f"{unwatched:.0f} ns/call; app watched, over the rate cap: {watched:.0f} ns/call")
    await feeds.close()
    await hub.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().calls))
