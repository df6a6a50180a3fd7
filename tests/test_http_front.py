"""The HTTP front (handlers/front.py): publishes answered before Tornado, the rest handed over.

Every request here goes over a real socket to the test server, which serves
as server.py does. The front must answer exactly what Tornado's handlers
answer, and hand Tornado every byte it does not answer, in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.testing
import tornado.web

from conftest import DISABLED, MAIN, subscribed
from tornado_push.pubsub.apps import App
from test_http_api import signed_query
from tornado_push import Push
from tornado_push.handlers import api
from tornado_push.handlers import front as front_module
from tornado_push.handlers.front import PushHTTPServer
from tornado_push.pubsub import logjson
from tornado_push.pubsub.errors import BrokerUnavailable


def publish(path: str = f"/apps/{MAIN.id}/events", payload: Any = None, *,
            app=MAIN, version: str = "HTTP/1.1", headers: str = "", **signing: Any) -> bytes:
    """The bytes of a signed POST, as the SDKs send it."""
    if payload is None:
        payload = {"name": "headline", "channel": "news", "data": "{}"}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    query = signed_query(app, "POST", path, body, **signing)
    return (f"POST {path}?{query} {version}\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n").encode() + body


def get(path: str, app=MAIN, **params: str) -> bytes:
    query = signed_query(app, "GET", path, b"", **params)
    return f"GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


async def received(subscriber, event: str) -> Any:
    """The data of the next ``event`` pusher-js gave ``subscriber``."""
    return (await subscriber.expect(type="channel_event", event=event))["data"]


class Answer:
    """One HTTP answer as it came off the wire."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(self.status_line.split()[1])
        self.headers = [tuple(line.split(": ", 1)) for line in lines if line]
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def comparable(self) -> tuple:
        """Everything but the Date header's value."""
        return (self.status_line, [(name, "" if name == "Date" else value)
                                   for name, value in self.headers], self.body)


class Client:
    """A raw HTTP/1.1 client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 5.0) -> Answer:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = re.search(rb"\r\nContent-Length: (\d+)", head, re.IGNORECASE)
        body = await asyncio.wait_for(
            self.reader.readexactly(int(length.group(1)) if length else 0), timeout)
        return Answer(head[:-4], body)

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (after any answer bytes),
        or reset it (closed with a request still unread)."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def client(server_port: int):
    clients: list[Client] = []

    async def open_client(port: int = server_port) -> Client:
        clients.append(await Client.connect(port))
        return clients[-1]

    yield open_client
    for opened in clients:
        opened.close()


@pytest.fixture
def serve(io_loop):
    """``serve(server)``: listen on a free loopback port (or on ``sockets``); the port.
    Each server stops, with every connection closed, when the test ends."""
    servers = []

    def listen(server: tornado.httpserver.HTTPServer, sockets: list | None = None) -> int:
        if sockets is None:
            listener, port = tornado.testing.bind_unused_port()
            sockets = [listener]
        server.add_sockets(sockets)
        servers.append(server)
        return sockets[0].getsockname()[1] if sockets[0].family != socket.AF_UNIX else 0

    yield listen
    for server in servers:
        server.stop()
        io_loop.run_sync(server.close_all_connections)


async def stop(server: tornado.httpserver.HTTPServer) -> None:
    """Stop accepting and close every connection, as a drain does."""
    server.stop()
    await server.close_all_connections()


@pytest.fixture
def tornado_port(app, serve):
    """The same application behind Tornado's own HTTPServer, without the front."""
    return serve(tornado.httpserver.HTTPServer(app))


@pytest.fixture
def fronts_made(monkeypatch) -> list:
    """Every FrontConnection started from here on."""
    made = []
    start = front_module.FrontConnection.start

    def recorded(front) -> None:
        made.append(front)
        start(front)
    monkeypatch.setattr(front_module.FrontConnection, "start", recorded)
    return made


@pytest.fixture
def tornado_handlers_fail(monkeypatch):
    """Tornado's API handlers fail from here on: what still succeeds never reached them."""
    def refuse(handler: api.ApiHandler) -> None:
        raise RuntimeError("reached Tornado's RequestHandler")
    monkeypatch.setattr(api.ApiHandler, "prepare", refuse)


