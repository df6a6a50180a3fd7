"""The floor under delivery latency: what one loopback ``send`` per subscriber costs.

    python bench/send_floor.py [--subscribers 1000] [--rounds 100]

No server and no WebSocket: one process (on CPU 0) sends a 150-byte message to
each of N loopback TCP sockets in turn, ``rounds`` times, 50 ms apart as at 20
publishes/s; a reader process (on CPU 1) drains them with epoll. It prints the
sender's CPU time per ``send``, with Nagle's algorithm on (Tornado's default)
and off. Compare it with what the server spends per delivery
(docs/benchmarks.md): the difference is all that user space can still win.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time

MESSAGE = b"x" * 150
PAUSE = 0.05  # seconds between rounds: 20 publishes/s


def receive(port: int, subscribers: int, total: int, ready: int) -> None:
    """The reader process: connect every subscriber, then drain ``total`` bytes."""
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(subscribers)]
    poller = select.epoll()
    by_fd = {}
    for connection in connections:
        connection.setblocking(False)
        poller.register(connection.fileno(), select.EPOLLIN)
        by_fd[connection.fileno()] = connection
    os.write(ready, b"!")
    received = 0
    while received < total:
        for fd, _ in poller.poll(1):
            received += len(by_fd[fd].recv(65536))


def send_rounds(accepted: list[socket.socket], rounds: int) -> float:
    """CPU seconds per ``send`` over ``rounds`` rounds to every socket."""
    started = time.process_time()
    for _ in range(rounds):
        for connection in accepted:
            connection.send(MESSAGE)
        time.sleep(PAUSE)
    return (time.process_time() - started) / (rounds * len(accepted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.subscribers)
    port = listener.getsockname()[1]
    ready_read, ready_write = os.pipe()
    total = 2 * args.rounds * args.subscribers * len(MESSAGE)
    reader = os.fork()
    if reader == 0:
        os.sched_setaffinity(0, {1 % os.cpu_count()})
        receive(port, args.subscribers, total, ready_write)
        os._exit(0)
    os.sched_setaffinity(0, {0})
    accepted = [listener.accept()[0] for _ in range(args.subscribers)]
    os.read(ready_read, 1)
    for nodelay in (False, True):
        for connection in accepted:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
        per_send = send_rounds(accepted, args.rounds)
        print(f"TCP_NODELAY {'on ' if nodelay else 'off'}: {per_send * 1e6:.2f} µs of CPU per send "
              f"({args.subscribers:,} sockets, {args.rounds} rounds)")
    os.waitpid(reader, 0)


if __name__ == "__main__":
    main()
