"""Real pusher-js 8 (Node build) over the HTTP fallbacks, xhr_streaming and xhr_polling."""

from __future__ import annotations

import pytest
import tornado.web

from conftest import APPS, MAX_MESSAGE_BYTES, in_thread, subscribed
from app_server import auth_routes
from tornado_push.handlers import routes
from tornado_push.handlers.fallback import FallbackOptions

TRANSPORTS = ["xhr_streaming", "xhr_polling"]
#: Short, so that a client that left is noticed within the test.
DISCONNECT_TIMEOUT = 1.0


@pytest.fixture
def app(hub) -> tornado.web.Application:
    fallback = FallbackOptions(disconnect_timeout=DISCONNECT_TIMEOUT)
    return tornado.web.Application(routes(hub, fallback=fallback) + auth_routes(APPS),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return request.param


@pytest.fixture
def connect_http(connect, server_port: int, transport: str):
    """``connect`` with pusher-js held to one HTTP transport."""

    async def connect_http(name: str, **kwargs):
        return await connect(name, enabledTransports=[transport], httpHost="127.0.0.1",
                             httpPort=server_port, forceTLS=False, **kwargs)

    return connect_http


@pytest.mark.gen_test(timeout=30)
async def test_public_channel_receives_sdk_triggers_in_order(connect_http, sdk, hub, transport):
    a = await connect_http("a")
    assert [session.transport.kind for session in hub.sessions(APPS[0])] == [transport]
    await subscribed(a, "news")
    for number in range(20):
        await in_thread(sdk.trigger, "news", "headline", {"n": number})
    received = [(await a.expect(type="channel_event", channel="news", event="headline",
                                timeout=10))["data"]["n"] for _ in range(20)]
    assert received == list(range(20))
