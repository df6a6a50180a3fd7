"""Broadcast benchmark (issues 6 and 16): our server beside its peers, in the same run.

    python bench/broadcast.py [--scenario NAME] [--peers baseline,ws,nchan] [--quick] [--runs 2]

The peers (``--peers``; by default every one installed, and a line saying
which are missing and how to install them):

  baseline     bench/baseline_server.py: bare Tornado, the naive write_message loop.
  ws           bench/peers/ws_server.js: one Node process with the ws library
               (npm ci --prefix bench/peers).
  nchan        Debian's nginx with libnginx-mod-nchan, one worker, configured
               from bench/peers/nchan.conf (apt-get install nginx libnginx-mod-nchan).
               It does not speak Pusher: subscribers open /sub/{channel} and
               read raw message bodies; each message is one POST to
               /pub/{channel} (a batch: that many pipelined POSTs); no signature.

Scenarios (``--scenario`` runs one; all run by default):

  fanout       deliveries/s at max publish rate to 100, 1,000 and 5,000
               subscribers (median of --runs); 100-byte event data, published
               as signed batch_events of 10 (--batch) over 4 keep-alive
               connections; --batch 1: one signed events request per event.
  latency      p50/p99 delivery latency at a fixed publish rate (one event
               each), read by probe subscribers spread evenly through the
               subscriber order: 20/s to 100 and to 1,000 subscribers for 5 s,
               and 4/s to 5,000 (20,000 deliveries/s offered) for 10 s.
  memory       server RSS per idle subscribed connection at 10,000 connections:
               VmRSS before and after connecting them, divided by their number.
  http         HTTP publishes/s (POST /apps/1/events, one event) two ways, median
               of --runs each: from this client over 8 keep-alive connections to
               a channel without subscribers; and from wrk (-c 64 -t 1, the same
               signed request again and again; apt-get install wrk) to a channel
               with one subscriber. Ours verifies every signature; no peer does.
  redis        two processes through one Redis, ours and Nchan's: 1,000
               subscribers on one, every publish to the other, both on CPU 0;
               deliveries/s as in fanout (median of --runs).
  connections  ours and the baseline only: as many concurrent subscribed
               connections as the file-descriptor limit allows, up to 50,000,
               from several 127.0.0.x addresses: whether the server holds them
               for 10 s and reaches them all with one publish, and its RSS.

Each measurement starts fresh servers: ours (``python server.py``, the
in-process broker, limits raised through PUSH_* variables so the load is not
refused) or a peer, interleaved run by run. Servers run on CPU 0, this load
client (and wrk) on CPU 1. Each line prints every server's figure and ours /
each peer's; the summary prints them all with the issues' targets judged.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

import tornado

import client
import wrk
from client import (close_all, open_http, open_subscribers, percentile, publish_at_rate,
                    publish_count, publish_for, settle_closed, stamped)
from measuring import (CHANNEL, SETUP, Deployment, Window, all_within, frame_size, gc_pauses,
                       loop_stalls, measure, other_load, run_interleaved, say)
from report import (Goal, Row, at_least, at_least_value, at_most, at_most_value, comparison, row,
                    summary)
from servers import (KINDS as ALL_KINDS, REDIS_KINDS, ROOT, cpus, missing, pin, raise_fd_limit,
                     try_raise_hard_limit)

SCENARIOS = ("fanout", "redis", "latency", "memory", "http", "connections")
#: File descriptors kept aside (listening socket, logs, publishers, Python's own).
FD_MARGIN = 256

#: Issue 16's "no regression" targets: ours / peer as the issue measured it, to keep or better.
FANOUT_TODAY = {1_000: (at_least("nchan", 1.04, " (issue 16)"), at_least("ws", 2.47, " (issue 16)")),
                5_000: (at_least("nchan", 1.16, " (issue 16)"),)}
MEMORY_TODAY = (at_most("ws", 0.97, " (issue 16)"), at_most("nchan", 0.58, " (issue 16)"))


@dataclass(frozen=True)
class LatencyCase:
    subscribers: int
    rate: float  # publishes/s, one event each
    seconds: float


@dataclass(frozen=True)
class Plan:
    fanout_sizes: tuple[int, ...] = (100, 1_000, 5_000)
    #: A pilot of this many deliveries sizes each run to last about fanout_seconds.
    fanout_pilot: int = 20_000
    fanout_seconds: float = 3
    fanout_max_deliveries: int = 5_000_000
    fanout_publishers: int = 4
    #: Events per publish request (nchan: pipelined POSTs); 1 publishes through /events.
    fanout_batch: int = 10
    latency_cases: tuple[LatencyCase, ...] = (LatencyCase(100, 20, 5), LatencyCase(1_000, 20, 5),
                                              LatencyCase(5_000, 4, 10))
    latency_probes: int = 20
    memory_connections: int = 10_000
    http_connections: int = 8
    http_seconds: float = 5
    wrk_connections: int = 64
    wrk_seconds: int = 5
    redis_subscribers: int = 1_000
    hold_connections: int = 50_000
    hold_seconds: float = 10


FULL = Plan()
QUICK = Plan(fanout_sizes=(50, 200), fanout_pilot=5_000, fanout_seconds=0.5,
             latency_cases=(LatencyCase(50, 20, 1.5), LatencyCase(200, 4, 2)), latency_probes=5,
             memory_connections=300, http_seconds=1, wrk_seconds=1, redis_subscribers=100,
             hold_connections=1_000, hold_seconds=1)


#: The servers measured: ours, then the peers chosen with --peers that are installed.
KINDS: tuple[str, ...] = ("ours",)


# -- 1. fan-out at max publish rate (also: two processes through Redis) ----------------


def fanout_work(subscribers: int, plan: Plan) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    async def work(d: Deployment) -> dict[str, Any]:
        receivers, _, _ = await open_subscribers(d.subscribe.port, subscribers, channel=CHANNEL,
                                                 wire=d.wire)
        connections = await open_http(d.publish.port, plan.fanout_publishers)
        frame = await frame_size(d, receivers, connections)
        batch = plan.fanout_batch
        raw = d.wire.publish(d.publish.port, CHANNEL, [stamped()] * batch,
                             batch=batch > 1)  # made once, sent many times

        async def burst(requests: int) -> dict[str, Any]:
            """Publish ``requests`` batches as fast as answered; wait for every byte."""
            messages = requests * batch
            done = [r.expect(frame * messages) for r in receivers]
            window = Window(d)
            await publish_count(connections, raw, requests)
            complete = await all_within(done, 300)
            stats = window.close()
            delivered = sum(min(r.received, r.target) for r in receivers) // frame
            return {**stats, "rate": delivered / stats["seconds"], "complete": complete,
                    "messages": messages, "frame": frame, "lost": sum(r.lost for r in receivers)}

        def sized(rate: float) -> int:  # batches that last about fanout_seconds at ``rate``
            deliveries = min(rate * plan.fanout_seconds, plan.fanout_max_deliveries)
            return max(1, round(deliveries / subscribers / batch))

        result = await burst(max(1, round(plan.fanout_pilot / subscribers / batch)))  # the pilot
        for _ in range(2):  # a pilot too short to reach full speed sizes the run too short: again
            result = await burst(sized(result["rate"]))
            if result["seconds"] >= plan.fanout_seconds * 0.6 or not result["complete"]:
                break
        close_all(receivers + connections)
        return result

    return work


def batched(plan: Plan) -> str:
    """How the summary names a publish size other than the default's."""
    return "" if plan.fanout_batch == FULL.fanout_batch else f", batches of {plan.fanout_batch}"


