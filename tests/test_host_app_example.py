"""examples/host_app.py runs as documented: login, presence lobby, publish excluding the sender.

Browsers are played by an HTTP client with a cookie jar (the login cookie,
the XSRF token) and a bare WebSocket, since pusher-js in Node may not send
cookies to the auth endpoint.
"""

from __future__ import annotations

import asyncio
import http.cookies
import json
import os
import sys
import urllib.parse
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.websocket

from conftest import RawSocket
from redis_server import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "host_app.py"
LOBBY = "presence-lobby"


class Browser:
    """One user's cookies on the host app."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    async def request(self, path: str, form: dict[str, str] | None = None
                      ) -> tornado.httpclient.HTTPResponse:
        """GET, or POST ``form`` with the XSRF token, as the example's pages do."""
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in self.cookies.items())}
        if form is not None:
            headers["X-XSRFToken"] = self.cookies["_xsrf"]
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{self.port}{path}", method="GET" if form is None else "POST",
            body=None if form is None else urllib.parse.urlencode(form), headers=headers,
            follow_redirects=False, raise_error=False)
        for header in response.headers.get_list("Set-Cookie"):
            for name, morsel in http.cookies.SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response

    async def log_in(self, name: str) -> None:
        await self.request("/login")  # sets the XSRF cookie
        assert (await self.request("/login", {"name": name})).code == 302

    async def join_lobby(self) -> RawSocket:
        """A socket subscribed to the lobby with the auth the app's endpoint gave."""
        socket = RawSocket(await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{self.port}/app/app-key?protocol=7"))
        established = await socket.expect("pusher:connection_established")
        socket.socket_id = json.loads(established["data"])["socket_id"]
        response = await self.request("/pusher/auth", {"socket_id": socket.socket_id,
                                                       "channel_name": LOBBY})
        assert response.code == 200, response.body
        await socket.send({"event": "pusher:subscribe",
                           "data": {"channel": LOBBY, **json.loads(response.body)}})
        await socket.expect("pusher_internal:subscription_succeeded")
        return socket


@pytest.fixture
def host_app_port(io_loop) -> int:
    """``python examples/host_app.py --port P``, stopped through its PID at teardown."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSH_")}

    async def start() -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), "--port", str(port), env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output = []
        while not output or "host app listening" not in output[-1]:
            line = await asyncio.wait_for(process.stdout.readline(), 15)
            assert line, "the example exited:\n" + "".join(output)
            output.append(line.decode())
        return process, asyncio.ensure_future(_drain(process.stdout))

    process, reader = io_loop.run_sync(start)
    yield port
    process.terminate()
    io_loop.run_sync(lambda: asyncio.gather(process.wait(), reader))


async def _drain(stream: asyncio.StreamReader) -> None:
    """Read the example's log as it comes, so that it never blocks on a full pipe."""
    while await stream.readline():
        pass


@pytest.mark.gen_test(timeout=30)
async def test_example_host_app_lobby_with_its_own_login(host_app_port: int) -> None:
    stranger = Browser(host_app_port)
    await stranger.request("/login")
    assert (await stranger.request("/pusher/auth", {"socket_id": "1.1",
                                                    "channel_name": LOBBY})).code == 403
    assert (await stranger.request("/login", {"name": "no spaces"})).code == 400
    alice, bob = Browser(host_app_port), Browser(host_app_port)
    await alice.log_in("alice")
    await bob.log_in("bob")
    alice_socket = await alice.join_lobby()
    bob_socket = await bob.join_lobby()
    added = await alice_socket.expect("pusher_internal:member_added")
    assert json.loads(added["data"]) == {"user_id": "bob", "user_info": {"name": "bob"}}

    await bob.request("/say", {"text": "hi", "socket_id": bob_socket.socket_id})
    heard = await alice_socket.expect("message")
    assert json.loads(heard["data"]) == {"from": "bob", "text": "hi"}
    await alice.request("/say", {"text": "hello", "socket_id": alice_socket.socket_id})
    # In order: had bob got his own "hi", it would come before alice's answer.
    assert json.loads((await bob_socket.expect("message"))["data"])["from"] == "alice"
    alice_socket.close()
    bob_socket.close()
