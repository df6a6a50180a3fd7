"""The observer seam: what a live server tells ``hub.observers``, in order, and that a
failing observer costs nobody anything."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import DISABLED, MAIN, TINY, in_thread, until
from tornado_push.pubsub.observe import Observer


class Recorder(Observer):
    """Keeps what it is told as tuples of plain values."""

    def __init__(self) -> None:
        self.heard: list[tuple[Any, ...]] = []

    def connection_opened(self, session):
        self.heard.append(("opened", session.app.id, session.socket_id))

    def connection_refused(self, app, reason):
        self.heard.append(("refused", app.id if app else None, reason))

    def connection_closed(self, session, code):
        self.heard.append(("closed", session.socket_id, code))

    def subscribed(self, session, channel):
        self.heard.append(("subscribed", session.socket_id, channel))

    def subscription_refused(self, session, channel, status):
        self.heard.append(("subscription_refused", channel, status))

    def unsubscribed(self, session, channel):
        self.heard.append(("unsubscribed", session.socket_id, channel))

    def published(self, app, publication, source):
        self.heard.append(("published", app.id, publication.channel, publication.event, source))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [entry for entry in self.heard if entry[0] == kind]


class Broken(Observer):
    def connection_opened(self, session):
        raise RuntimeError("an observer's bug")

    def published(self, app, publication, source):
        raise RuntimeError("an observer's bug")


@pytest.fixture
def recorder(hub) -> Recorder:
    recorder = Recorder()
    hub.observers.add(Broken())  # first: the recorder must hear everything regardless
    hub.observers.add(recorder)
    return recorder


@pytest.mark.gen_test(timeout=20)
async def test_a_connection_is_told_from_open_to_close(raw, sdk, recorder):
    socket = await raw()
    sid = socket.socket_id
    assert recorder.of("opened") == [("opened", MAIN.id, sid)]

    await socket.send({"event": "pusher:subscribe", "data": {"channel": "news"}})
    await socket.expect("pusher_internal:subscription_succeeded")
    assert recorder.of("subscribed") == [("subscribed", sid, "news")]

    await in_thread(sdk.trigger, "news", "headline", {"n": 1})
    await socket.expect("headline")
    await in_thread(sdk.trigger_batch, [{"channel": "news", "name": "brief", "data": "{}"}])
    await socket.expect("brief")
    assert recorder.of("published") == [("published", MAIN.id, "news", "headline", "api"),
                                        ("published", MAIN.id, "news", "brief", "batch_api")]

    await socket.send({"event": "pusher:unsubscribe", "data": {"channel": "news"}})
    await socket.barrier()
    assert recorder.of("unsubscribed") == [("unsubscribed", sid, "news")]

    await socket.send({"event": "pusher:subscribe",
                       "data": {"channel": "private-x", "auth": "app-key:forged"}})
    await socket.expect("pusher:subscription_error")
    assert recorder.of("subscription_refused") == [("subscription_refused", "private-x", 401)]

    socket.connection.close(1000)
    await until(lambda: recorder.of("closed"))
    assert recorder.of("closed") == [("closed", sid, 1000)]


@pytest.mark.gen_test(timeout=20)
async def test_refusals_name_their_reason_and_never_count_as_connections(raw, recorder):
    for key, query in (("no-such-key", "?protocol=7"), (MAIN.key, ""),
                       (MAIN.key, "?protocol=5"), (DISABLED.key, "?protocol=7")):
        socket = await raw(key=key, query=query, established=False)
        error = await socket.expect("pusher:error")
        assert error["data"]["code"] >= 4000
        await socket.closed()
    assert recorder.of("refused") == [("refused", None, "unknown_app"),
                                      ("refused", MAIN.id, "no_protocol"),
                                      ("refused", MAIN.id, "unsupported_protocol"),
                                      ("refused", DISABLED.id, "app_disabled")]
    assert not recorder.of("opened") and not recorder.of("closed")


@pytest.mark.gen_test(timeout=20)
async def test_a_server_close_is_told_with_its_code_once(raw, recorder):
    sockets = [await raw(key=TINY.key) for _ in range(TINY.max_connections)]
    over = await raw(key=TINY.key, established=False)
    error = await over.expect("pusher:error")
    assert error["data"]["code"] == 4004
    assert await over.closed() == 4004
    assert recorder.of("refused") == [("refused", TINY.id, "over_quota")]

    await sockets[0].send(json.dumps({"event": "pusher:signin",
                                      "data": {"user_data": "{}", "auth": "forged"}}))
    assert await sockets[0].closed() == 4009
    await until(lambda: recorder.of("closed"))
    assert recorder.of("closed") == [("closed", sockets[0].socket_id, 4009)]
