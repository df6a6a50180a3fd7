"""A soak run: churn, traffic, slow and malicious clients against live servers, with RSS and
descriptors sampled, so that a leak or a lost message shows over minutes rather than seconds.

    python bench/soak.py                      # 30 minutes, one process, the embedded default
    python bench/soak.py --minutes 5 --redis-url redis://127.0.0.1:6379/0 --processes 2

What runs, all at once, for the whole time:

- steady subscribers (one per process) on ``soak-steady``, and a publisher that
  sends it numbered events over the signed HTTP API at ``--rate`` per second,
  spread over the processes; every event answered 200 must reach every steady
  subscriber (nothing acknowledged is lost);
- ``--churners`` clients that connect, join a presence and a public channel,
  send a client event, stay a moment and leave, some with a close frame and
  some by dropping the TCP connection;
- a client that sends one malformed or poisonous frame after another (lone
  surrogates, deep nesting, wrong types), and must get an answer to each;
- from time to time a subscriber that never reads (a slow consumer), which the
  server must drop while the steady subscribers miss nothing.

Every ``--sample`` seconds it prints each server's resident memory and open
descriptors. At the end it compares the median of the last quarter of the
samples with the median of the second quarter (the first holds the warm-up)
and exits 1 when memory grew by more than ``--max-rss-growth`` (a fraction),
descriptors by more than ``--max-fd-growth``, an acknowledged event was lost,
or a server logged a traceback. Only the processes it started are signalled,
by their PIDs; every loop is bounded by ``--minutes``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tornado.httpclient
import tornado.websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import masked_text_frame, signed_path  # noqa: E402
from servers import APP_ID, KEY, OUR_ENV, ROOT, SECRET, free_port  # noqa: E402

STEADY = "soak-steady"
ROOMS = 10
#: Frames nobody should ever send; each must be answered with a documented error.
POISON = [
    '{"event":"pusher:subscribe","data":{"channel":"\\ud800"}}',
    '{"event":"nope","channel":"\\ud800"}',
    '{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"a:b",'
    '"channel_data":"{\\"user_id\\":\\"x\\\\ud800\\"}"}}',
    '{"event":"pusher:signin","data":{"user_data":"\\udfff","auth":"k:s"}}',
    "[" * 5000 + "]" * 5000,
    '{"event":"pusher:subscribe","data":' + "[" * 900 + "]" * 900 + "}",
    '{"event":1,"data":[]}',
    "not json",
    '{"event":"client-x","channel":"private-nope","data":{"a":"\\ud800"}}',
]


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path
    samples: list[tuple[int, int]] = field(default_factory=list)  # (RSS KiB, descriptors)

    def sample(self) -> tuple[int, int]:
        with open(f"/proc/{self.process.pid}/status") as status:
            rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        descriptors = len(os.listdir(f"/proc/{self.process.pid}/fd"))
        self.samples.append((rss, descriptors))
        return rss, descriptors


@dataclass
class Tally:
    cycles: int = 0
    client_events: int = 0
    published: int = 0
    refused_publishes: int = 0
    poison_sent: int = 0
    poison_answered: int = 0
    slow_opened: int = 0
    received: dict[int, set[int]] = field(default_factory=dict)
    acknowledged: set[int] = field(default_factory=set)


def start_servers(count: int, redis_url: str | None, workdir: Path) -> list[Server]:
    servers = []
    for index in range(count):
        port = free_port()
        env = {**os.environ, **OUR_ENV, "PUSH_HOST": "127.0.0.1", "PUSH_PORT": str(port),
               "PUSH_ACTIVITY_TIMEOUT": "30", "PUSH_MAX_INBOUND_RATE": "100"}
        if redis_url:
            env["PUSH_REDIS_URL"] = redis_url
            env["PUSH_REDIS_PREFIX"] = f"soak{os.getpid()}"
        log = workdir / f"server-{index}.log"
        process = subprocess.Popen([sys.executable, str(ROOT / "server.py")], env=env,
                                   stdout=subprocess.DEVNULL, stderr=log.open("w"))
        servers.append(Server(port, process, log))
    for server in servers:
        deadline = time.monotonic() + 20
        while not _accepts(server.port):
            if server.process.poll() is not None or time.monotonic() > deadline:
                stop_servers(servers)
                raise SystemExit(f"server on {server.port} did not start:\n{server.log.read_text()}")
            time.sleep(0.1)
    return servers


def stop_servers(servers: list[Server]) -> None:
    """SIGTERM every server started here (by PID), then SIGKILL one that outlives its drain."""
    for server in servers:
        server.process.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _sign(*parts: str) -> str:
    return hmac.new(SECRET.encode(), ":".join(parts).encode(), hashlib.sha256).hexdigest()


async def _connect(port: int) -> tuple[tornado.websocket.WebSocketClientConnection, str]:
    ws = await tornado.websocket.websocket_connect(
        f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7&client=soak&version=1")
    established = json.loads(await ws.read_message())
    return ws, json.loads(established["data"])["socket_id"]


async def _await_event(ws: tornado.websocket.WebSocketClientConnection, event: str,
                       timeout: float = 10) -> dict:
    async def wait() -> dict:
        while True:
            message = await ws.read_message()
            if message is None:
                raise ConnectionError(f"closed while waiting for {event}")
            frame = json.loads(message)
            if frame["event"] in (event, "pusher:error", "pusher:subscription_error"):
                return frame
    return await asyncio.wait_for(wait(), timeout)


async def steady_subscriber(port: int, index: int, tally: Tally, stop: asyncio.Event) -> None:
    ws, _ = await _connect(port)
    ws.write_message(json.dumps({"event": "pusher:subscribe", "data": {"channel": STEADY}}))
    await _await_event(ws, "pusher_internal:subscription_succeeded")
    received = tally.received.setdefault(index, set())
    while not stop.is_set():
        message = await ws.read_message()
        if message is None:
            raise ConnectionError(f"steady subscriber {index} was disconnected")
        frame = json.loads(message)
        if frame["event"] == "tick":
            received.add(json.loads(frame["data"])["seq"])
        elif frame["event"] == "pusher:ping":
            ws.write_message('{"event":"pusher:pong","data":{}}')
    ws.close()


async def publisher(ports: list[int], rate: float, tally: Tally, stop: asyncio.Event) -> None:
    http = tornado.httpclient.AsyncHTTPClient()
    seq = 0
    while not stop.is_set():
        seq += 1
        body = json.dumps({"channels": [STEADY], "name": "tick",
                           "data": json.dumps({"seq": seq})}).encode()
        port = ports[seq % len(ports)]
        path = signed_path(f"/apps/{APP_ID}/events", body)
        response = await http.fetch(f"http://127.0.0.1:{port}{path}", method="POST", body=body,
                                    headers={"Content-Type": "application/json"},
                                    raise_error=False, request_timeout=10)
        if response.code == 200:
            tally.acknowledged.add(seq)
            tally.published += 1
        else:
            tally.refused_publishes += 1
        await asyncio.sleep(1 / rate)


async def churner(ports: list[int], number: int, tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(number)
    while not stop.is_set():
        ws, socket_id = await _connect(rng.choice(ports))
        room = rng.randrange(ROOMS)
        presence = f"presence-soak-{room}"
        channel_data = json.dumps({"user_id": f"user-{number}", "user_info": {"n": number}})
        auth = f"{KEY}:{_sign(socket_id, presence, channel_data)}"
        ws.write_message(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": presence, "auth": auth, "channel_data": channel_data}}))
        ws.write_message(json.dumps({"event": "pusher:subscribe",
                                     "data": {"channel": f"soak-room-{room}"}}))
        await _await_event(ws, "pusher_internal:subscription_succeeded")
        ws.write_message(json.dumps({"event": "client-typing", "channel": presence,
                                     "data": {"from": number}}))
        tally.client_events += 1
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        if rng.random() < 0.3:
            ws.stream.close()  # dropped without a close frame, as a lost network does
        else:
            ws.close()
        tally.cycles += 1


async def poisoner(port: int, tally: Tally, stop: asyncio.Event) -> None:
    ws, _ = await _connect(port)
    rng = random.Random(7)
    while not stop.is_set():
        ws.write_message(rng.choice(POISON))
        tally.poison_sent += 1
        frame = await _await_event(ws, "pusher:error")
        if frame["event"] in ("pusher:error", "pusher:subscription_error"):
            tally.poison_answered += 1
        await asyncio.sleep(0.2)
    ws.close()


async def slow_consumers(ports: list[int], tally: Tally, stop: asyncio.Event) -> None:
    """Every 20 s a subscriber that never reads; each is closed by us after 60 s at the latest."""
    opened: list[tuple[float, socket.socket]] = []
    while not stop.is_set():
        port = ports[tally.slow_opened % len(ports)]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall((f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: c29ha3NvYWtzb2Frc29haw==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode()
                     + masked_text_frame(json.dumps({"event": "pusher:subscribe",
                                                     "data": {"channel": STEADY}}).encode()))
        opened.append((time.monotonic(), sock))
        tally.slow_opened += 1
        while opened and time.monotonic() - opened[0][0] > 60:
            opened.pop(0)[1].close()
        try:
            await asyncio.wait_for(stop.wait(), 20)
        except asyncio.TimeoutError:
            pass
    for _, sock in opened:
        sock.close()


async def sampler(servers: list[Server], every: float, stop: asyncio.Event,
                  tally: Tally, started: float) -> None:
    while not stop.is_set():
        figures = "  ".join(f"{s.port}: {rss / 1024:6.1f} MB {fds:5d} fd"
                            for s in servers for rss, fds in [s.sample()])
        print(f"{time.monotonic() - started:7.0f} s  {figures}  cycles {tally.cycles}  "
              f"published {tally.published}  poison {tally.poison_answered}/{tally.poison_sent}",
              flush=True)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def soak(args: argparse.Namespace, servers: list[Server]) -> int:
    ports = [s.port for s in servers]
    tally, stop = Tally(), asyncio.Event()
    started = time.monotonic()
    steady = [asyncio.ensure_future(steady_subscriber(port, i, tally, stop))
              for i, port in enumerate(ports)]
    while len(tally.received) < len(ports):
        await asyncio.sleep(0.05)
    workers = [asyncio.ensure_future(w) for w in (
        publisher(ports, args.rate, tally, stop), poisoner(ports[0], tally, stop),
        slow_consumers(ports, tally, stop), sampler(servers, args.sample, stop, tally, started),
        *(churner(ports, n, tally, stop) for n in range(args.churners)))]
    done, _ = await asyncio.wait(workers + steady, timeout=args.minutes * 60,
                                 return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    failed = [task.exception() for task in done if task.exception() is not None]
    await asyncio.wait(workers, timeout=15)
    # The last acknowledged events are still on their way: wait for them, bounded.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(tally.acknowledged - got for got in tally.received.values()):
        await asyncio.sleep(0.1)
    for task in steady:
        task.cancel()
    return report(servers, tally, failed, args)


def _growth(samples: list[int]) -> tuple[float, float]:
    quarter = max(len(samples) // 4, 1)
    return statistics.median(samples[quarter:2 * quarter] or samples), statistics.median(samples[-quarter:])


def report(servers: list[Server], tally: Tally, failed: list[BaseException],
           args: argparse.Namespace) -> int:
    lost = {i: len(tally.acknowledged - got) for i, got in tally.received.items()}
    problems = [f"a worker failed: {error!r}" for error in failed]
    if any(lost.values()):
        problems.append(f"acknowledged events lost per steady subscriber: {lost}")
    print(f"\ncycles {tally.cycles}, client events {tally.client_events}, publishes acknowledged "
          f"{tally.published} (refused {tally.refused_publishes}), lost {sum(lost.values())}, "
          f"poison frames answered {tally.poison_answered}/{tally.poison_sent}, "
          f"slow consumers opened {tally.slow_opened}")
    for server in servers:
        rss_before, rss_after = _growth([rss for rss, _ in server.samples])
        fd_before, fd_after = _growth([fds for _, fds in server.samples])
        tracebacks = server.log.read_text().count("Traceback")
        print(f"server {server.port}: RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MB, "
              f"descriptors {fd_before:.0f} -> {fd_after:.0f}, tracebacks logged {tracebacks}")
        if rss_after > rss_before * (1 + args.max_rss_growth):
            problems.append(f"server {server.port}: RSS grew over {args.max_rss_growth:.0%}")
        if fd_after > fd_before + args.max_fd_growth:
            problems.append(f"server {server.port}: descriptors grew by over {args.max_fd_growth}")
        if tracebacks:
            problems.append(f"server {server.port}: {tracebacks} tracebacks in {server.log}")
    for problem in problems:
        print("FAIL:", problem)
    print("soak: ok" if not problems else "soak: failed")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--processes", type=int, default=1, help="more than 1 needs --redis-url")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--churners", type=int, default=20)
    parser.add_argument("--rate", type=float, default=50, help="steady publishes per second")
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    parser.add_argument("--max-rss-growth", type=float, default=0.2)
    parser.add_argument("--max-fd-growth", type=int, default=50)
    args = parser.parse_args()
    if args.processes > 1 and not args.redis_url:
        parser.error("--processes above 1 needs --redis-url")
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    servers = start_servers(args.processes, args.redis_url, workdir)
    try:
        return asyncio.run(soak(args, servers))
    finally:
        stop_servers(servers)


if __name__ == "__main__":
    sys.exit(main())
