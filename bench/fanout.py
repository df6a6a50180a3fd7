"""Fan-out benchmark: one process on the in-process broker vs. two processes through Redis.

    python bench/fanout.py [--subscribers 1000] [--messages 300] [--runs 3]

Both modes run in the same invocation, on the same machine, with the same
load client, and the figure printed for each is the median of ``--runs``:

- single: one server process; the subscribers and the HTTP publisher both
  talk to it (in-process broker, the embedded default);
- redis:  two server processes sharing a Redis; the subscribers are on one,
  the publisher posts to the other, so every message crosses Redis.

The delivering server is pinned to CPU 0 and the load client to CPU 1 where
the machine has two. The load client is ``bench/client.py`` (raw asyncio
protocols on uvloop, shared with ``bench/broadcast.py``): each subscriber
socket counts bytes only, so the client is not what limits the figure.
Messages are published as signed ``batch_events`` of 10, four in flight, on
keep-alive connections.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import client
from client import PUSHER, close_all, open_http, open_subscribers, publish_count, stamped
from servers import Processes, cpus, free_port, pin, raise_fd_limit

CHANNEL = "bench"


async def measure(subscribe_port: int, publish_port: int, subscribers: int, messages: int) -> float:
    """Deliveries per second of ``messages`` publishes to ``subscribers`` sockets."""
    receivers, _, _ = await open_subscribers(subscribe_port, subscribers, channel=CHANNEL)
    publishers = await open_http(publish_port, 4)
    # One message first: its frame size, the same for every subscriber, sizes the rest.
    warm = [r.expect(1) for r in receivers]
    await client.send(publishers[0], PUSHER.publish(publish_port, CHANNEL, [stamped()]))
    await asyncio.wait_for(asyncio.gather(*warm), 30)
    await asyncio.sleep(0.2)
    frame = receivers[0].received
    requests = -(-messages // 10)  # batch_events of 10, four in flight
    done = [r.expect(frame * requests * 10) for r in receivers]
    started = time.perf_counter()
    await publish_count(publishers, PUSHER.publish(publish_port, CHANNEL, [stamped()] * 10),
                        requests)
    await asyncio.wait_for(asyncio.gather(*done), 120)
    rate = subscribers * requests * 10 / (time.perf_counter() - started)
    close_all(receivers + publishers)
    return rate


def run_mode(mode: str, args: argparse.Namespace) -> float:
    """Start the servers for ``mode``, measure once, stop them."""
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory() as directory:
            subscribe_port = free_port()
            redis_url = None
            if mode == "redis":
                redis_port = free_port()
                processes.redis(redis_port, directory)
                redis_url = f"redis://127.0.0.1:{redis_port}"
            processes.ours(subscribe_port, redis_url=redis_url, cpu=0)
            publish_port = subscribe_port
            if mode == "redis":
                publish_port = free_port()
                processes.ours(publish_port, redis_url=redis_url, cpu=None)
            return client.run(measure(subscribe_port, publish_port, args.subscribers, args.messages))
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    raise_fd_limit()
    if cpus() >= 2:
        pin(0, 1)  # this load client; the delivering server goes to CPU 0
    results = {mode: [] for mode in ("single", "redis")}
    for _ in range(args.runs):
        for mode in results:  # interleaved, so drift in the machine hits both alike
            results[mode].append(run_mode(mode, args))
    single, redis = (statistics.median(results[m]) for m in ("single", "redis"))
    print(f"fan-out, {args.subscribers} subscribers, {args.messages} messages of "
          f"{client.DATA_BYTES} bytes, median of {args.runs}, load client on {client.LOOP_NAME}:")
    print(f"  single process, in-process broker : {single:10,.0f} deliveries/s")
    print(f"  two processes through Redis       : {redis:10,.0f} deliveries/s")
    print(f"  single / redis                    : {single / redis:10.2f}x  (target: <= 1.5x)")


if __name__ == "__main__":
    main()