SAME_AS_TORNADO = {
    "event": publish(),
    "batch": publish(f"/apps/{MAIN.id}/batch_events",
                     {"batch": [{"name": "a", "channel": "news", "data": "1"},
                                {"name": "b", "channel": "sport", "data": "2"}]}),
    "info": publish(payload={"name": "e", "channels": ["news"], "data": "x",
                             "info": "subscription_count"}),
    "closing": publish(headers="Connection: close\r\n"),
    "forged": publish(app=App(id=MAIN.id, key=MAIN.key, secret="forged")),
    "stale": publish(timestamp=1),
    "unknown app": publish("/apps/nope/events"),
    "disabled app": publish(f"/apps/{DISABLED.id}/events", app=DISABLED),
    "not json": publish(payload=b"{nope"),
    "too many channels": publish(payload={"name": "e", "data": "x",
                                          "channels": [f"c{i}" for i in range(101)]}),
    "data over 10 KB": publish(payload={"name": "e", "channel": "news", "data": "x" * 10241}),
}


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("case", SAME_AS_TORNADO)
async def test_front_answers_byte_for_byte_what_tornado_answers(client, tornado_port, case):
    front, plain = await client(), await client(tornado_port)
    await front.send(SAME_AS_TORNADO[case])
    await plain.send(SAME_AS_TORNADO[case])
    answers = await front.answer(), await plain.answer()
    assert answers[0].comparable() == answers[1].comparable()
    if case == "closing":
        assert await front.closed()


@pytest.mark.gen_test(timeout=30)
async def test_answers_of_every_kind_in_turn_on_one_connection_are_each_tornados(
        client, tornado_port):
    """The front reuses the bytes of an answer just made: each answer must still be its own,
    whatever came before it (every kind follows every other)."""
    kinds = [case for case in SAME_AS_TORNADO if case != "closing"]
    front, plain = await client(), await client(tornado_port)
    for case in [case for first in kinds for second in kinds for case in (first, second)]:
        await front.send(SAME_AS_TORNADO[case])
        await plain.send(SAME_AS_TORNADO[case])
        answers = await front.answer(), await plain.answer()
        assert answers[0].comparable() == answers[1].comparable(), case


def test_publish_paths_are_matched_the_same_however_many_were_seen():
    """Endpoints are remembered per path, a bounded number of them."""
    endpoints = front_module.PublishEndpoints({"": (None, None), "/push": (None, None)})
    paths = [f"{prefix}/apps/{app_id}/{kind}" for app_id in range(300)
             for prefix in ("", "/push") for kind in ("events", "batch_events")]
    for _ in range(2):
        for path in paths:
            endpoint = endpoints.match(path)
            assert endpoint.signed_path == path.removeprefix("/push")
            assert endpoint.app_id == path.split("/")[-2]
            assert endpoint.name == path.split("/")[-1]
        assert len(endpoints._matched) <= front_module._MATCHED_PATHS
    assert endpoints.match("/apps/1/channels") is None
    assert endpoints.match("/other/apps/1/events") is None


@pytest.mark.gen_test(timeout=30)
async def test_publishes_are_answered_without_tornados_handlers(client, connect, tornado_handlers_fail):
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    http = await client()
    await http.send(publish(payload={"name": "headline", "channel": "news", "data": "fast"}))
    assert (await http.answer()).status == 200
    assert await received(subscriber, "headline") == "fast"
    await http.send(get(f"/apps/{MAIN.id}/channels"))  # Tornado's, so it fails now
    assert (await http.answer()).status == 500


@pytest.mark.gen_test(timeout=30)
async def test_other_requests_on_a_publishing_connection_go_to_tornado_in_order(client, connect):
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    http = await client()
    steps = [publish(payload={"name": "e", "channel": "news", "data": "one"}),
             get(f"/apps/{MAIN.id}/channels"),
             publish(payload={"name": "e", "channel": "news", "data": "two"})]
    for step in steps:
        await http.send(step)
    answers = [await http.answer() for _ in steps]
    assert [answer.status for answer in answers] == [200, 200, 200]
    assert answers[1].json() == {"channels": {"news": {}}}
    assert [await received(subscriber, "e") for _ in range(2)] == ["one", "two"]


