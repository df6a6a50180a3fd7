"""Live app reload: ``python server.py`` gets SIGHUP and serves the apps file as it is now.

Real pusher-js clients on several apps while one of them receives a steady numbered
stream of SDK publishes: the untouched app drops nothing and nobody reconnects; a new
app is served; a changed app's new secret signs new requests while its open connection
stays; a removed app's connections get 4001 and a disabled app's 4003; a file that does
not validate changes nothing and the log says why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pusher.errors
import pytest

from app_server import sdk_client
from conftest import in_thread, until
from pusherjs import JSClient, PusherJS
from test_pusherjs_client_events import error_codes
from tornado_push.embed import Push
from tornado_push.pubsub.apps import App, AppChanges

pytest_plugins = ["server_processes"]

UNTOUCHED = App(id="10", key="untouched-key", secret="untouched-secret")
CHANGED = App(id="11", key="changed-key", secret="old-secret")
REMOVED = App(id="13", key="removed-key", secret="removed-secret")
DISABLED = App(id="14", key="disabled-key", secret="disabled-secret")
ADDED = App(id="12", key="added-key", secret="added-secret")
#: Publishes to the untouched app, spanning the reload.
STREAM = 60


def write_apps(path: Path, *apps: App | dict) -> None:
    entries = [{"id": app.id, "key": app.key, "secret": app.secret} if isinstance(app, App)
               else app for app in apps]
    path.write_text(json.dumps(entries))


async def connected(js: PusherJS, app: App, port: int, channel: str = "ticks") -> JSClient:
    client = js.client(app.id)
    await client.connect(app.key, port)
    await client.expect(type="connected", timeout=10)
    await client.subscribe(channel)
    await client.expect(type="channel_event", channel=channel,
                        event="pusher:subscription_succeeded", timeout=10)
    return client


@pytest.mark.gen_test(timeout=90)
async def test_sighup_reloads_the_apps_file_and_the_untouched_app_drops_nothing(
        tmp_path, redis_server, server_processes, js: PusherJS) -> None:
    apps_file = tmp_path / "apps.json"
    write_apps(apps_file, UNTOUCHED, CHANGED, REMOVED, DISABLED)
    [server] = await server_processes(1, PUSH_DEFAULT_APP="false", PUSH_APPS_FILE=str(apps_file),
                                        PUSH_REDIS_URL=redis_server.url)
    port = server.port
    untouched = await connected(js, UNTOUCHED, port)
    changed = await connected(js, CHANGED, port)
    removed = await connected(js, REMOVED, port)
    disabled = await connected(js, DISABLED, port)

    async def stream() -> None:  # the untouched app's traffic, before, during and after
        sdk = sdk_client(UNTOUCHED, port)
        for number in range(STREAM):
            await in_thread(sdk.trigger, "ticks", "tick", {"n": number})

    publishing = asyncio.ensure_future(stream())
    await untouched.expect(type="channel_event", event="tick", timeout=10)  # under way
    write_apps(apps_file, UNTOUCHED, {"id": "11", "key": "changed-key", "secret": "new-secret"},
               ADDED, {"id": "14", "key": "disabled-key", "secret": "disabled-secret",
                       "enabled": False})
    mark = server.mark()
    os.kill(server.pid, signal.SIGHUP)
    await server.wait_for_log("apps reloaded: 12 added, 11, 14 changed, 13 removed", after=mark)
    await publishing

    assert await until(lambda: 4001 in error_codes(removed))
    assert await until(lambda: 4003 in error_codes(disabled))
    await until(lambda: len(untouched.seen(type="channel_event", event="tick")) >= STREAM)
    received = [event["data"]["n"] for event in untouched.seen(type="channel_event", event="tick")]
    assert received == list(range(STREAM))  # nothing dropped, nothing twice, in order
    for client in (untouched, changed):
        assert len(client.seen(type="connected")) == 1 and error_codes(client) == []
    # The changed app: its new secret signs, the old one no longer does; the connection
    # admitted before the reload still receives.
    with pytest.raises(pusher.errors.PusherBadAuth):
        await in_thread(sdk_client(CHANGED, port).trigger, "ticks", "late", {})
    await in_thread(sdk_client(CHANGED, port, secret="new-secret").trigger, "ticks", "late", {})
    await changed.expect(type="channel_event", event="late", timeout=10)
    await connected(js, ADDED, port)  # the new app is served


@pytest.mark.gen_test(timeout=60)
async def test_a_file_that_does_not_validate_changes_nothing_and_says_why(
        tmp_path, redis_server, server_processes, js: PusherJS) -> None:
    apps_file = tmp_path / "apps.json"
    write_apps(apps_file, UNTOUCHED)
    [server] = await server_processes(1, PUSH_DEFAULT_APP="false", PUSH_APPS_FILE=str(apps_file),
                                        PUSH_REDIS_URL=redis_server.url)
    client = await connected(js, UNTOUCHED, server.port)
    for broken in ("[{not json", json.dumps([{"id": "10", "key": "untouched-key"}]),
                   json.dumps([UNTOUCHED.__class__.__name__])):
        apps_file.write_text(broken)
        mark = server.mark()
        os.kill(server.pid, signal.SIGHUP)
        await server.wait_for_log("apps not reloaded, the running ones stay as they were: "
                                  "PUSH_APPS_FILE", after=mark)
    await in_thread(sdk_client(UNTOUCHED, server.port).trigger, "ticks", "still", {})
    await client.expect(type="channel_event", event="still", timeout=10)
    assert len(client.seen(type="connected")) == 1
    assert not any("Traceback" in line for line in server.lines)


def test_embedding_api_reload_refuses_duplicates_and_then_changes_nothing() -> None:
    push = Push(apps=[UNTOUCHED, CHANGED])
    with pytest.raises(ValueError, match="duplicate app key"):
        push.reload_apps([UNTOUCHED, App(id="15", key=UNTOUCHED.key, secret="other")])
    with pytest.raises(ValueError, match="at least one app"):
        push.reload_apps([])
    assert list(push.hub.apps) == [UNTOUCHED, CHANGED] and push.settings.apps == (UNTOUCHED, CHANGED)
    changes = push.reload_apps([UNTOUCHED, ADDED])
    assert changes == AppChanges(added=(ADDED,), removed=(CHANGED,))
    assert push.app("12") == ADDED and push.hub.apps.by_key(CHANGED.key) is None
