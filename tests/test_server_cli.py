"""``python server.py`` as a user runs it: serves the embedded default, stops with 4200."""

from __future__ import annotations

import asyncio
import json

import pytest
import tornado.websocket

from app_server import sdk_client
from conftest import RawSocket, in_thread
from redis_server import free_port
from server_processes import ServerProcess
from tornado_push.pubsub.apps import App


@pytest.mark.gen_test(timeout=30)
async def test_server_serves_default_app_and_stops_clients_with_4200():
    # ServerProcess reads every line the server logs, so a chatty one never blocks on the pipe.
    process = await ServerProcess(free_port(), {"PUSH_APP_SECRET": "cli-secret",
                                                "PUSH_DRAIN_GRACE": "0.1"}).start()
    port = process.port
    try:
        connection = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{port}/app/app-key?protocol=7")
        client = RawSocket(connection)
        assert (await client.receive())["event"] == "pusher:connection_established"
        await client.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
        await client.expect("pusher_internal:subscription_succeeded")
        app = App(id="1", key="app-key", secret="cli-secret")
        await in_thread(sdk_client(app, port).trigger, "news", "hello", {"from": "sdk"})
        assert json.loads((await client.expect("hello"))["data"]) == {"from": "sdk"}

        stopped = asyncio.ensure_future(process.terminate())
        error = await client.expect("pusher:error")
        assert error["data"]["code"] == 4200
        assert await client.closed() == 4200
        assert await stopped == 0
    finally:
        await process.kill()
