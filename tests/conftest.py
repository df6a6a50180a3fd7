"""Fixtures: an in-process server on a free loopback port, real pusher-js, the official SDK."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import checkout  # noqa: E402

checkout.load()  # the tests import this checkout as tornado_push, never an installed copy

from app_server import auth_routes, sdk_client  # noqa: E402

# Real redis-server fixtures (redis_server, fresh_redis, redis_cluster),
# `python server.py` subprocesses (server_processes), headless Chromium
# (browser), and a MongoDB or nx-27017 for the Mongo history store (mongo_server).
pytest_plugins = ["redis_server", "server_processes", "browser", "mongo_server"]
from pusherjs import JSClient, PusherJS  # noqa: E402

from tornado_push.handlers import routes  # noqa: E402
from tornado_push.handlers.front import HTTPTimeouts, PushHTTPServer  # noqa: E402
from tornado_push.pubsub.apps import App, AppRegistry  # noqa: E402
from tornado_push.pubsub.history import HistoryStore  # noqa: E402
from tornado_push.pubsub.history.memory import MemoryHistoryStore  # noqa: E402
from tornado_push.pubsub.hub import Hub, HubOptions  # noqa: E402

#: Channels of the main app that keep history (docs/history.md).
HISTORY_CHANNELS = ("history-*", "private-history-*", "presence-history-*")
MAIN = App(id="1", key="app-key", secret="app-secret", history_channels=HISTORY_CHANNELS,
           history_client_events=True)
QUIET = App(id="2", key="quiet-key", secret="quiet-secret", client_events=False)
DISABLED = App(id="3", key="off-key", secret="off-secret", enabled=False)
TINY = App(id="4", key="tiny-key", secret="tiny-secret", max_connections=3,
           max_presence_members=2, max_presence_user_info_bytes=64, max_event_bytes=100,
           client_event_rate=2, client_event_burst=2)
SIGNIN_REQUIRED = App(id="5", key="signin-key", secret="signin-secret",
                      user_authentication_timeout=0.3)
COUNTED = App(id="6", key="count-key", secret="count-secret", subscription_count_events=True)
SMALL_BUFFER = App(id="7", key="small-buffer-key", secret="small-buffer-secret",
                   max_outbound_bytes=256 * 1024, history_channels=("history-*",))
#: Every channel keeps history, but only three messages for a minute.
SHORT_HISTORY = App(id="8", key="short-history-key", secret="short-history-secret",
                    history_channels=("*",), history_size=3, history_ttl=60)
APPS = [MAIN, QUIET, DISABLED, TINY, SIGNIN_REQUIRED, COUNTED, SMALL_BUFFER, SHORT_HISTORY]
MAX_MESSAGE_BYTES = 16 * 1024


@pytest.fixture
def hub_options() -> HubOptions:
    """Override in a test module to change process-wide limits."""
    return HubOptions()


@pytest.fixture
def clock() -> Callable[[], float]:
    """The hub's clock; override with a manual one to make rate limits exact."""
    return time.monotonic


@pytest.fixture
def history_store() -> HistoryStore:
    """The hub's history store; override in a test module to use another."""
    return MemoryHistoryStore()


@pytest.fixture
def hub_apps() -> list[App]:
    """The apps the ``hub`` fixture serves; a test module may override it to add its own."""
    return list(APPS)


@pytest.fixture
def hub(io_loop, hub_apps: list[App], hub_options: HubOptions, clock: Callable[[], float],
        history_store: HistoryStore) -> Hub:
    hub = Hub(AppRegistry(hub_apps), options=hub_options, clock=clock, history=history_store)
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    """The application pytest-tornado serves on ``http_port`` (127.0.0.1)."""
    return tornado.web.Application(routes(hub) + auth_routes(APPS),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


@pytest.fixture
def http_timeouts() -> HTTPTimeouts:
    """Override in a test module to change how long clients may take over a request."""
    return HTTPTimeouts()


@pytest.fixture
def http_server(io_loop, _unused_port, app: tornado.web.Application, http_timeouts: HTTPTimeouts):
    """pytest-tornado's fixture, serving ``app`` as server.py does: publishes through
    the HTTP front (handlers/front.py), everything else through Tornado."""
    server = PushHTTPServer(app, timeouts=http_timeouts)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections)


@pytest.fixture
def server_port(http_server, http_port: int) -> int:
    """The port of the running server (asking for ``http_server`` starts it)."""
    return http_port


@pytest.fixture
def sdk(server_port: int):
    """The official SDK for the main app, aimed at the test server."""
    return sdk_client(MAIN, server_port)


def running(io_loop, push: Any) -> Iterator[Any]:
    """A fixture's body, ``yield from running(io_loop, push)``: the embedding API's
    ``push`` started on the test's loop, and closed after the test."""
    io_loop.run_sync(push.start)
    yield push
    io_loop.run_sync(push.close)


async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call off the IOLoop, which serves the request meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(call, *args, **kwargs))