@pytest.mark.gen_test(timeout=30)
async def test_pipelined_requests_past_tornados_read_chunk_are_all_answered_in_order(client, connect):
    # The hand-off gives Tornado over 64 KiB (its read chunk) already read:
    # a WebSocket handshake's worth would be nothing, this must all arrive too.
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    data = ["%02d" % n + "x" * 9000 for n in range(12)]
    requests = [publish(payload={"name": "e", "channel": "news", "data": data[0]}),
                get("/health")]
    requests += [publish(payload={"name": "e", "channel": "news", "data": d}) for d in data[1:]]
    http = await client()
    await http.send(b"".join(requests))
    answers = [await http.answer() for _ in requests]
    assert [answer.status for answer in answers] == [200] * len(requests)
    assert answers[1].json()["status"] == "ok"
    assert [await received(subscriber, "e") for _ in data] == data


@pytest.mark.gen_test(timeout=30)
async def test_a_closing_answer_comes_after_the_answers_queued_before_it(client, connect):
    """Keep-alive answers are written once per loop iteration (with every connection's),
    a closing one at once: pipelined, they still arrive in order, and nothing is answered
    after the closing one."""
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    requests = [publish(payload={"name": "e", "channel": "news", "data": f"n{n}"}) for n in range(3)]
    requests += [publish(payload={"name": "e", "channel": "news", "data": "last"},
                         headers="Connection: close\r\n"),
                 publish(payload={"name": "e", "channel": "news", "data": "unanswered"})]
    http = await client()
    await http.send(b"".join(requests))
    answers = [await http.answer() for _ in range(4)]
    assert [answer.status for answer in answers] == [200] * 4
    assert ("Connection", "close") in answers[3].headers
    assert await http.closed()
    assert [await received(subscriber, "e") for _ in range(4)] == ["n0", "n1", "n2", "last"]


class JsonLines(logging.Handler):
    """The front's log lines as JSON objects, formatted when logged, in the caller's context."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(logjson.JsonFormatter().format(record)))


@pytest.fixture
def front_lines():
    logger, handler = logging.getLogger(front_module.__name__), JsonLines()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # refusals are logged at INFO
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.gen_test(timeout=30)
async def test_refusals_name_their_app_whether_or_not_the_engine_waited(
        client, hub, monkeypatch, front_lines):
    """A publish runs within the front's callback unless the engine waits (Redis); its
    lines name its app either way, and no request's app stays for the next one."""
    async def waits_then_fails(publication) -> None:
        await asyncio.sleep(0.01)
        raise BrokerUnavailable("the broker is down (test)")

    http = await client()
    await http.send(publish(payload=b"{nope"))  # refused before any wait
    assert (await http.answer()).status == 400
    monkeypatch.setattr(hub._broker, "publish", waits_then_fails)
    await http.send(publish())  # refused after a wait, in a task
    assert (await http.answer()).status == 503
    await http.send(publish("/apps/nope/events"))  # no app: its line names none
    assert (await http.answer()).status == 404
    refused = [line for line in front_lines if "refused" in line["message"]]
    assert [(line.get("app"), line["message"].rsplit(": ", 1)[-1]) for line in refused] == [
        (MAIN.id, "Invalid JSON"), (MAIN.id, "the broker is down (test)"),
        (None, "Unknown app 'nope'")]


@pytest.mark.gen_test(timeout=30)
async def test_a_publish_arriving_in_pieces_is_answered_once(client, connect):
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    raw = publish(payload={"name": "e", "channel": "news", "data": "pieces"})
    http = await client()
    head_end = raw.index(b"\r\n\r\n")
    for piece in (raw[:3], raw[3:40], raw[40:head_end + 2], raw[head_end + 2:-5], raw[-5:]):
        await http.send(piece)
        await asyncio.sleep(0.02)  # separate reads on the server: spacing, not synchronisation
    assert (await http.answer()).status == 200
    assert await received(subscriber, "e") == "pieces"
    await http.send(publish())
    assert (await http.answer()).status == 200


