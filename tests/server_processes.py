"""``python server.py`` subprocesses for the multi-process tests, on free loopback ports.

:class:`ServerProcess` starts one server and waits for its ``listening on``
log line, keeps every line it logs (for failure messages and for tests that
wait on a log line), and stops or kills it through the PID it started, never
by name. Given a ``command`` and its ``ready`` line, it runs another server
the same way (the Django example's ``manage.py runserver``).
:class:`ServerGroup` starts several that form one cluster: they share a Redis
key prefix of their own, so tests sharing a Redis never see each other.

Fixture (a pytest plugin: ``pytest_plugins = ["server_processes"]``):
    server_processes   ``await server_processes(3, PUSH_REDIS_URL=url)``: three
                       started servers; every one is stopped at teardown, and
                       their logs are printed there (pytest shows them for a failure)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a server may take to log "listening on", and to stop after SIGTERM.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: Heartbeat for the tests: a silent process is reaped within about two seconds. Not
#: shorter: a live process whose loop stalls past two beats on a loaded CI machine
#: is rightly taken for dead.
HEARTBEAT = 1.0


class ServerProcess:
    """One ``python server.py --port {port}`` with ``env`` added to this environment.

    ``command`` (run by this Python, in ``cwd``) replaces ``server.py --port {port}``;
    it is started once it logs ``ready``.
    """

    def __init__(self, port: int, env: dict[str, str], name: str = "", *,
                 command: Sequence[str] = (), cwd: Path = ROOT,
                 ready: str = "listening on") -> None:
        self.port = port
        self.env = dict(env)
        self.name = name or f"server:{port}"
        self.command = tuple(command) or ("server.py", "--port", str(port))
        self.cwd = cwd
        self.ready = ready
        self.lines: list[str] = []  # everything it printed (its log), in order
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed: asyncio.Condition | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def describe(self, last: int = 60) -> str:
        """The tail of its log, for a failure message."""
        state = "running" if self.running else f"exited with {self.returncode}"
        tail = "\n".join(f"    {line}" for line in self.lines[-last:])
        return f"{self.name} (pid {self.pid}, {state}), last {last} log lines:\n{tail}"

    async def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Run the server and return once it logs that it is listening (its ``ready`` line)."""
        assert self._process is None, "start() once"
        self._changed = asyncio.Condition()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, *self.command, cwd=self.cwd,
            env={**os.environ, **self.env}, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read())
        try:
            await self.wait_for_log(self.ready, timeout=timeout)
        except AssertionError as error:
            await self.kill()
            raise RuntimeError(f"{self.name} did not start: {error}") from None
        return self

    def mark(self) -> int:
        """The number of log lines so far: pass it as ``after`` to wait for a later line."""
        return len(self.lines)

    async def wait_for_log(self, text: str, *, after: int = 0, timeout: float = 10.0) -> int:
        """The index of the first log line from ``after`` on that contains ``text``."""
        assert self._changed is not None, "start() first"
        checked = after

        async def wait() -> int:
            nonlocal checked
            async with self._changed:
                while True:
                    for index in range(checked, len(self.lines)):
                        if text in self.lines[index]:
                            return index
                    checked = max(checked, len(self.lines))
                    if self._reader is None or self._reader.done():
                        raise AssertionError(f"{self.name} exited before logging {text!r}\n"
                                             f"{self.describe()}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name} did not log {text!r} within {timeout:g} s\n"
                                 f"{self.describe()}") from None

    async def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (the server closes its clients with 4200) and wait; SIGKILL if it hangs."""
        if self.running:
            self._process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._process.wait(), timeout)
            except asyncio.TimeoutError:
                await self.kill()
        await self._drained()
        return self.returncode

    async def kill(self) -> int | None:
        """SIGKILL to the PID this object started, and wait: as sudden as a crash."""
        if self.running:
            self._process.kill()
            await self._process.wait()
        await self._drained()
        return self.returncode

    async def _drained(self) -> None:
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        assert self._changed is not None
        try:
            async for raw in self._process.stdout:
                async with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        finally:
            async with self._changed:
                self._changed.notify_all()  # wake waiters so they see the exit


class ServerGroup:
    """Server processes of one test, forming one cluster: one Redis key prefix for all.

    Every process gets ``PUSH_REDIS_PREFIX`` (unique to the group),
    ``PUSH_NODE_HEARTBEAT`` (:data:`HEARTBEAT`) and ``PUSH_LOG_LEVEL=INFO``
    unless the call's ``env`` says otherwise.
    """

    def __init__(self) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:10]}"
        self.processes: list[ServerProcess] = []

    async def start(self, count: int = 1, **env: str) -> list[ServerProcess]:
        """``count`` servers with ``env``, started concurrently; each on a free port."""
        settings = {"PUSH_REDIS_PREFIX": self.prefix, "PUSH_NODE_HEARTBEAT": str(HEARTBEAT),
                    "PUSH_LOG_LEVEL": "INFO", **env}
        started = []
        for _ in range(count):
            port = free_port()
            while any(process.port == port for process in self.processes):
                port = free_port()
            process = ServerProcess(port, settings,
                                    name=f"server #{len(self.processes) + 1}")
            self.processes.append(process)
            started.append(process)
        await asyncio.gather(*(process.start() for process in started))
        return started

    async def stop(self) -> None:
        await asyncio.gather(*(process.terminate() for process in self.processes))

    def describe(self) -> str:
        return "\n\n".join(process.describe() for process in self.processes)


@pytest.fixture
def server_processes(io_loop) -> Iterator:
    """``await server_processes(count, **env)``: started servers, stopped at teardown."""
    group = ServerGroup()
    yield group.start
    io_loop.run_sync(group.stop)
    if group.processes:  # pytest shows this only for a test that failed
        print(group.describe())
