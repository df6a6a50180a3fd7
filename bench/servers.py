"""The processes a benchmark measures: our server, its peers, Redis.

Shared by ``bench/broadcast.py`` and ``bench/fanout.py``. The peers are the
bare Tornado baseline (``bench/baseline_server.py``), Node ``ws``
(``bench/peers/ws_server.js``) and Nchan (Debian's nginx with
libnginx-mod-nchan, configured from ``bench/peers/nchan.conf``);
:func:`missing` says what is not installed, and how to install it. Only the
processes started here are ever signalled, by their own PIDs. Each server can
be pinned to one CPU (set before it execs, so it never runs elsewhere; an
nginx worker inherits its master's), and its resident memory and CPU time
are read from ``/proc/<pid>`` of the process that serves (nginx's worker).
"""

from __future__ import annotations

import http.client
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
PEERS = BENCH / "peers"
APP_ID, KEY, SECRET = "1", "bench-key", "bench-secret"
#: Every server a benchmark can start: ours first, then its peers.
KINDS = ("ours", "baseline", "ws", "nchan")
#: Those that can run as two processes through one Redis.
REDIS_KINDS = ("ours", "nchan")
NGINX = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
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


def child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpu is not None:
            pin(0, cpu)
    return setup


def missing(kind: str) -> str | None:
    """Why the server ``kind`` cannot run here and how to install it; None when it can."""
    if kind == "ws":
        if shutil.which("node") is None:
            return ("node is not installed "
                    "(apt-get install nodejs npm, then npm ci --prefix bench/peers)")
        if not (PEERS / "node_modules" / "ws").is_dir():
            return "the ws package is not installed (npm ci --prefix bench/peers)"
    if kind == "nchan":
        if not os.access(NGINX, os.X_OK):
            return f"{NGINX} is not installed (apt-get install nginx libnginx-mod-nchan)"
        if not os.path.exists(NCHAN_MODULE):
            return f"nginx has no Nchan module at {NCHAN_MODULE} (apt-get install libnginx-mod-nchan)"
    return None


def nchan_config(port: int, directory: str, redis_url: str | None) -> str:
    """``bench/peers/nchan.conf`` rendered for one instance; its files stay in ``directory``."""
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Through Redis as ours goes: plain pub/sub, no message kept (Nchan's fastest mode).
    upstream = (f"upstream redis {{ nchan_redis_server {redis_url}; nchan_redis_storage_mode nostore; "
                "nchan_redis_nostore_fastpublish on; }" if redis_url else "")
    text = (PEERS / "nchan.conf").read_text()
    for name, value in (("MODULE", NCHAN_MODULE), ("DIR", directory), ("PORT", str(port)),
                        ("FILES", str(files)), ("UPSTREAM", upstream),
                        ("REDIS_PASS", "nchan_redis_pass redis;" if redis_url else "")):
        text = text.replace(f"@{name}@", value)
    left = re.search(r"@[A-Z]+@", text)
    if left:
        raise RuntimeError(f"bench/peers/nchan.conf: no value for {left.group()}")
    return text


def _await_nchan_redis(port: int) -> None:
    """Wait until Nchan's worker has connected to Redis: until then it answers 503."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/pub/bench-ready")
            if connection.getresponse().status != 503:
                return
        finally:
            connection.close()
        time.sleep(0.05)
    raise RuntimeError(f"nchan on {port} did not connect to Redis")


class Server:
    """One started server process and what can be read of it from /proc.

    ``pid`` is the process that serves: the one started, or (nginx) its worker.
    """

    def __init__(self, kind: str, process: subprocess.Popen, port: int,
                 worker: int | None = None) -> None:
        self.kind = kind
        self.process = process
        self.port = port
        self._worker = worker

    @property
    def pid(self) -> int:
        return self._worker or self.process.pid

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
        self.directories: list[str] = []
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

    def ws(self, port: int, *, cpu: int | None = 0) -> Server:
        """``node bench/peers/ws_server.js``: one Node process with the ``ws`` library."""
        return self._server("ws", ["node", str(PEERS / "ws_server.js"), "--port", str(port)],
                            port, dict(os.environ), cpu)

    def nchan(self, port: int, *, redis_url: str | None = None, cpu: int | None = 0) -> Server:
        """nginx with Nchan, one worker, in a prefix directory of its own (removed at stop)."""
        directory = tempfile.mkdtemp(prefix="bench-nchan-")
        self.directories.append(directory)
        config = Path(directory) / "nginx.conf"
        config.write_text(nchan_config(port, directory, redis_url))
        server = self._server("nchan", [NGINX, "-p", directory, "-c", str(config),
                                        "-e", f"{directory}/error.log"],
                              port, dict(os.environ), cpu)
        master = server.process.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the master listens before it forks its worker
            with open(f"/proc/{master}/task/{master}/children") as children:
                workers = [int(pid) for pid in children.read().split()]
            if workers:
                if redis_url:
                    _await_nchan_redis(port)
                return Server("nchan", server.process, port, worker=workers[0])
            time.sleep(0.05)
        raise RuntimeError(f"nginx on {port} started no worker")

    def start(self, kind: str, port: int, *, redis_url: str | None = None, cpu: int | None = 0,
              root: Path = ROOT) -> Server:
        """A server of ``kind`` (one of :data:`KINDS`); ``redis_url`` only for
        :data:`REDIS_KINDS`, ``root`` only for ours."""
        if kind == "ours":
            return self.ours(port, redis_url=redis_url, cpu=cpu, root=root)
        if kind == "nchan":
            return self.nchan(port, redis_url=redis_url, cpu=cpu)
        if redis_url:
            raise ValueError(f"{kind} has no Redis mode")
        return {"baseline": self.baseline, "ws": self.ws}[kind](port, cpu=cpu)

    def _server(self, kind: str, command: list[str], port: int, environ: dict[str, str],
                cpu: int | None, cwd: Path = ROOT) -> Server:
        if self.gc_log and command[0] == sys.executable:
            command = [*command[:2], str(BENCH / "gcwatch.py"), *command[2:]]
            environ = {**environ, "BENCH_GC_LOG": self.gc_log}
        process = subprocess.Popen(command, cwd=cwd, env=environ, preexec_fn=child_setup(cpu))
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
        for directory in self.directories:
            shutil.rmtree(directory, ignore_errors=True)
        self.directories.clear()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
