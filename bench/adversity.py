"""What clients see when Redis stalls or clients send slowly, against ``python server.py``
with its default settings. Prints the figures of docs/reliability.md.

    python bench/adversity.py redis-stall [--stall 20] [--publishers 8]
    python bench/adversity.py slowloris [--connections 60] [--pace 1]

``redis-stall`` publishes back to back over signed keep-alive HTTP from
``--publishers`` connections while its own redis-server is SIGSTOPped for
``--stall`` seconds (by its PID), and prints how the publishes were answered.
``slowloris`` opens ``--connections`` connections, a quarter each sending a
publish, a query, a WebSocket handshake a byte every ``--pace`` seconds, and
silent ones, and prints how long the server kept each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter

from client import APP_ID, KEY, open_http, publish_request, run, signed_path
from servers import Processes, free_port

#: The server's default PUSH_REDIS_TIMEOUT: no publish may succeed later than this.
REDIS_TIMEOUT = 3.0


async def publish_through_a_stall(port: int, redis_pid: int, stall: float,
                                  publishers: int) -> None:
    answers: list[tuple[float, float, int]] = []  # sent, answered (since start), status
    stop = asyncio.Event()
    start = time.monotonic()

    async def publisher(connection) -> None:
        while not stop.is_set():
            sent = time.monotonic() - start
            status, _ = await connection.request(publish_request(port, "stall", ["x"], batch=False))
            answers.append((sent, time.monotonic() - start, status))
            if status != 200:
                await asyncio.sleep(0.05)  # a client's backoff

    connections = await open_http(port, publishers)
    tasks = [asyncio.ensure_future(publisher(connection)) for connection in connections]
    await asyncio.sleep(2)
    paused = time.monotonic() - start
    os.kill(redis_pid, signal.SIGSTOP)
    await asyncio.sleep(stall)
    resumed = time.monotonic() - start
    os.kill(redis_pid, signal.SIGCONT)
    await asyncio.sleep(10)
    stop.set()
    await asyncio.gather(*tasks)
    for connection in connections:
        connection.close()

    took = [answered - sent for sent, answered, _ in answers]
    ok_took = [answered - sent for sent, answered, status in answers if status == 200]
    fast_503 = [sent for sent, answered, status in answers
                if status == 503 and sent >= paused and answered - sent < 0.1]
    back = [sent for sent, _, status in answers if status == 200 and sent >= resumed]
    print(f"publishes: {len(answers)}, by status: {dict(Counter(s for *_, s in answers))}")
    print(f"slowest answer: {max(took):.2f} s; slowest 200: {max(ok_took):.3f} s; "
          f"200s slower than {REDIS_TIMEOUT:g} s: {sum(t > REDIS_TIMEOUT for t in ok_took)}")
    print(f"stall noticed (first immediate 503) {fast_503[0] - paused:.1f} s after SIGSTOP"
          if fast_503 else "stall never noticed")
    print(f"first 200 sent {back[0] - resumed:.2f} s after SIGCONT" if back else "never recovered")


async def keep_slow_clients(port: int, connections: int, pace: float) -> None:
    body = b'{"name":"e","channels":["c"],"data":"{}"}'
    path = f"/apps/{APP_ID}/events"
    kinds = {
        "publish": (f"POST {signed_path(path, body)} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    f"application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body,
        "query": f"GET {signed_path(f'/apps/{APP_ID}/channels', b'', method='GET')} HTTP/1.1\r\n"
                 "Host: x\r\n\r\n".encode(),
        "handshake": (f"GET /app/{KEY}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode(),
        "silent": b"",
    }

    async def slow(data: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened = time.monotonic()

        async def trickle() -> None:
            try:
                for byte in data:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(pace)
            except OSError:
                pass

        sending = asyncio.ensure_future(trickle())
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
        sending.cancel()
        writer.close()
        return time.monotonic() - opened

    each = max(1, connections // len(kinds))
    tasks = {kind: [asyncio.ensure_future(slow(data)) for _ in range(each)]
             for kind, data in kinds.items()}
    for kind, started in tasks.items():
        seconds = await asyncio.gather(*started)
        print(f"{kind:9} {each} connections, {len(kinds[kind])} bytes at 1 per {pace:g} s: "
              f"closed after {min(seconds):.1f}-{max(seconds):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["redis-stall", "slowloris"])
    parser.add_argument("--stall", type=float, default=20.0)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--connections", type=int, default=60)
    parser.add_argument("--pace", type=float, default=1.0)
    args = parser.parse_args()
    port = free_port()
    with Processes() as processes, tempfile.TemporaryDirectory() as directory:
        if args.scenario == "redis-stall":
            redis_port = free_port()
            processes.redis(redis_port, directory)
            redis_pid = processes.started[-1].pid
            processes.ours(port, redis_url=f"redis://127.0.0.1:{redis_port}/0", cpu=None)
            try:
                run(publish_through_a_stall(port, redis_pid, args.stall, args.publishers))
            finally:
                os.kill(redis_pid, signal.SIGCONT)  # a stopped Redis would not stop
        else:
            processes.ours(port, cpu=None)
            run(keep_slow_clients(port, args.connections, args.pace))


if __name__ == "__main__":
    main()
