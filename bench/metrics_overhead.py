"""What metrics cost: one process's fan-out throughput with ``/metrics`` on and off, same run.

    python bench/metrics_overhead.py [--subscribers 1000] [--messages 1000] [--runs 5]

Each round starts one server process with ``PUSH_METRICS=1`` and one with
``PUSH_METRICS=0``, alternating which goes first, and measures each as
``bench/fanout.py`` does (its ``measure``: ``--subscribers`` sockets on one
channel, signed ``batch_events`` of 10, four in flight; the server on CPU 0,
this load client on CPU 1). The figures are the medians of ``--runs``
rounds; the target is metrics costing at most 5 % of the throughput.
With metrics on, ``/metrics`` is scraped once a second meanwhile, as a
Prometheus at a (busy) 1 s interval would.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import urllib.request

import client
from fanout import measure
from servers import Processes, cpus, free_port, pin, raise_fd_limit

MODES = {"on": "1", "off": "0"}


async def measure_scraped(port: int, subscribers: int, messages: int, scrape: bool) -> float:
    """:func:`fanout.measure`, with ``/metrics`` fetched every second meanwhile if ``scrape``."""

    async def scrape_forever() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=10).read())
            await asyncio.sleep(1)

    scraper = asyncio.ensure_future(scrape_forever()) if scrape else None
    try:
        return await measure(port, port, subscribers, messages)
    finally:
        if scraper is not None:
            scraper.cancel()


def run_mode(mode: str, args: argparse.Namespace) -> float:
    """One server with metrics ``mode`` (on or off), measured once, then stopped."""
    processes = Processes()
    try:
        port = free_port()
        processes.ours(port, cpu=0, env={"PUSH_METRICS": MODES[mode]})
        return client.run(measure_scraped(port, args.subscribers, args.messages, mode == "on"))
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    raise_fd_limit()
    if cpus() >= 2:
        pin(0, 1)  # this load client; the server goes to CPU 0
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_number in range(args.runs):
        order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
        for mode in order:  # alternated, so drift in the machine hits both alike
            results[mode].append(run_mode(mode, args))
            print(f"  round {round_number + 1}, metrics {mode:3}: {results[mode][-1]:12,.0f} "
                  "deliveries/s", flush=True)
    on, off = (statistics.median(results[mode]) for mode in MODES)
    print(f"fan-out, {args.subscribers} subscribers, {args.messages} messages of "
          f"{client.DATA_BYTES} bytes, median of {args.runs}, load client on {client.LOOP_NAME}:")
    print(f"  metrics on (scraped every 1 s) : {on:12,.0f} deliveries/s")
    print(f"  metrics off                    : {off:12,.0f} deliveries/s")
    print(f"  on / off                       : {on / off:12.3f}  (target: >= 0.95)")


if __name__ == "__main__":
    main()
