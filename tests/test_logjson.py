"""JSON-lines logs (pubsub/logjson.py): the formatter, its context, and a live server
whose log holds no secret and no signature, whatever a client sends."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import sys

import pytest
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient

from redis_server import free_port
from server_processes import ServerProcess
from test_http_api import signed_query
from tornado_push.pubsub import logjson
from tornado_push.pubsub.apps import App
from tornado_push.pubsub.signing import sign

#: The live server's app, with a secret no line may show.
APP = App(id="7", key="json-log-key", secret="s3cret-that-must-never-be-logged")
#: Someone signing with the wrong secret: their signatures must not be shown either.
WRONG = App(id=APP.id, key=APP.key, secret="a-wrong-secret")


def record(message: str = "hello %s", args: tuple = ("world",), exc_info=None,
           **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("tornado_push.test", logging.WARNING, __file__, 1, message,
                             args, exc_info)
    made.__dict__.update(extra)
    return made


def formatted(made: logging.LogRecord) -> dict:
    line = logjson.JsonFormatter().format(made)
    assert "\n" not in line and line.isascii(), line
    return json.loads(line)


# -- the formatter ----------------------------------------------------------------------

def test_a_record_is_one_json_object_with_time_level_logger_message():
    line = formatted(record())
    assert set(line) == {"time", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING", "tornado_push.test", "hello world")
    when = datetime.datetime.fromisoformat(line["time"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs(when.timestamp() - record().created) < 5


def test_the_fields_named_in_the_context_and_by_the_record_are_added_then_undone():
    outer = logjson.about(app="1", socket_id="3.14")
    try:
        inner = logjson.about(channel="private-a")
        line = formatted(record())
        assert (line["app"], line["socket_id"], line["channel"]) == ("1", "3.14", "private-a")
        unknown = logjson.about(channel=None)
        assert "channel" not in formatted(record())
        logjson.restore(unknown)
        assert formatted(record(channel="presence-b"))["channel"] == "presence-b"  # extra=
        logjson.restore(inner)
        assert "channel" not in formatted(record())
    finally:
        logjson.restore(outer)
    assert set(formatted(record())) == {"time", "level", "logger", "message"}


def test_a_traceback_and_odd_text_stay_on_one_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        made = record("bad \u2028 byte \udcff and \x00", (), exc_info=sys.exc_info())
    line = formatted(made)
    assert line["message"] == "bad \u2028 byte \udcff and \x00"
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]


@pytest.mark.gen_test
async def test_concurrent_tasks_log_their_own_context():
    handler = Lines()
    logger = logging.getLogger("test_logjson.tasks")
    logger.addHandler(handler)
    logger.propagate = False
    ready = asyncio.Event()

    async def session(socket_id: str) -> None:
        about = logjson.about(app="1", socket_id=socket_id)
        try:
            await ready.wait()  # both have set theirs before either logs
            logger.warning("from %s", socket_id)
        finally:
            logjson.restore(about)

    try:
        tasks = [asyncio.ensure_future(session(f"1.{n}")) for n in range(2)]
        await asyncio.sleep(0)
        ready.set()
        await asyncio.gather(*tasks)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in handler.lines]
    assert sorted((line["socket_id"], line["message"]) for line in lines) == [
        ("1.0", "from 1.0"), ("1.1", "from 1.1")]


@pytest.mark.gen_test
async def test_a_task_started_meanwhile_logs_none_of_its_parents_fields():
    """A webhook sender or reconnect loop started while a session handled a message
    copies the context, but what it logs later is about no client."""
    handler = Lines()
    logger = logging.getLogger("test_logjson.children")
    logger.addHandler(handler)
    logger.propagate = False

    async def background() -> None:
        logger.warning("child, before naming")
        logjson.about(app="2")
        logger.warning("child, named")

    try:
        about = logjson.about(app="1", socket_id="1.1")
        try:
            child = asyncio.ensure_future(background())
            logger.warning("parent")
        finally:
            logjson.restore(about)
        await child
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in handler.lines]
    assert [(line["message"], line.get("app"), line.get("socket_id")) for line in lines] == [
        ("parent", "1", "1.1"), ("child, before naming", None, None), ("child, named", "2", None)]


class Lines(logging.Handler):
    """Every record, formatted by :func:`logjson.install` (JSON lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        logjson.install([self], json_lines=True)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_signatures_in_a_query_string_are_redacted_in_either_format():
    query = "auth_key=k&auth_signature=0123abcd&body_md5=99&Auth_Signature=4567ef"
    for json_lines in (False, True):
        handler = logging.StreamHandler()
        logjson.install([handler], json_lines=json_lines)
        made = record("%d %s %s", (401, "POST", f"/apps/1/events?{query}"))
        assert handler.filter(made)
        text = handler.format(made)
        assert "0123abcd" not in text and "4567ef" not in text, text
        assert "auth_key=k&auth_signature=[redacted]&body_md5=99&Auth_Signature=[redacted]" \
            in text, text


# -- a live server ------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.gen_test(timeout=60)
async def test_a_live_server_logs_no_secret_and_no_signature(log_format):
    """A publish and a channel query signed with the wrong secret (the fast path and
    Tornado's), a correctly signed publish, and a subscription with a forged auth:
    every line is JSON naming its app (and socket or channel) where it is about one,
    and no line shows the secret or any of the signatures sent."""
    server = await ServerProcess(free_port(), {
        "PUSH_LOG_FORMAT": log_format, "PUSH_LOG_LEVEL": "INFO", "PUSH_APP_ID": APP.id,
        "PUSH_APP_KEY": APP.key, "PUSH_APP_SECRET": APP.secret,
        "PUSH_WEBHOOK_BATCH_SECONDS": "0.05",
        "PUSH_APP_WEBHOOKS": f"http://127.0.0.1:{free_port()}/nobody-listens"}).start()
    base = f"http://127.0.0.1:{server.port}"
    signatures = []
    try:
        http = AsyncHTTPClient()
        body = json.dumps({"name": "greet", "channels": ["news"], "data": "{}"}).encode()
        for app, method, path, payload in (
                (WRONG, "POST", f"/apps/{APP.id}/events", body),
                (WRONG, "GET", f"/apps/{APP.id}/channels/presence-room", b""),
                (APP, "POST", f"/apps/{APP.id}/events", body)):
            query = signed_query(app, method, path, payload)
            signatures.append(query.split("auth_signature=")[1].split("&")[0])
            response = await http.fetch(f"{base}{path}?{query}", method=method,
                                        body=payload or None, raise_error=False)
            assert response.code == (200 if app is APP else 401), response.body

        socket = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{server.port}/app/{APP.key}?protocol=7")
        established = json.loads(await asyncio.wait_for(socket.read_message(), 10))
        socket_id = json.loads(established["data"])["socket_id"]
        forged = sign(WRONG.secret, f"{socket_id}:private-orders")
        signatures.append(forged)
        mark = server.mark()
        # A public channel: occupied, so a webhook is sent (and fails) from its own task.
        await socket.write_message(json.dumps({"event": "pusher:subscribe",
                                               "data": {"channel": "news"}}))
        await socket.write_message(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": "private-orders", "auth": f"{APP.key}:{forged}"}}))
        answers = [json.loads(await asyncio.wait_for(socket.read_message(), 10))
                   for _ in range(2)]
        assert [(a["event"], a["channel"]) for a in answers] == [
            ("pusher_internal:subscription_succeeded", "news"),
            ("pusher:subscription_error", "private-orders")], answers
        await server.wait_for_log("subscription refused", after=mark)
        await server.wait_for_log("webhook to", after=mark)
        socket.close()
    finally:
        assert await server.terminate() == 0, server.log  # every line is read once it exited

    for secret in [APP.secret, WRONG.secret, *signatures]:
        assert secret not in server.log, (secret, server.log)
    assert server.log.count("auth_signature=[redacted]") == 3, server.log  # one access line each
    if log_format == "text":
        return
    lines = [json.loads(line) for line in server.lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines), lines
    (subscription,) = [line for line in lines if "subscription refused" in line["message"]]
    assert (subscription["app"], subscription["socket_id"], subscription["channel"]) == (
        APP.id, socket_id, "private-orders")
    refusals = [line for line in lines if line["message"].endswith(
        "refused: Invalid signature: check the app secret and the signed path")]
    assert [(line["app"], line.get("channel")) for line in refusals] == [
        (APP.id, None), (APP.id, "presence-room")], refusals
    # Logged by the webhook sender, started while the session subscribed: about no socket.
    (webhook, *_) = [line for line in lines if "webhook to" in line["message"]]
    assert "socket_id" not in webhook, webhook
    access = [line for line in lines
              if line["logger"] == "tornado.access" and "/apps/" in line["message"]]
    assert [(line["message"].split()[0], line["app"]) for line in access] == [
        ("401", APP.id), ("401", APP.id), ("200", APP.id)], access
