"""Real ``redis-server`` processes for the tests: free loopback ports, tmp dirs.

:class:`RedisServer` starts one server and stops, kills, pauses, resumes or
restarts it through its own PID (never by name). :class:`RedisCluster` makes
three masters into a cluster with ``redis-cli --cluster create``.

Fixtures (a pytest plugin: ``pytest_plugins = ["redis_server"]``):
    redis_server    one server for the whole session, shared: do not break it
    fresh_redis     a server of its own for a test that kills or pauses it
    redis_cluster   a 3-master cluster for the whole session
    fresh_cluster   a 3-master cluster of its own for a test that stops one master; its
                    masters serve their slots while another is down (partial coverage)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence
from urllib.parse import quote

import pytest
import redis
from redis.crc import key_slot

#: Seconds a server or cluster may take to come up before the test fails.
START_TIMEOUT = 10.0


def free_port(*, cluster: bool = False) -> int:
    """A loopback port nobody listens on; with ``cluster``, its bus port (+10000) too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if not cluster:
            return port
        if port + 10000 <= 65535 and bindable(port + 10000):
            return port


def bindable(port: int) -> bool:
    """Whether a 127.0.0.1 port is free to bind right now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen | None = None,
                log: Path | None = None) -> None:
    """Poll ``ready()`` for up to START_TIMEOUT: redis-server offers no readiness event."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {START_TIMEOUT:g} s:\n{_tail(log)}")
        time.sleep(0.02)


def _tail(log: Path | None) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log and log.exists() else ""


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, no persistence, its log in ``directory``.

    ``password`` is set with ``requirepass`` (the default user); ``user`` adds
    an ACL user ``(name, password)`` allowed everything.
    """

    def __init__(self, directory: Path, *, port: int | None = None, password: str | None = None,
                 user: tuple[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.paused = False
        self._user = user
        self._args = list(args)
        self._log = directory / "redis.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://`` URL of the server, with the requirepass password percent-encoded."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        seen = self._log.stat().st_size if self._log.exists() else 0
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--daemonize", "no",
                   "--dir", str(self.directory), "--logfile", str(self._log)]
        if self.password:
            command += ["--requirepass", self.password]
        if self._user:
            name, password = self._user
            command += ["--user", name, "on", f">{password}", "~*", "&*", "+@all"]
        self._process = subprocess.Popen(command + self._args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        try:
            _wait_until(lambda: self._logged_since(seen, "Ready to accept connections"),
                        f"redis-server on port {self.port}", self._process, self._log)
        except RuntimeError:
            self.kill()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM and wait; a server that does not stop in 10 s is killed."""
        if not self._running():
            return
        self.resume()  # a stopped process would not act on SIGTERM
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL and wait: as sudden as a crash."""
        if self._running():
            self._process.kill()
            self._process.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing."""
        os.kill(self._process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self._running():
            os.kill(self._process.pid, signal.SIGCONT)
        self.paused = False

    def restart(self) -> RedisServer:
        """A new server on the same port, with no data (there is no persistence)."""
        self.stop()
        return self.start()

    def _running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _logged_since(self, offset: int, text: str) -> bool:
        if not self._log.exists():
            return False
        with self._log.open("rb") as log:
            log.seek(offset)
            return text.encode() in log.read()


class RedisCluster:
    """Three (``size``) cluster-enabled masters, no replicas, every slot covered.

    With ``full_coverage`` (Redis's default) the whole cluster refuses commands
    while one master is down; without it the others go on serving their slots.
    A master stopped or killed through its :class:`RedisServer` is started again
    with ``start()``: it rejoins with its slots from its ``nodes.conf``.
    """

    def __init__(self, directory: Path, size: int = 3, *, full_coverage: bool = True) -> None:
        self.nodes = [
            RedisServer(directory / f"node{number}", port=free_port(cluster=True), args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(directory / f"node{number}" / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--cluster-require-full-coverage", "yes" if full_coverage else "no",
            ])
            for number in range(size)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A startup node; the client learns the others from it."""
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(["redis-cli", "--cluster", "create",
                            *(f"127.0.0.1:{port}" for port in self.ports),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=START_TIMEOUT)
            self.wait_ok()
        except (RuntimeError, subprocess.SubprocessError):
            self.stop()
            raise
        return self

    def wait_ok(self) -> None:
        """Poll (bounded) until every master reports ``cluster_state:ok`` and knows no
        master as failing: after a start, or after a stopped master came back."""
        for port in self.ports:
            _wait_until(lambda: b"cluster_state:ok" in _cli(port, "CLUSTER", "INFO")
                        and b"fail" not in _cli(port, "CLUSTER", "NODES"),
                        f"cluster node on port {port}")

    def master_for(self, key: str) -> RedisServer:
        """The master serving ``key``'s slot (by the hash tag, as Redis Cluster hashes it)."""
        slot = key_slot(key.encode())
        for low, high, (_, port, *_) in _slots(self.ports[0]):
            if low <= slot <= high:
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _slots(port: int) -> list:
    """``CLUSTER SLOTS`` as one node sees it: [low, high, [host, port, id], ...] per range."""
    with redis.Redis(port=port) as client:
        return client.execute_command("CLUSTER SLOTS")


def _cli(port: int, *command: str) -> bytes:
    result = subprocess.run(["redis-cli", "-p", str(port), *command],
                            capture_output=True, timeout=START_TIMEOUT)
    return result.stdout


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "redis-cluster", full_coverage=False).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()
