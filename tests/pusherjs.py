"""Drive real pusher-js clients (Node build) from asyncio tests.

``tests/js/driver.js`` runs any number of named pusher-js clients in a single
Node process and speaks JSON lines: commands on its stdin, replies and events
on its stdout.  This module is the Python end::

    js = await PusherJS.start()
    try:
        a = js.client("a")
        await a.connect("app-key", port, auth_endpoint=f"http://127.0.0.1:{port}/test/auth")
        await js.expect(type="connected", client="a")
        await a.subscribe("presence-room")
        ev = await js.expect(type="channel_event", client="a", channel="presence-room",
                             event="pusher:subscription_succeeded")
    finally:
        await js.close()

Event types (every one has ``type`` and, except ``driver_error``, ``client``):

* ``state``           ``previous``, ``current``   (connection state_change)
* ``connected``       ``socket_id``
* ``error``           ``error``  (pusher-js connection error, e.g.
  ``{"type": "PusherError", "data": {"code": 4001, "message": ...}}``)
* ``message``         ``event``, ``channel``?, ``data``?, ``user_id``?  (every raw frame)
* ``channel_event``   ``channel``, ``event``, ``data``, ``metadata``?  (channel bind_global)
* ``user_event``      ``event``, ``data``   (``pusher.user`` bind_global)
* ``watchlist_event`` ``event``, ``data``   (``pusher.user.watchlist`` bind_global)
* ``signed_in``       ``user_data``  (``None`` when the sign-in attempt failed)
* ``driver_error``    ``message``
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections import deque
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent / "js"
DRIVER = JS_DIR / "driver.js"

_STDERR_LIMIT = 64 * 1024  # characters of driver stderr kept for diagnostics
_CLOSE_TIMEOUT = 5.0


class DriverError(RuntimeError):
    """The driver answered a request with ``ok: false`` (or died)."""


def _matches(event: dict, match: dict[str, Any]) -> bool:
    return all(key in event and event[key] == value for key, value in match.items())


class PusherJS:
    """One ``node driver.js`` process managing many named pusher-js clients."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._req_ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: list[dict] = []  # every event received, in order
        self._consumed: set[int] = set()  # indexes into _events taken by expect()
        self._changed = asyncio.Condition()
        self._stderr: deque[str] = deque()
        self._stderr_len = 0
        self._closed = False
        self._reader = asyncio.create_task(self._read_stdout())
        self._err_reader = asyncio.create_task(self._read_stderr())

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    async def start(cls, node: str = "node", env: dict[str, str] | None = None) -> PusherJS:
        """Start the driver; needs ``npm ci --prefix tests/js`` to have been run.

        ``env`` adds variables to the driver's environment (this process's),
        e.g. ``NODE_EXTRA_CA_CERTS`` so that Node trusts a test certificate.
        """
        if not (JS_DIR / "node_modules" / "pusher-js").is_dir():
            raise RuntimeError(
                f"pusher-js is not installed in {JS_DIR / 'node_modules'}: "
                "run `npm ci --prefix tests/js`"
            )
        proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER),
            cwd=str(JS_DIR),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,  # longest stdout line accepted
            env={**os.environ, **env} if env else None,
        )
        return cls(proc)

    async def close(self) -> None:
        """Close stdin (the driver disconnects its clients and exits); kill it
        if it has not exited within a few seconds.  Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
            try:
                await proc.stdin.wait_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass
        try:
            await asyncio.wait_for(proc.wait(), _CLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
        # Both readers end at EOF once the process is gone.
        await asyncio.gather(self._reader, self._err_reader, return_exceptions=True)

    async def __aenter__(self) -> PusherJS:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def returncode(self) -> int | None:
        """The driver's exit status, or None while it runs."""
        return self._proc.returncode

    @property
    def stderr(self) -> str:
        """What the driver (and pusher-js's logger) wrote to stderr, recent part."""
        return "".join(self._stderr)

    # -- commands ------------------------------------------------------------

    async def request(self, cmd: str, timeout: float = 10.0, **fields: Any) -> Any:
        """Send a command with a fresh ``req`` id and return the reply's
        ``result``; raise :class:`DriverError` on ``ok: false``."""
        if self._closed or self._proc.returncode is not None:
            raise DriverError(f"driver is not running; stderr:\n{self.stderr}")
        req = next(self._req_ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            await self._send({"cmd": cmd, "req": req, **fields})
            reply = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise DriverError(
                f"no reply to {cmd} {fields!r} within {timeout}s; stderr:\n{self.stderr}"
            ) from None
        finally:
            self._pending.pop(req, None)
        if not reply.get("ok"):
            raise DriverError(f"{cmd} {fields!r} failed: {reply.get('error')}")
        return reply.get("result")

    async def send(self, cmd: str, **fields: Any) -> None:
        """Send a command without waiting for (or asking for) a reply."""
        await self._send({"cmd": cmd, **fields})

    def client(self, name: str) -> JSClient:
        """A convenience wrapper for the commands of client ``name``."""
        return JSClient(self, name)

    # -- events --------------------------------------------------------------

    async def expect(self, timeout: float = 5.0, **match: Any) -> dict:
        """Wait for the first not-yet-consumed event whose fields equal every
        item of ``match``; consume and return it.

        Events that arrived before the call count too.  On timeout raise
        AssertionError listing ``match`` and the last events seen.
        """
        start = 0  # events before this index have already been checked

        def find() -> dict | None:
            nonlocal start
            for index in range(start, len(self._events)):
                if index not in self._consumed and _matches(self._events[index], match):
                    self._consumed.add(index)
                    return self._events[index]
            start = len(self._events)
            return None

        async def wait() -> dict:
            async with self._changed:
                while True:
                    event = find()
                    if event is not None:
                        return event
                    if self._reader.done():
                        raise AssertionError(
                            f"driver exited (rc={self._proc.returncode}) while waiting for "
                            f"{match!r}\n{self._describe()}"
                        )
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no event matching {match!r} within {timeout}s\n{self._describe()}"
            ) from None

    def seen(self, **match: Any) -> list[dict]:
        """All events received so far, consumed or not, that match."""
        return [event for event in self._events if _matches(event, match)]

    @property
    def events(self) -> list[dict]:
        """Every event received so far, in order (do not modify)."""
        return self._events

    # -- internals -------------------------------------------------------------

    async def _send(self, command: dict) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        stdin.write((json.dumps(command) + "\n").encode())
        try:
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DriverError(f"driver is gone; stderr:\n{self.stderr}") from exc

    async def _read_stdout(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            async for raw in stdout:
                line = raw.decode(errors="replace").strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = {"type": "driver_error", "message": f"non-JSON stdout line: {line}"}
                if obj.get("type") == "reply":
                    future = self._pending.get(obj.get("req"))
                    if future is not None and not future.done():
                        future.set_result(obj)
                    continue
                async with self._changed:
                    self._events.append(obj)
                    self._changed.notify_all()
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(
                        DriverError(f"driver exited before replying; stderr:\n{self.stderr}")
                    )
            async with self._changed:
                self._changed.notify_all()  # wake expect() so it can report the exit

    async def _read_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        while chunk := await stderr.read(4096):
            text = chunk.decode(errors="replace")
            self._stderr.append(text)
            self._stderr_len += len(text)
            while self._stderr_len > _STDERR_LIMIT and len(self._stderr) > 1:
                self._stderr_len -= len(self._stderr.popleft())
            if os.environ.get("PUSHERJS_STDERR"):
                print(text, end="", flush=True)

    def _describe(self, last: int = 30) -> str:
        lines = [f"last {min(last, len(self._events))} of {len(self._events)} events:"]
        first = max(0, len(self._events) - last)
        for index in range(first, len(self._events)):
            mark = "  (consumed)" if index in self._consumed else ""
            lines.append(f"  {json.dumps(self._events[index])}{mark}")
        stderr = self.stderr[-4000:]
        if stderr:
            lines.append("driver stderr (tail):")
            lines.append(stderr)
        return "\n".join(lines)


class JSClient:
    """The commands of one named pusher-js client in a :class:`PusherJS` driver."""

    def __init__(self, js: PusherJS, name: str) -> None:
        self.js = js
        self.name = name

    def _request(self, cmd: str, **fields: Any) -> Any:
        return self.js.request(cmd, client=self.name, **fields)

    async def connect(
        self,
        key: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        auth_endpoint: str | None = None,
        user_auth_endpoint: str | None = None,
        **options: Any,
    ) -> Any:
        """``new Pusher(key, {...})``; returns at once (await a ``connected``
        event).  Extra keyword arguments are pusher-js options, overriding the
        defaults (e.g. ``activityTimeout=500``)."""
        fields: dict[str, Any] = {"key": key, "host": host, "port": port, "options": options}
        if auth_endpoint is not None:
            fields["authEndpoint"] = auth_endpoint
        if user_auth_endpoint is not None:
            fields["userAuthEndpoint"] = user_auth_endpoint
        return await self._request("connect", **fields)

    async def subscribe(self, channel: str) -> Any:
        """``pusher.subscribe(channel)`` and report its events as ``channel_event``."""
        return await self._request("subscribe", channel=channel)

    async def unsubscribe(self, channel: str) -> None:
        await self._request("unsubscribe", channel=channel)

    async def trigger(self, channel: str, event: str, data: Any = None) -> bool:
        """``channel.trigger(event, data)`` (a client event); pusher-js's result."""
        return await self._request("trigger", channel=channel, event=event, data=data)

    async def members(self, channel: str) -> dict:
        """``{"me": {"id", "info"}, "members": {id: info}, "count": n}``."""
        return await self._request("members", channel=channel)

    async def signin(self) -> None:
        """``pusher.signin()``; await a ``signed_in`` event for the outcome."""
        await self._request("signin")

    async def disconnect(self) -> Any:
        await self._request("disconnect")

    async def send_raw(self, event: str, data: Any = None, channel: str | None = None) -> bool:
        """``pusher.send_event(event, data, channel)``: any frame over the socket."""
        fields: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            fields["channel"] = channel
        return await self._request("send_raw", **fields)

    async def state(self) -> dict:
        """``{"state": connection.state, "socket_id": ...}``."""
        return await self._request("state")

    async def expect(self, timeout: float = 5.0, **match: Any) -> dict:
        """:meth:`PusherJS.expect` restricted to this client's events."""
        return await self.js.expect(timeout=timeout, client=self.name, **match)

    def seen(self, **match: Any) -> list[dict]:
        """:meth:`PusherJS.seen` restricted to this client's events."""
        return self.js.seen(client=self.name, **match)
