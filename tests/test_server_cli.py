"""``python server.py`` as a user runs it: serves the embedded default, stops with 4200."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys

import pytest
import tornado.websocket

from app_server import sdk_client
from conftest import ROOT, RawSocket, in_thread
from tornado_push.pubsub.apps import App


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def start_server(port: int, **env: str) -> asyncio.subprocess.Process:
    """Run server.py and wait for its 'listening' log line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "server.py", "--port", str(port), cwd=ROOT,
        env={**os.environ, **env}, stderr=asyncio.subprocess.PIPE)
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), 10)
        assert line, "server.py exited before listening"
        if b"listening on" in line:
            return process


@pytest.mark.gen_test(timeout=30)
async def test_server_serves_default_app_and_stops_clients_with_4200():
    port = free_port()
    process = await start_server(port, PUSH_APP_SECRET="cli-secret", PUSH_DRAIN_GRACE="0.1")
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

        process.send_signal(signal.SIGTERM)
        error = await client.expect("pusher:error")
        assert error["data"]["code"] == 4200
        assert await client.closed() == 4200
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
