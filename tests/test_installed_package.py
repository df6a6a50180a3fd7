"""``pip install .`` into a fresh virtualenv, then a host app that embeds it.

The host app has its own ``handlers`` package (host_handlers.py, which
test_embedding.py mounts in-process) and ``settings`` module, as Tornado apps
often do, and imports them beside ``tornado_push``: the
installed package must not collide with them. A real pusher-js client joins
the host's presence channel as the host's user and receives what a host
handler publishes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.web

from conftest import subscribed
from host_handlers import bearer_token
from pusherjs import PusherJS
from redis_server import free_port

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COOKIE_SECRET = "installed-host-secret"
#: Not the project: what a checkout holds beside it (and what building it leaves).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "__pycache__", "build",
                                     "*.egg-info", ".pytest_cache", "test-artifacts", "run")

HOST_SETTINGS = f'''
"""The host's own settings module: `import settings` must find this one."""
COOKIE_SECRET = {COOKIE_SECRET!r}
APP_ID, APP_KEY, APP_SECRET = "7", "host-key", "host-secret"
SITE_NAME = "Host Site"
'''

HOST_APP = '''
import asyncio
import signal
import sys

import tornado.web

import handlers
import settings
import tornado_push
from tornado_push import App, Push


async def main(port: int) -> None:
    push = Push(apps=[App(id=settings.APP_ID, key=settings.APP_KEY, secret=settings.APP_SECRET)])
    await push.start()
    own = handlers.routes(push, settings.COOKIE_SECRET, site=settings.SITE_NAME)
    application = tornado.web.Application(own + push.routes())
    server = application.listen(port, address="127.0.0.1")
    print("handlers from", handlers.__file__, flush=True)
    print("settings from", settings.__file__, flush=True)
    print("tornado_push from", tornado_push.__file__, flush=True)
    print("host listening", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.stop()
    await push.close()


asyncio.run(main(int(sys.argv[1])))
'''


@pytest.fixture
def installed_python(tmp_path: Path) -> Path:
    """A fresh virtualenv's python with this checkout ``pip install``ed (not editable)."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)  # builds leave nothing in the checkout
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                          "-q", str(source)], capture_output=True, text=True, timeout=240)
    assert pip.returncode == 0, f"pip install failed:\n{pip.stdout}\n{pip.stderr}"
    return python


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """The host app's directory: app.py, its own handlers/ and settings.py."""
    host = tmp_path / "host"
    (host / "handlers").mkdir(parents=True)
    shutil.copy(TESTS / "host_handlers.py", host / "handlers" / "__init__.py")
    (host / "settings.py").write_text(textwrap.dedent(HOST_SETTINGS))
    (host / "app.py").write_text(textwrap.dedent(HOST_APP))
    return host


async def start_host(python: Path, host: Path, port: int) -> tuple[asyncio.subprocess.Process, list[str]]:
    """``python app.py PORT`` in the host's directory; its output lines up to "host listening"."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    process = await asyncio.create_subprocess_exec(
        str(python), "app.py", str(port), cwd=host, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    lines: list[str] = []
    while not lines or lines[-1] != "host listening":
        raw = await asyncio.wait_for(process.stdout.readline(), 20)
        assert raw, f"the host app exited ({await process.wait()}):\n" + "\n".join(lines)
        lines.append(raw.decode().rstrip("\n"))
    return process, lines


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer_token(COOKIE_SECRET, user)}"}


@pytest.mark.gen_test(timeout=60)
async def test_installed_package_embeds_in_a_host_app_with_its_own_handlers_and_settings(
        installed_python: Path, host_dir: Path, js: PusherJS) -> None:
    port = free_port()
    process, lines = await start_host(installed_python, host_dir, port)
    try:
        output = "\n".join(lines)
        assert f"handlers from {host_dir / 'handlers' / '__init__.py'}" in output
        assert f"settings from {host_dir / 'settings.py'}" in output
        assert "site-packages/tornado_push/__init__.py" in output, output
        alice = js.client("alice")
        await alice.connect("host-key", port, channelAuthorization={
            "endpoint": f"http://127.0.0.1:{port}/pusher/auth", "transport": "ajax",
            "headers": bearer("alice")})
        await alice.expect(type="connected")
        joined = await subscribed(alice, "presence-room")
        assert joined["data"]["me"] == {"id": "alice",
                                        "info": {"name": "Alice", "site": "Host Site"}}
        await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/say", method="POST", headers=bearer("bob"),
            body=urllib.parse.urlencode({"text": "hello from the host"}))
        await alice.expect(type="channel_event", channel="presence-room", event="message",
                           data={"from": "bob", "text": "hello from the host"})
    finally:
        if process.returncode is None:
            process.terminate()  # the PID started above
        await process.wait()