async def until(found: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``found`` until it returns something true, for what the server does on its own time."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
    return result


async def subscribed(client: JSClient, channel: str) -> dict:
    """Subscribe a pusher-js client and wait for pusher-js to report success."""
    await client.subscribe(channel)
    return await client.expect(type="channel_event", channel=channel,
                               event="pusher:subscription_succeeded")


@pytest.fixture
def js(io_loop) -> PusherJS:
    """One Node process running real pusher-js clients."""
    driver = io_loop.run_sync(PusherJS.start)
    yield driver
    io_loop.run_sync(driver.close)


@pytest.fixture
def connect(js: PusherJS, server_port: int):
    """``await connect("a", user="alice")``: a connected pusher-js client with auth endpoints."""

    async def connect(name: str, *, app: App = MAIN, user: str | None = None,
                      watch: str = "", forge: bool = False, wait: bool = True,
                      **options: Any) -> JSClient:
        query = []
        if user:
            query.append(f"user={user}")
        if watch:
            query.append(f"watch={watch}")
        if forge:
            query.append("forge=1")
        suffix = "?" + "&".join(query) if query else ""
        base = f"http://127.0.0.1:{server_port}/test/{app.key}"
        client = js.client(name)
        await client.connect(app.key, server_port, auth_endpoint=f"{base}/auth{suffix}",
                             user_auth_endpoint=f"{base}/user-auth{suffix}", **options)
        if wait:
            await client.expect(type="connected")
        return client

    return connect


#: What pusher-js can be held to: WebSocket, or one of its HTTP fallbacks.
TRANSPORTS = ["ws", "xhr_streaming", "xhr_polling"]


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    """Each test asking for it runs once per transport (a module may narrow the list)."""
    return request.param


@pytest.fixture
def connect_over(connect, server_port: int, transport: str):
    """``connect`` with pusher-js held to :func:`transport`."""

    async def connect_over(name: str, **options: Any) -> JSClient:
        if transport != "ws":  # pusher-js derives no HTTP host from wsHost
            options.update(httpHost="127.0.0.1", httpPort=server_port, forceTLS=False)
        return await connect(name, enabledTransports=[transport], **options)

    return connect_over


class RawSocket:
    """A bare WebSocket client for what pusher-js would never send.

    A reader task drains frames as they come, as a real client would, so
    the server is never held back by a test that has not read yet.
    """

    def __init__(self, connection: tornado.websocket.WebSocketClientConnection) -> None:
        self.connection = connection
        self.socket_id = ""
        self._frames: asyncio.Queue[dict | None] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read_all())

    async def _read_all(self) -> None:
        while (message := await self.connection.read_message()) is not None:
            self._frames.put_nowait(json.loads(message))
        self._frames.put_nowait(None)

    async def send(self, message: Any) -> None:
        """Send a dict as JSON, or a str/bytes frame as it is."""
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.connection.write_message(message, binary=isinstance(message, bytes))

    async def receive(self, timeout: float = 5.0) -> dict | None:
        """The next frame as a dict, or None once the server has closed."""
        frame = await asyncio.wait_for(self._frames.get(), timeout)
        if frame is None:
            self._frames.put_nowait(None)  # stay closed for later calls
        return frame

    def close(self) -> None:
        self.connection.close()
        self._reader.cancel()

    async def expect(self, event: str, timeout: float = 5.0) -> dict:
        """Skip frames until one with ``event`` arrives."""
        while True:
            frame = await self.receive(timeout)
            assert frame is not None, f"closed ({self.close_code}) while waiting for {event}"
            if frame["event"] == event:
                return frame

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server closes; its close code."""
        while await self.receive(timeout) is not None:
            pass
        return self.close_code

    async def barrier(self, timeout: float = 5.0) -> None:
        """Wait until the server has handled every message sent so far.

        The server reads a socket's frames in order and answers a WebSocket
        ping only when it reaches it, whatever its own rate limits.
        """
        answered = asyncio.get_running_loop().create_future()
        self.connection.on_pong = lambda data: answered.done() or answered.set_result(data)
        self.connection.ping(b"barrier")
        await asyncio.wait_for(answered, timeout)

    @property
    def close_code(self) -> int | None:
        return self.connection.close_code


@pytest.fixture
def raw(server_port: int):
    """``await raw()``: a connected bare socket, its ``connection_established`` read."""
    sockets: list[RawSocket] = []

    async def open_socket(key: str = MAIN.key, query: str = "?protocol=7",
                          established: bool = True,
                          headers: dict[str, str] | None = None) -> RawSocket:
        connection = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(
            f"ws://127.0.0.1:{server_port}/app/{key}{query}", headers=headers))
        socket = RawSocket(connection)
        sockets.append(socket)
        if established:
            frame = await socket.receive()
            assert frame is not None and frame["event"] == "pusher:connection_established", frame
            socket.socket_id = json.loads(frame["data"])["socket_id"]
        return socket

    yield open_socket
    for socket in sockets:
        socket.close()
