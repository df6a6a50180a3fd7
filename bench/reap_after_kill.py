"""Seconds from ``kill -9`` of a server process to ``member_removed`` on another, defaults.

    python bench/reap_after_kill.py [--rounds 3] [--heartbeat 15]

Each round starts two ``python server.py`` processes on one fresh Redis, an
observer on the first and a presence member on the second, waits until the
first has been in touch for two heartbeats (before that it does not reap,
see docs/architecture.md, "State"), kills the second with SIGKILL and prints
how long the observer waited for the member's ``member_removed``. The bound
is two heartbeats from the killed process's last one (30 s by default).
It uses the tests' helpers (tests/server_processes.py, tests/test_presence_order.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest  # noqa: E402,F401 (imports this checkout as tornado_push)
from redis_server import RedisServer  # noqa: E402
from server_processes import ServerGroup  # noqa: E402
from test_presence_order import Observer, present, settled  # noqa: E402


async def one_round(redis: RedisServer, heartbeat: float) -> float:
    group = ServerGroup()
    try:
        survivor, doomed = await group.start(2, PUSH_REDIS_URL=redis.url,
                                             PUSH_NODE_HEARTBEAT=str(heartbeat))
        started = time.monotonic()
        observer = await Observer.on(survivor, "observer")
        await present(doomed, "doomed")
        await settled(survivor, [observer], 2)
        await asyncio.sleep(max(0.0, started + 2 * heartbeat + 1 - time.monotonic()))
        killed = time.monotonic()
        await doomed.kill()
        await observer.until("pusher_internal:member_removed", timeout=10 * heartbeat)
        return time.monotonic() - killed
    finally:
        await group.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat", type=float, default=15.0)
    options = parser.parse_args()
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="reap-"))).start()
    try:
        for number in range(options.rounds):
            seconds = await one_round(redis, options.heartbeat)
            print(f"round {number + 1}: member_removed {seconds:.2f} s after kill -9 "
                  f"(heartbeat {options.heartbeat:g} s)", flush=True)
    finally:
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
