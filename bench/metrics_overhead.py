"""What metrics cost: one process's fan-out throughput with ``/metrics`` on and off, same run.

    python bench/metrics_overhead.py [--subscribers 1000] [--messages 1000] [--runs 5]
                                     [--scrape-interval 1]

Each round starts one server process with ``PUSH_METRICS=1`` and one with
``PUSH_METRICS=0``, alternating which goes first, and measures each as
``bench/fanout.py`` does (its ``measure``: ``--subscribers`` sockets on one
channel, signed ``batch_events`` of 10, four in flight; the server on CPU 0,
this load client on CPU 1). The figures are the medians of ``--runs``
rounds; the target is metrics costing at most 5 % of the throughput.
With metrics on, ``/metrics`` is scraped every ``--scrape-interval`` seconds
meanwhile (default 1, a busy Prometheus; 0: never).

Throughput on a shared machine swings with what else runs, so the server's
own CPU time per delivery (from /proc, the connections' setup included, the
same in both modes) is printed too: it is what metrics add, whatever the load.
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


async def measure_scraped(port: int, subscribers: int, messages: int, interval: float) -> float:
    """:func:`fanout.measure`, with ``/metrics`` fetched every ``interval`` seconds (0: never)."""

    async def scrape_forever() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await loop.run_in_executor(None, lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=10).read())
            await asyncio.sleep(interval)

    scraper = asyncio.ensure_future(scrape_forever()) if interval else None
    try:
        return await measure(port, port, subscribers, messages)
    finally:
        if scraper is not None:
            scraper.cancel()


def run_mode(mode: str, args: argparse.Namespace) -> tuple[float, float]:
    """One server with metrics ``mode`` (on or off), measured once, then stopped: its
    deliveries per second and its CPU microseconds per delivery."""
    processes = Processes()
    try:
        port = free_port()
        server = processes.ours(port, cpu=0, env={"PUSH_METRICS": MODES[mode]})
        started = server.cpu_seconds()
        interval = args.scrape_interval if mode == "on" else 0
        rate = client.run(measure_scraped(port, args.subscribers, args.messages, interval))
        deliveries = args.subscribers * -(-args.messages // 10) * 10
        return rate, (server.cpu_seconds() - started) / deliveries * 1e6
    finally:
        processes.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()
    raise_fd_limit()
    if cpus() >= 2:
        pin(0, 1)  # this load client; the server goes to CPU 0
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    costs: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_number in range(args.runs):
        order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
        for mode in order:  # alternated, so drift in the machine hits both alike
            rate, cost = run_mode(mode, args)
            rates[mode].append(rate)
            costs[mode].append(cost)
            print(f"  round {round_number + 1}, metrics {mode:3}: {rate:12,.0f} deliveries/s, "
                  f"{cost:6.3f} us CPU per delivery", flush=True)
    on, off = (statistics.median(rates[mode]) for mode in MODES)
    cost_on, cost_off = (statistics.median(costs[mode]) for mode in MODES)
    print(f"fan-out, {args.subscribers} subscribers, {args.messages} messages of "
          f"{client.DATA_BYTES} bytes, median of {args.runs}, load client on {client.LOOP_NAME}:")
    scraped = f"every {args.scrape_interval:g} s" if args.scrape_interval else "never"
    for label, rate, cost in ((f"metrics on (scraped {scraped})", on, cost_on),
                              ("metrics off", off, cost_off)):
        print(f"  {label:32}: {rate:12,.0f} deliveries/s  {cost:7.3f} us CPU each")
    print(f"  {'on / off throughput':32}: {on / off:12.3f}  (target: >= 0.95)")
    print(f"  {'off / on CPU per delivery':32}: {cost_off / cost_on:12.3f}  (target: >= 0.95)")


if __name__ == "__main__":
    main()
