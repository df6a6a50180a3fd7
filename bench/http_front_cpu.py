"""The Python cost of one signed publish through the HTTP front, without sockets or load client.

    python bench/http_front_cpu.py [--requests 20000] [--repeats 5] [CHECKOUT ...]

For each checkout (default: this one), in a fresh ``python`` process: the
server as ``python server.py`` composes it (bench/servers.py's environment,
the in-process broker, metrics, WARNING logs), and 64 front connections
(``handlers/front.py``) whose transports only count what is written. Each
round feeds every connection one signed ``POST /apps/1/events`` (one
100-byte event to a channel with no subscriber) and runs the loop until all
64 are answered, as the server's loop does with 64 keep-alive clients.
Prints the CPU time (``time.process_time``) per request, the least of
``--repeats`` runs of ``--requests`` requests: what the code costs, which a
loaded machine disturbs far less than a publish rate. Kernel time (reading
and writing sockets) is not in it; bench/http_publish.py measures the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CONNECTIONS = 64


class CountingTransport(asyncio.Transport):
    """Takes what the front writes and counts the answers."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0

    def write(self, data: bytes) -> None:
        self.answers += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def measure(requests: int, repeats: int) -> float:
    """Seconds of CPU per request, the least of ``repeats`` runs (in the checkout loaded)."""
    import tornado.iostream

    from tornado_push.handlers.front import FrontConnection, PushHTTPServer
    from tornado_push.server import make_application
    from tornado_push.embed import Push
    from tornado_push.settings import load_settings

    from client import publish_request, stamped
    settings = load_settings(host="127.0.0.1", port=0)
    push = Push.from_settings(settings)
    await push.start()
    server = PushHTTPServer(make_application(push), max_body_size=settings.max_body_bytes,
                            xheaders=settings.xheaders, timeouts=settings.http_timeouts)
    fronts, sockets = [], []
    for _ in range(CONNECTIONS):
        ours, theirs = socket.socketpair()
        sockets += (ours, theirs)
        front = FrontConnection(server, server.endpoints, tornado.iostream.IOStream(ours), ())
        transport = CountingTransport()
        front.connection_made(transport)
        fronts.append((front, transport))
    raw = publish_request(0, "bench-empty", [stamped()], batch=False)
    rounds = max(1, requests // CONNECTIONS)
    best, fed = float("inf"), 0
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(rounds):
            fed += 1
            for front, _ in fronts:
                front.data_received(raw)
            await asyncio.sleep(0)  # a turn of the loop each round, as the server's
            while fronts[-1][1].answers < fed:  # answered already, or by tasks in order
                await asyncio.sleep(0)
        best = min(best, (time.process_time() - started) / (rounds * CONNECTIONS))
    if any(transport.answers != rounds * repeats for _, transport in fronts):
        raise RuntimeError("not every request was answered")
    for one in sockets:
        one.close()
    return best


def child(checkout: str, requests: int, repeats: int) -> None:
    sys.path[:0] = [checkout, str(BENCH)]
    import checkout as loader
    loader.load()
    from servers import OUR_ENV
    os.environ.update(OUR_ENV)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(measure(requests, repeats))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", nargs="*", type=Path, default=[BENCH.parent])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.requests, args.repeats)
    print(f"CPU per signed /events request through the front (least of {args.repeats} x "
          f"{args.requests:,} requests, {CONNECTIONS} connections, no sockets)")
    for checkout in args.checkouts:
        output = subprocess.run([sys.executable, __file__, "--child", str(checkout.resolve()),
                                 "--requests", str(args.requests), "--repeats", str(args.repeats)],
                                check=True, capture_output=True, text=True).stdout
        print(f"  {1e6 * json.loads(output):6.1f} us  {checkout}")


if __name__ == "__main__":
    main()
