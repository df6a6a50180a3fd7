"""A MongoDB for the tests: a real one at ``MONGO_URL``, else nx-27017 on a free port.

MongoDB itself cannot be installed here (Debian has no package), so by
default the tests run against nx-27017 from PyPI: a MongoDB wire-protocol
server on SQLite, experimental, not mongod. It runs as a subprocess of the
test session (``python -m nx_27017.nx_27017`` with an in-memory database, its
PID and log files in a tmp dir) and is stopped through its own PID.

What nx-27017 0.8.1 does differently, as found against the stores' needs:
    - an upsert ignores ``$setOnInsert`` (the inserted document lacks those
      fields): the Mongo store makes counters with insert_one instead;
    - ``$set`` of a datetime through findAndModify stores a string, which no
      TTL index would ever expire: the store writes datetimes with insert_one;
    - findAndModify answers ``value: null`` instead of an error when the
      update fails;
    - TTL indexes are honoured on each access rather than by a minute monitor;
    - createIndexes ignores the names given and names indexes itself.

Fixture (a pytest plugin: ``pytest_plugins = ["mongo_server"]``):
    mongo_server    one server for the whole session; each test uses its own database
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from redis_server import _wait_until, free_port

@dataclass(frozen=True)
class MongoServer:
    url: str


class Nx27017:
    """One nx-27017 process on 127.0.0.1 with an in-memory SQLite database."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self._log = directory / "nx-27017.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> Nx27017:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "nx_27017.nx_27017", "--db", "memory",
                   "--host", "127.0.0.1", "-p", str(self.port),
                   "--pid-file", str(self.directory / "nx-27017.pid"),
                   "--log-file", str(self._log)]
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_until(self._listening, f"nx-27017 on port {self.port}", self._process, self._log)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM through its PID and wait; killed if it does not stop in 10 s."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    url = os.environ.get("MONGO_URL")
    if url:
        yield MongoServer(url)
        return
    server = Nx27017(tmp_path_factory.mktemp("nx-27017")).start()
    yield MongoServer(server.url)
    server.stop()
