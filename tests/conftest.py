"""Fixtures: an in-process server on a free loopback port, real pusher-js, the official SDK."""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from app_server import auth_routes, sdk_client  # noqa: E402
from pusherjs import JSClient, PusherJS  # noqa: E402

from handlers import routes  # noqa: E402
from pubsub.apps import App, AppRegistry  # noqa: E402
from pubsub.hub import Hub, HubOptions  # noqa: E402

MAIN = App(id="1", key="app-key", secret="app-secret")
QUIET = App(id="2", key="quiet-key", secret="quiet-secret", client_events=False)
DISABLED = App(id="3", key="off-key", secret="off-secret", enabled=False)
TINY = App(id="4", key="tiny-key", secret="tiny-secret", max_connections=2,
           max_presence_members=2, max_presence_user_info_bytes=64, max_event_bytes=100,
           client_event_rate=2, client_event_burst=2)
SIGNIN_REQUIRED = App(id="5", key="signin-key", secret="signin-secret",
                      user_authentication_timeout=0.3)
APPS = [MAIN, QUIET, DISABLED, TINY, SIGNIN_REQUIRED]
MAX_MESSAGE_BYTES = 16 * 1024


@pytest.fixture
def hub_options() -> HubOptions:
    """Override in a test module to change process-wide limits."""
    return HubOptions()


@pytest.fixture
def hub(io_loop, hub_options: HubOptions) -> Hub:
    hub = Hub(AppRegistry(APPS), options=hub_options)
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(hub.close)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    """The application pytest-tornado serves on ``http_port`` (127.0.0.1)."""
    return tornado.web.Application(routes(hub) + auth_routes(APPS),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


@pytest.fixture
def server_port(http_server, http_port: int) -> int:
    """The port of the running server (asking for ``http_server`` starts it)."""
    return http_port


@pytest.fixture
def sdk(server_port: int):
    """The official SDK for the main app, aimed at the test server."""
    return sdk_client(MAIN, server_port)


async def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking SDK call off the IOLoop, which serves the request meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(call, *args, **kwargs))


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
