"""HTTP statuses at the limits: 413 over the body limit, 400 for text the server refuses,
503 once the engine has closed, each with a JSON error body and no traceback."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import MAIN
from test_http_front import client, publish, serve, tornado_port  # noqa: F401  (fixtures)
from tornado_push.handlers.front import PushHTTPServer

LIMIT = 1000
EVENTS = f"/apps/{MAIN.id}/events"


@pytest.fixture
def limited_port(app, serve):  # noqa: F811
    """The application behind the front, as server.py serves it with PUSH_MAX_BODY_BYTES=1000."""
    return serve(PushHTTPServer(app, max_body_size=LIMIT))


def no_errors_logged(caplog) -> None:
    """No traceback, no error but the access line Tornado writes at ERROR for any 5xx."""
    errors = [r for r in caplog.records if r.exc_info or (
        r.levelno >= logging.ERROR and r.name != "tornado.access")]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("first", [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"],
                         ids=["a new connection", "after a GET"])
async def test_a_declared_body_over_the_limit_is_answered_413_before_it_is_sent(
        client, limited_port, caplog, first):  # noqa: F811
    """Whether the front or Tornado serves the connection (one that began with a GET is
    Tornado's): the same 413, not Tornado's bare 400."""
    http = await client(limited_port)
    if first:
        await http.send(first)
        assert (await http.answer()).status == 200
    await http.send(f"POST {EVENTS}?auth_key={MAIN.key} HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Length: {10 * 1024 ** 3}\r\n\r\n".encode())
    answer = await http.answer()
    assert answer.status == 413
    assert f"over {LIMIT} bytes" in answer.json()["error"]
    assert ("Connection", "close") in answer.headers
    assert await http.closed()
    no_errors_logged(caplog)


@pytest.mark.gen_test(timeout=20)
async def test_a_body_over_the_limit_is_answered_413_and_one_within_it_is_published(
        client, limited_port):  # noqa: F811
    http = await client(limited_port)
    await http.send(publish(payload={"name": "e", "channel": "news", "data": "x" * LIMIT}))
    answer = await http.answer()
    assert answer.status == 413 and "error" in answer.json()
    other = await client(limited_port)
    await other.send(publish(payload={"name": "e", "channel": "news", "data": "x" * 100}))
    assert (await other.answer()).status == 200


BAD_TEXT = {
    "lone surrogate in data": b'{"name":"e","channel":"news","data":"x\\ud800"}',
    "lone surrogate in name": b'{"name":"\\udfffe","channel":"news","data":"{}"}',
    "lone surrogate in a key": b'{"name":"e","channel":"news","data":"{}","\\ud800":1}',
    "raw surrogate bytes": b'{"name":"e","channel":"news","data":"x\xed\xa0\x80"}',
    "nested 100,000 deep": b'{"name":"e","channel":"news","data":"{}","x":'
                           + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested 65 deep": b'{"name":"e","channel":"news","data":"{}","x":'
                      + b"[" * 64 + b"]" * 64 + b"}",
}


@pytest.mark.parametrize("case", BAD_TEXT)
@pytest.mark.parametrize("path", ["front", "tornado"])
@pytest.mark.gen_test(timeout=20)
async def test_bodies_with_invalid_text_or_nesting_are_refused_400(
        client, tornado_port, caplog, case, path):  # noqa: F811
    http = await (client() if path == "front" else client(tornado_port))
    await http.send(publish(payload=BAD_TEXT[case]))
    answer = await http.answer()
    assert answer.status == 400, answer.body
    assert answer.json()["error"].startswith("Body is not valid JSON")
    no_errors_logged(caplog)


@pytest.mark.gen_test(timeout=20)
async def test_nesting_within_the_bound_is_published(client):  # noqa: F811
    http = await client()
    data = json.dumps({"x": [[[[[1]]]]]})
    await http.send(publish(payload={"name": "e", "channel": "news", "data": data,
                                     "y": [[[[[[[[[["ok"]]]]]]]]]]}))
    assert (await http.answer()).status == 200


@pytest.mark.parametrize("path", ["front", "tornado"])
@pytest.mark.gen_test(timeout=20)
async def test_a_publish_on_a_kept_connection_after_the_engine_closed_is_answered_503(
        client, tornado_port, hub, caplog, path):  # noqa: F811
    http = await (client() if path == "front" else client(tornado_port))
    await http.send(publish())
    assert (await http.answer()).status == 200
    await hub.close()  # as a drain does, while keep-alive connections are still open
    await http.send(publish())
    answer = await http.answer()
    assert answer.status == 503
    assert "shutting down" in answer.json()["error"]
    no_errors_logged(caplog)