CARRIED_BY_TORNADO = {
    "chunked": (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\n\r\n"),
    "HTTP/1.0": b"POST %s HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s",
}


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("case", CARRIED_BY_TORNADO)
async def test_publishes_the_front_does_not_take_are_answered_by_tornado(client, connect, case):
    subscriber = await connect("a")
    await subscribed(subscriber, "news")
    path = f"/apps/{MAIN.id}/events"
    body = json.dumps({"name": "e", "channel": "news", "data": case}).encode()
    target = f"{path}?{signed_query(MAIN, 'POST', path, body)}".encode()
    http = await client()
    await http.send(CARRIED_BY_TORNADO[case] % (target, len(body), body))
    assert (await http.answer()).status == 200
    assert await received(subscriber, "e") == case


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("request_bytes", [
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\nContent-Length: 2\r\n\r\n{}",
    b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    # (A declared length over the limit is answered 413: tests/test_http_limits.py.)
    b"POST /apps/1/events HTTP/1.1\r\n" + b"X-Long: " + b"a" * 70000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
])
async def test_malformed_requests_get_tornados_refusal_and_others_carry_on(client, tornado_port,
                                                                           request_bytes):
    outcomes = []
    for port in (None, tornado_port):
        http = await (client() if port is None else client(port))
        await http.send(request_bytes)
        try:
            outcomes.append((await http.answer()).status_line)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            outcomes.append("closed")
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == "closed" or outcomes[0].split()[1].startswith("4")
    other = await client()
    await other.send(publish())
    assert (await other.answer()).status == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_never_reads_answers_is_bounded_and_delays_no_one(client, http_server,
                                                                               server_port):
    flood = socket.create_connection(("127.0.0.1", server_port))
    flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood.setblocking(False)
    request = publish()
    flood.send(request)
    while not http_server._fronts or next(iter(http_server._fronts))._transport is None:
        await asyncio.sleep(0.001)  # until the server has accepted it and is reading
    (front,) = http_server._fronts
    for _ in range(100_000):  # bounded: the server stops reading long before
        try:
            flood.send(request)
        except BlockingIOError:
            await asyncio.sleep(0.001)  # the server's turn to read
        if not front._transport.is_reading():
            break
    else:
        pytest.fail("the server kept reading from a client that takes no answers")
    assert front._transport.get_write_buffer_size() <= 64 * 1024 + 1024
    assert len(front._buffer) <= 64 * 1024 + 256 * 1024  # the read-ahead, and one read
    other = await client()
    await other.send(publish())
    assert (await other.answer()).status == 200
    flood.close()


@pytest.mark.gen_test(timeout=30)
async def test_idle_connections_are_closed_after_the_idle_timeout(app, client, serve):
    port = serve(PushHTTPServer(app, idle_connection_timeout=0.3))
    silent, served = await client(port), await client(port)
    await served.send(publish())
    assert (await served.answer()).status == 200
    assert await silent.closed() and await served.closed()


@pytest.mark.gen_test(timeout=30)
async def test_closing_all_connections_closes_the_fronts_and_the_silent(app, client, serve):
    server = PushHTTPServer(app)
    port = serve(server)
    http, silent = await client(port), await client(port)
    await http.send(publish())
    assert (await http.answer()).status == 200
    await stop(server)
    assert await http.closed() and await silent.closed()


@pytest.mark.gen_test(timeout=30)
async def test_websockets_and_pages_never_meet_the_front(raw, client, fronts_made):
    await raw()
    page = await client()
    await page.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await page.answer()).status == 200
    assert fronts_made == []
    await page.send(publish())  # Tornado's connection now: Tornado answers it
    assert (await page.answer()).status == 200
    assert fronts_made == []


@pytest.mark.gen_test(timeout=30)
async def test_a_connection_that_sends_po_then_waits_is_still_fronted(client, fronts_made):
    raw = publish()
    http = await client()
    await http.send(raw[:2])
    while not fronts_made:  # until the server has looked at "PO"
        await asyncio.sleep(0.001)
    await http.send(raw[2:])
    assert (await http.answer()).status == 200
    assert len(fronts_made) == 1


@pytest.mark.gen_test(timeout=30)
async def test_each_mounted_push_is_served_under_its_prefix_with_its_own_engine(
        client, serve, tornado_handlers_fail):
    standard, prefixed = Push(apps=[MAIN]), Push(apps=[App(id="7", key="k7", secret="s7")])
    for push in (standard, prefixed):
        await push.start()
    application = tornado.web.Application(standard.routes() + prefixed.routes("/push"))
    port = serve(PushHTTPServer(application))
    try:
        http = await client(port)
        await http.send(publish())
        assert (await http.answer()).status == 200
        other = prefixed.app("7")
        signed = publish(f"/apps/{other.id}/events", app=other).replace(
            b"POST /apps/", b"POST /push/apps/", 1)
        await http.send(signed)
        assert (await http.answer()).status == 200
        # Not mounted there: Tornado's 404, as before the front.
        await http.send(publish().replace(b"POST /apps/", b"POST /elsewhere/apps/", 1))
        assert (await http.answer()).status == 404
    finally:
        for push in (standard, prefixed):
            await push.close()


