"""The processes a benchmark measures: our server, the bare Tornado baseline, Redis.

Shared by ``bench/broadcast.py`` and ``bench/fanout.py``. Only the processes
started here are ever signalled, by their own PIDs. Each server can be
pinned to one CPU (set before it execs, so it never runs elsewhere), and its
resident memory and CPU time are read from ``/proc/<pid>``.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
#: Clock ticks per second, for the CPU times in /proc/<pid>/stat.
_TICKS = os.sysconf("SC_CLK_TCK")

#: Our server's environment in every benchmark: quiet logs, and limits raised so
#: that nothing the load client does is refused. PUSH_ACTIVITY_TIMEOUT is raised
#: because the byte-counting clients never answer a pusher:ping.
OUR_ENV = {
    "PUSH_APP_ID": APP_ID, "PUSH_APP_KEY": KEY, "PUSH_APP_SECRET": SECRET,
    "PUSH_LOG_LEVEL": "WARNING",
    "PUSH_MAX_INBOUND_RATE": "1000",
    "PUSH_MAX_CONNECTIONS": "0",
    "PUSH_MAX_CONNECTIONS_PER_IP": "0",
    "PUSH_ACTIVITY_TIMEOUT": "3600",
    # Stopping between runs should not wait for presence grace windows.
    "PUSH_DRAIN_GRACE": "0",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` (0: this process) to ``cpu``; False where the machine lacks it."""
    if not hasattr(os, "sched_setaffinity") or cpu >= (os.cpu_count() or 1):
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return (soft, hard).

    The hard limit itself is raised only where the container allows it
    (it usually does not); children inherit whatever this achieves.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def try_raise_hard_limit(wanted: int) -> bool:
    """Try to raise the hard RLIMIT_NOFILE to ``wanted``; True if it now allows that many."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard >= wanted:
        return True
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        return True
    except (ValueError, OSError):
        return False


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpu is not None:
            pin(0, cpu)
    return setup


class Server:
    """One started server process and what can be read of it from /proc."""

    def __init__(self, kind: str, process: subprocess.Popen, port: int) -> None:
        self.kind = kind
        self.process = process
        self.port = port

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        """Resident set size in KiB (VmRSS of /proc/<pid>/status)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.pid}")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def fd_limit(self) -> tuple[int, int]:
        with open(f"/proc/{self.pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return int(soft), int(hard)
        raise RuntimeError(f"no open-files limit for {self.pid}")

    def alive(self) -> bool:
        return self.process.poll() is None


class Processes:
    """Started subprocesses, stopped together; only the PIDs started here are signalled."""

    def __init__(self, gc_log: str | None = None) -> None:
        self.started: list[subprocess.Popen] = []
        #: Servers run under bench/gcwatch.py, logging their GC pauses here, when set.
        self.gc_log = gc_log

    def redis(self, port: int, directory: str) -> subprocess.Popen:
        """A redis-server on 127.0.0.1:``port`` with no persistence (a restart starts empty)."""
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory], stdout=subprocess.PIPE, text=True)
        self.started.append(process)
        for line in process.stdout:
            if "Ready to accept connections" in line:
                return process
        raise RuntimeError("redis-server did not start")

    def ours(self, port: int, *, redis_url: str | None = None, cpu: int | None = 0,
             env: dict[str, str] | None = None, root: Path = ROOT) -> Server:
        """``python server.py`` with :data:`OUR_ENV` (plus ``env``), the in-process broker
        unless ``redis_url`` is given; ``root`` is the checkout whose server.py runs."""
        environ = {**os.environ, **OUR_ENV, **(env or {})}
        if redis_url:
            environ["PUSH_REDIS_URL"] = redis_url
        return self._server("ours", [sys.executable, "-u", "server.py", "--port", str(port)],
                            port, environ, cpu, cwd=root)

    def baseline(self, port: int, *, cpu: int | None = 0) -> Server:
        """``python bench/baseline_server.py``: the bare Tornado ``write_message`` loop."""
        return self._server("baseline", [sys.executable, "-u", str(BENCH / "baseline_server.py"),
                                         "--port", str(port)], port, dict(os.environ), cpu)

    def _server(self, kind: str, command: list[str], port: int, environ: dict[str, str],
                cpu: int | None, cwd: Path = ROOT) -> Server:
        if self.gc_log:
            command = [*command[:2], str(BENCH / "gcwatch.py"), *command[2:]]
            environ = {**environ, "BENCH_GC_LOG": self.gc_log}
        process = subprocess.Popen(command, cwd=cwd, env=environ, preexec_fn=_child_setup(cpu))
        self.started.append(process)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the servers log nothing at start: probe the port
            if process.poll() is not None:
                raise RuntimeError(f"{kind} server on {port} exited with {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return Server(kind, process, port)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{kind} server on {port} did not start")

    def stop(self) -> None:
        """Last started first (servers before Redis), so that servers leave cleanly."""
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.started.clear()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