def describe_fanout(subscribers: int) -> Callable[[str, dict[str, Any]], str]:
    def describe(kind: str, result: dict[str, Any]) -> str:
        return (f"   {subscribers:>6,} subscribers  {kind:<8} {result['rate']:>10,.0f} deliveries/s  "
                f"({result['messages']:,} messages in {result['seconds']:.1f} s, "
                f"{result['frame']}-byte frames, server cpu {result['server_cpu']:.0%}, "
                f"client cpu {result['client_cpu']:.0%}{other_load(result)}"
                f"{'' if result['complete'] else ', INCOMPLETE: not all delivered'}"
                f"{', %d connections LOST' % result['lost'] if result['lost'] else ''})")
    return describe


def scenario_fanout(plan: Plan, runs: int) -> list[Row]:
    batch = plan.fanout_batch
    say(f"\n== 1. fan-out at max publish rate: {client.DATA_BYTES}-byte data, "
        + (f"batch_events of {batch} (nchan: {batch} pipelined POSTs)" if batch > 1
           else "one event per request")
        + f", {plan.fanout_publishers} keep-alive publishers; a pilot "
        f"sizes each run to last ~{plan.fanout_seconds:g} s; median of {runs}")
    rows = []
    for size in plan.fanout_sizes:
        results = run_interleaved(KINDS, runs, lambda kind: measure(kind, fanout_work(size, plan)),
                                  describe_fanout(size))
        figures = results.medians("rate")
        goals = [at_least("baseline", 4, " (issue 6)")] if size in (100, 1_000) else []
        goals += FANOUT_TODAY.get(size, ())
        rows.append(row(f"fan-out, {size:,} subscribers{batched(plan)} (deliveries/s)",
                        figures, goals, results.complete, results.all()))
        say(f"   -> {size:,} subscribers: {comparison(figures, '/s')}")
    return rows