def test_an_application_without_push_routes_is_all_tornados():
    assert PushHTTPServer(tornado.web.Application([])).endpoints is None


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("xheaders", [False, True])
async def test_access_log_lines_are_tornados(app, client, serve, caplog, xheaders):
    lines = []
    # Both servers get the same request, signed once: its URI shows in the line.
    accepted = publish(headers="X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Real-Ip: 10.0.0.3\r\n")
    for server in (PushHTTPServer(app, xheaders=xheaders),
                   tornado.httpserver.HTTPServer(app, xheaders=xheaders)):
        http = await client(serve(server))
        with caplog.at_level(logging.INFO, logger="tornado.access"):
            caplog.clear()
            await http.send(accepted)
            assert (await http.answer()).status == 200
            await http.send(publish(timestamp=1))
            assert (await http.answer()).status == 401
        lines.append([(record.levelname, re.sub(r"[\d.]+ms$", "", record.getMessage()))
                      for record in caplog.records if record.name == "tornado.access"])
    assert lines[0] == lines[1]
    assert lines[0][0][1].endswith(f"({'10.0.0.3' if xheaders else '127.0.0.1'}) ")


def mutations(valid: bytes, count: int, seed: int = 7) -> list[bytes]:
    """``count`` damaged copies of ``valid``: bytes flipped, cut, doubled or inserted."""
    chooser = random.Random(seed)
    damaged = []
    for _ in range(count):
        data = bytearray(valid)
        for _ in range(chooser.randint(1, 4)):
            at = chooser.randrange(len(data))
            kind = chooser.choice(("flip", "cut", "double", "insert"))
            if kind == "flip":
                data[at] ^= 1 << chooser.randrange(8)
            elif kind == "cut":
                del data[at:at + chooser.randint(1, 40)]
            elif kind == "double":
                data[at:at] = data[at:at + chooser.randint(1, 40)]
            else:
                data[at:at] = chooser.choice((b"\r\n", b"\n", b"\x00", b":", b" ", b"\r\n\r\n",
                                              b"Transfer-Encoding: chunked\r\n",
                                              b"Upgrade: x\r\nConnection: upgrade\r\n"))
        damaged.append(bytes(data))
    return damaged


@pytest.mark.gen_test(timeout=60)
async def test_damaged_requests_never_break_the_server(client, caplog):
    # Every damaged request gets an answer or a closed connection, never an
    # error the server did not mean; a good request is answered after them all.
    with caplog.at_level(logging.ERROR):
        for damaged in mutations(publish() + publish(), 300):
            http = await client()
            await http.send(damaged + b"\r\n\r\n")
            http.writer.write_eof()
            assert await http.closed(), damaged
            http.close()
    unexpected = [record for record in caplog.records
                  if record.levelno >= logging.ERROR and record.name != "tornado.access"]
    assert not unexpected, [record.getMessage() for record in unexpected]
    good = await client()
    await good.send(publish())
    assert (await good.answer()).status == 200


@pytest.mark.gen_test(timeout=30)
async def test_publishes_over_a_unix_socket_are_fronted(app, tmp_path, serve, fronts_made):
    path = str(tmp_path / "push.sock")
    serve(PushHTTPServer(app), [tornado.netutil.bind_unix_socket(path)])
    http = Client(*await asyncio.open_unix_connection(path))
    await http.send(publish())
    assert (await http.answer()).status == 200
    assert len(fronts_made) == 1
    http.close()


@pytest.mark.gen_test(timeout=30)
async def test_closing_all_connections_while_a_front_is_being_made(app, client, serve,
                                                                   fronts_made):
    server = PushHTTPServer(app)
    http = await client(serve(server))
    await http.send(publish())
    while not fronts_made:  # the front exists, its transport not yet
        await asyncio.sleep(0)
    front = fronts_made[0]
    assert front._transport is None
    connecting = front._starting
    await stop(server)
    assert await http.closed()
    await asyncio.wait_for(connecting, 5)  # ends without error: no socket left to duplicate