def scenario_redis(plan: Plan, runs: int) -> list[Row]:
    kinds = tuple(kind for kind in KINDS if kind in REDIS_KINDS)
    size = plan.redis_subscribers
    say(f"\n== 2. two processes through one Redis ({', '.join(kinds)}): {size:,} subscribers on "
        "one, every publish to the other, both on CPU 0; as fan-out; median of " + str(runs))
    results = run_interleaved(
        kinds, runs, lambda kind: measure(kind, fanout_work(size, plan), through_redis=True),
        describe_fanout(size))
    figures = results.medians("rate")
    say(f"   -> {size:,} subscribers through Redis: {comparison(figures, '/s')}")
    return [row(f"two processes through Redis, {size:,} subscribers{batched(plan)} (deliveries/s)",
                figures,
                [at_least("nchan", 1, " (issue 16)")], results.complete, results.all())]


# -- 3. latency at a fixed rate ------------------------------------------------------------


def latency_work(case: LatencyCase, plan: Plan) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    count = int(case.rate * case.seconds)
    probes = min(plan.latency_probes, max(1, case.subscribers // 10))

    async def work(d: Deployment) -> dict[str, Any]:
        receivers, probe_list, _ = await open_subscribers(
            d.subscribe.port, case.subscribers, probes=probes, channel=CHANNEL, wire=d.wire)
        connections = await open_http(d.publish.port, 4)
        frame = await frame_size(d, receivers, connections)

        def request() -> client.Request:  # stamped as it is built, just before it is written
            return d.wire.publish(d.publish.port, CHANNEL, [stamped()], batch=False)

        warm = [r.expect(frame * 10) for r in receivers]  # 10 publishes, not counted
        await publish_at_rate(connections, case.rate, 10, request)
        await asyncio.wait_for(asyncio.gather(*warm), 30)
        for probe in probe_list:
            probe.latencies.clear()
        done = [r.expect(frame * count) for r in receivers]
        stalls: list[float] = []
        monitor = asyncio.ensure_future(loop_stalls(stalls))
        window = Window(d)
        since = time.monotonic()
        worst_lag = await publish_at_rate(connections, case.rate, count, request)
        complete = await all_within(done, 60)
        stats = window.close()
        pauses = gc_pauses(since, time.monotonic())
        monitor.cancel()
        latencies = [ns / 1e6 for probe in probe_list for ns in probe.latencies]
        close_all(receivers + connections)
        return {**stats, "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
                "max": max(latencies), "samples": len(latencies), "probes": len(probe_list),
                "lag": worst_lag * 1e3, "complete": complete, "stall": max(stalls) * 1e3,
                "gc": pauses}

    return work


def latency_goals(case: LatencyCase) -> list[Goal]:
    """The issues' p99 targets, for the cases they name."""
    if case.rate == 20 and case.subscribers in (100, 1_000):
        return [at_most_value({100: 5, 1_000: 15}[case.subscribers], "ms (issue 6)")]
    if case.subscribers == 5_000 and case.rate * case.subscribers == 20_000:
        return [at_most("ws", 1, " (issue 16)")]
    return []


def scenario_latency(plan: Plan, runs: int) -> list[Row]:
    say("\n== 3. delivery latency at a fixed publish rate (one event each), from the publish "
        "request's write to a probe's read")
    rows = []
    for case in plan.latency_cases:
        say(f"   {case.subscribers:,} subscribers, {case.rate:g} publishes/s "
            f"({case.subscribers * case.rate:,.0f} deliveries/s offered) for {case.seconds:g} s")
        done = run_interleaved(KINDS, runs, lambda kind: measure(kind, latency_work(case, plan)),
                               describe_latency(case))
        name = f"{case.subscribers:,} subscribers at {case.rate:g}/s (ms)"
        for key in ("p50", "p99"):
            figures = done.medians(key)
            rows.append(row(f"latency {key}, {name}", figures,
                            latency_goals(case) if key == "p99" else [], done.complete,
                            done.all()))
            say(f"   -> {key}: {comparison(figures, ' ms')}")
    return rows


def describe_latency(case: LatencyCase) -> Callable[[str, dict[str, Any]], str]:
    def describe(kind: str, result: dict[str, Any]) -> str:
        line = (f"   {case.subscribers:>6,} subscribers  {kind:<8} p50 {result['p50']:7.2f} ms  "
                f"p99 {result['p99']:7.2f} ms  max {result['max']:7.2f} ms  "
                f"({result['samples']} samples from {result['probes']} probes, "
                f"server cpu {result['server_cpu']:.0%}; client: worst publish lag "
                f"{result['lag']:.1f} ms, loop stall {result['stall']:.1f} ms{other_load(result)}"
                f"{'' if result['complete'] else ', INCOMPLETE: not all delivered'})")
        if SETUP.gc_dir and kind in ("ours", "baseline"):
            pauses = result["gc"]
            line += (f"\n{'':>33}server GC pauses over 1 ms: {len(pauses)}, longest "
                     f"{max(pauses, default=0):.1f} ms, {sum(pauses):.0f} ms in all")
        return line
    return describe


# -- 4. idle memory per connection ----------------------------------------------------


def memory_work(connections: int) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    async def work(d: Deployment) -> dict[str, Any]:
        # Warm up first, so one-time allocations (imports, caches) are not counted per connection.
        warm, _, _ = await open_subscribers(d.subscribe.port, 20, channel=CHANNEL, wire=d.wire)
        publisher = await open_http(d.publish.port, 1)
        await frame_size(d, warm, publisher)
        await settle_closed(warm + publisher)
        await asyncio.sleep(1)
        before = d.subscribe.rss_kb()
        receivers, _, _ = await open_subscribers(d.subscribe.port, connections, channel=CHANNEL,
                                                 wire=d.wire)
        await asyncio.sleep(2)
        after = d.subscribe.rss_kb()
        lost = sum(r.lost for r in receivers)
        # A new publisher: an idle one may have been closed by the server while these opened.
        publisher = await open_http(d.publish.port, 1)
        await frame_size(d, receivers, publisher)  # every one is still subscribed
        close_all(receivers + publisher)
        return {"before": before, "after": after, "per": (after - before) / connections,
                "lost": lost}

    return work


def scenario_memory(plan: Plan, cap: int) -> list[Row]:
    connections = min(plan.memory_connections, cap)
    say(f"\n== 4. idle memory: server VmRSS before and after {connections:,} subscribed "
        "connections (one channel), per connection (nchan: its worker's, shared memory touched "
        "included)"
        + (f"  [CAPPED from {plan.memory_connections:,} by the fd limit]"
           if connections < plan.memory_connections else ""))
    runs = run_interleaved(
        KINDS, 1, lambda kind: measure(kind, memory_work(connections)),
        lambda kind, result: (f"   {kind:<8} {result['per']:6.1f} KB per connection  (RSS "
                              f"{result['before'] / 1024:.1f} -> {result['after'] / 1024:.1f} MB, "
                              f"{result['lost']} lost)"))
    figures = runs.medians("per")
    say(f"   -> {comparison(figures, ' KB')}")
    at_size = connections >= 10_000
    goals = [at_most_value(12, "KB (issue 6)"), *MEMORY_TODAY] if at_size else []
    return [row(f"idle memory at {connections:,} connections (KB each)", figures, goals,
                runs.complete)]


# -- 5. HTTP publish rate ---------------------------------------------------------------


def http_work(plan: Plan) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    async def work(d: Deployment) -> dict[str, Any]:
        connections = await open_http(d.publish.port, plan.http_connections)
        raw = d.wire.publish(d.publish.port, "bench-empty", [stamped()], batch=False)
        await publish_for(connections, raw, 0.5)  # warm-up, not counted
        window = Window(d)
        done = await publish_for(connections, raw, plan.http_seconds)
        stats = window.close()
        close_all(connections)
        return {**stats, "rate": done / stats["seconds"]}

    return work


def wrk_work(plan: Plan) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    async def work(d: Deployment) -> dict[str, Any]:
        receivers, _, _ = await open_subscribers(d.subscribe.port, 1, channel=CHANNEL, wire=d.wire)
        request = d.wire.publish(d.publish.port, CHANNEL, [stamped()], batch=False)  # signed once
        window = Window(d)
        result = await wrk.run(d.publish.port, request, connections=plan.wrk_connections,
                               threads=1, seconds=plan.wrk_seconds, cpu=1 if cpus() >= 2 else None)
        stats = window.close()
        close_all(receivers)
        return {**stats, **result}

    return work


def scenario_http(plan: Plan, runs: int) -> list[Row]:
    say(f"\n== 5. HTTP publish rate: POST /apps/1/events (nchan: POST /pub/{{channel}}), one "
        f"event, median of {runs}.\n   Ours verifies every signature (HMAC-SHA256 and body MD5); "
        "no peer checks one.")
    say(f"   from this client, {plan.http_connections} keep-alive connections, "
        f"{plan.http_seconds:g} s, a channel without subscribers:")

    def describe(kind: str, result: dict[str, Any]) -> str:
        return (f"   {kind:<8} {result['rate']:>10,.0f} publishes/s  (server cpu "
                f"{result['server_cpu']:.0%}, client cpu {result['client_cpu']:.0%}"
                f"{other_load(result)}"
                + (f", {result['failed']} answered non-2xx, {result['errors']} socket errors"
                   if result.get("failed") or result.get("errors") else "") + ")")

    results = run_interleaved(KINDS, runs, lambda kind: measure(kind, http_work(plan)), describe)
    figures = results.medians("rate")
    say(f"   -> {comparison(figures, '/s')}")
    rows = [row(f"HTTP publishes/s, {plan.http_connections} connections (only ours signed)",
                figures, [at_least("baseline", 3, " (issue 6)")], results.complete, results.all())]
    reason = wrk.missing()
    if reason:
        say(f"   wrk variant SKIPPED: {reason}")
        return rows
    say(f"   from wrk -c {plan.wrk_connections} -t 1 (on CPU 1), {plan.wrk_seconds} s, the same "
        "request again and again, a channel with one subscriber:")
    results = run_interleaved(KINDS, runs, lambda kind: measure(kind, wrk_work(plan)), describe)
    figures = results.medians("rate")
    say(f"   -> {comparison(figures, '/s')}")
    clean = results.complete and all(r["failed"] == 0 and r["errors"] == 0 for r in results.all())
    rows.append(row(f"HTTP publishes/s, wrk -c {plan.wrk_connections} (only ours signed)", figures,
                    [at_least("baseline", 4, " (issue 16)"),
                     at_least("ws", 1, " (issue 16, stretch)")],
                    clean, results.all()))
    return rows


# -- 6. many concurrent connections ---------------------------------------------------------


def hold_work(connections: int, plan: Plan) -> Callable[[Deployment], Awaitable[dict[str, Any]]]:
    async def work(d: Deployment) -> dict[str, Any]:
        started = time.perf_counter()
        receivers, _, failures = await open_subscribers(
            d.subscribe.port, connections, channel=CHANNEL, concurrency=128, timeout=120,
            tolerate_failures=True, wire=d.wire)
        opened = time.perf_counter() - started
        await asyncio.sleep(plan.hold_seconds)
        rss = d.subscribe.rss_kb()
        held = [r for r in receivers if not r.lost]
        publisher = await open_http(d.publish.port, 1)
        firsts = [r.expect(1) for r in held]
        await client.send(publisher[0], d.wire.publish(d.publish.port, CHANNEL, [stamped()]))
        try:
            await asyncio.wait_for(asyncio.gather(*firsts), 60)
        except asyncio.TimeoutError:
            pass
        reached = sum(1 for f in firsts if f.done())
        await settle_closed(receivers + publisher, timeout=30)
        return {"opened": len(receivers), "failures": failures, "held": len(held),
                "reached": reached, "rss": rss, "open_rate": len(receivers) / opened,
                "sources": math.ceil(connections / client.PER_ADDRESS)}

    return work


def scenario_connections(plan: Plan, cap: int, hard: int) -> list[Row]:
    kinds = tuple(kind for kind in KINDS if kind in ("ours", "baseline"))
    connections = min(plan.hold_connections, cap)
    say(f"\n== 6. concurrent connections ({', '.join(kinds)}): {connections:,} subscribed "
        f"connections held {plan.hold_seconds:g} s, then one publish must reach them all")
    if connections < plan.hold_connections:
        say(f"   CAPPED: {plan.hold_connections:,} requested, but the container's hard "
            f"RLIMIT_NOFILE is {hard:,} for each process (server and client alike) and cannot be "
            f"raised here; {connections:,} is that limit less {FD_MARGIN} kept aside.")
    runs = run_interleaved(
        kinds, 1, lambda kind: measure(kind, hold_work(connections, plan)),
        lambda kind, result: (f"   {kind:<8} opened {result['opened']:,} ({result['failures']} "
                              f"failed) from {result['sources']} source address(es) at "
                              f"{result['open_rate']:,.0f}/s; held {result['held']:,}; reached by "
                              f"one publish {result['reached']:,}; RSS "
                              f"{result['rss'] / 1024:.1f} MB"))
    judged = plan.hold_connections >= 50_000  # not in --quick
    capped = " (capped by the fd limit)" if connections < plan.hold_connections else ""
    return [row(f"connections held and reached (of {connections:,})", runs.medians("reached"),
                [at_least_value(50_000, capped)] if judged else [], runs.complete),
            row(f"RSS with {connections:,} connections (MB)",
                {kind: r["rss"] / 1024 for kind, r in runs.first().items()}, [], runs.complete)]


# -- the run -------------------------------------------------------------------------------


def checkout(root: Path) -> str:
    """Which commit ``root`` is at, and whether the server's files differ from it."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"],
                                capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                  "server.py", "settings.py", "handlers", "pubsub"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {commit}" + (" WITH UNCOMMITTED CHANGES to the server" if changed else "")


def chosen_peers(wanted: str | None) -> tuple[str, ...]:
    """The peers named in ``--peers`` (default: all) that are installed; a line for each
    one that is not, saying how to install it."""
    peers = [kind for kind in ALL_KINDS if kind != "ours"]
    names = peers if wanted is None else [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = [name for name in names if name not in peers]
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(peers)}")
    ready = []
    for name in names:
        reason = missing(name)
        if reason:
            say(f"peer {name} SKIPPED: {reason}")
        else:
            ready.append(name)
    return tuple(ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--scenario", choices=SCENARIOS, help="run only this scenario")
    parser.add_argument("--peers", help="peers to measure beside ours, comma-separated, from "
                                        "baseline,ws,nchan (default: every one installed)")
    parser.add_argument("--quick", action="store_true", help="smoke-sized numbers (about a minute)")
    parser.add_argument("--runs", type=int,
                        help="runs per figure for fanout, latency, http and redis (default 2; "
                             "1 with --quick)")
    parser.add_argument("--batch", type=int,
                        help="events per publish request in fanout and redis (default 10; 1: "
                             "one signed /events request each, one POST each for nchan)")
    parser.add_argument("--sizes", help="fan-out subscriber counts, comma-separated (default 100,1000,5000)")
    parser.add_argument("--our-root", type=Path, default=ROOT,
                        help="run server.py from this checkout instead (e.g. an older commit "
                             "unpacked with `git archive`), to compare write paths")
    parser.add_argument("--gc-pauses", action="store_true",
                        help="run the Python servers under bench/gcwatch.py and print their "
                             "garbage-collector pauses during each latency measurement")
    parser.add_argument("--latency-subscribers",
                        help="only the latency cases with these subscriber counts, comma-separated "
                             "(default 100,1000,5000)")
    parser.add_argument("--latency-seconds", type=float,
                        help="length of every latency run (default 5, 10 at 5,000 subscribers)")
    args = parser.parse_args()
    global KINDS
    our_root = SETUP.our_root = args.our_root.resolve()
    if args.gc_pauses:
        SETUP.gc_dir = tempfile.mkdtemp(prefix="bench-gc-")
        atexit.register(shutil.rmtree, SETUP.gc_dir, ignore_errors=True)
    plan = QUICK if args.quick else FULL
    if args.sizes:
        plan = replace(plan, fanout_sizes=tuple(int(s) for s in args.sizes.split(",")))
    if args.batch:
        plan = replace(plan, fanout_batch=args.batch)
    if args.latency_subscribers:
        wanted = {int(s) for s in args.latency_subscribers.split(",")}
        plan = replace(plan, latency_cases=tuple(case for case in plan.latency_cases
                                                 if case.subscribers in wanted))
    if args.latency_seconds:
        plan = replace(plan, latency_cases=tuple(replace(case, seconds=args.latency_seconds)
                                                 for case in plan.latency_cases))
    runs = args.runs or (1 if args.quick else 2)

    try_raise_hard_limit(plan.hold_connections + FD_MARGIN)
    soft, hard = raise_fd_limit()
    cap = hard - FD_MARGIN
    pinned = cpus() >= 2 and pin(0, 1)
    started = time.monotonic()
    say(f"broadcast benchmark, {datetime.date.today()}, {'--quick, ' if args.quick else ''}"
        f"{platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Tornado {tornado.version}")
    KINDS = ("ours", *chosen_peers(args.peers))
    say(f"servers: {', '.join(KINDS)}")
    say(f"load client: {client.LOOP_NAME}; " + ("servers pinned to CPU 0, client to CPU 1"
                                               if pinned else "NOT PINNED: fewer than 2 CPUs"))
    at_start = checkout(our_root)
    say(f"ours: server.py in {our_root}, {at_start}")
    say(f"RLIMIT_NOFILE: soft {soft:,}, hard {hard:,} (raised soft to hard; servers inherit it); "
        f"connections per process capped at {cap:,}")

    rows: list[Row] = []
    chosen = (args.scenario,) if args.scenario else SCENARIOS
    if "fanout" in chosen:
        rows += scenario_fanout(plan, runs)
    if "redis" in chosen:
        rows += scenario_redis(plan, runs)
    if "latency" in chosen:
        rows += scenario_latency(plan, runs)
    if "memory" in chosen:
        rows += scenario_memory(plan, cap)
    if "http" in chosen:
        rows += scenario_http(plan, runs)
    if "connections" in chosen:
        rows += scenario_connections(plan, cap, hard)

    say(f"\n== summary ({time.monotonic() - started:.0f} s; targets: issue 6's and issue 16's, "
        "ours against each peer measured in this run)")
    if checkout(our_root) != at_start:
        say(f"   WARNING: the server's checkout changed during the run, now {checkout(our_root)}: "
            "figures may mix versions")
    for line in summary(rows, KINDS):
        say("   " + line)


if __name__ == "__main__":
    sys.exit(main())
