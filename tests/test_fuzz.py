"""Property-based fuzzing of a live server (hypothesis), over raw WebSocket, signed HTTP,
pusher-js's HTTP fallback (xhr_polling) and Server-Sent Events.

Each example is a short burst of generated input: JSON of right and wrong
types, lone surrogates as JSON escapes, deep nesting, huge names, known
events with garbage data, subscriptions and sign-ins signed over garbage (so
that they pass the signature and reach validation), client events; HTTP
API bodies signed as the SDKs sign them; the same frames as ``xhr_send`` bodies
of an HTTP session, among garbage bodies and odd or wrong session paths; and SSE
requests with odd channel lists, tokens and ``Last-Event-ID`` values. Meanwhile a
bystander subscriber receives a steady numbered sequence. The properties:

- every reply is a documented one: never "Internal error", never a 5xx; an SSE
  refusal is a 4xx with a one-line text body, before any streaming;
- nothing is logged at ERROR level and no traceback;
- the fuzzed connection answers a ping afterwards, unless the server closed it
  with a documented code (an accepted SSE stream: its first event is documented);
- the bystander misses nothing.

The counts (tried / refused / crashed / lost) are printed for docs/reliability.md:
``pytest -q -s tests/test_fuzz.py -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest
import tornado.web
import tornado.websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app_server import auth_routes
from conftest import APPS, DISABLED, MAIN, MAX_MESSAGE_BYTES, QUIET
from fallback_client import fallback_url, frames, post
from sse_client import SSEClient
from test_http_front import Client, publish
from tornado_push.handlers import routes
from tornado_push.handlers.fallback import FallbackOptions
from tornado_push.handlers.sse import MAX_CHANNELS
from tornado_push.pubsub.errors import ErrorCode
from tornado_push.pubsub.signing import channel_auth, sign, sse_token, user_auth_message

EXAMPLES = 300
#: Fewer for the HTTP fallback and SSE, whose examples each take several requests.
SESSION_EXAMPLES = 200
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
SESSION_FUZZ = settings(FUZZ, max_examples=SESSION_EXAMPLES)
BYSTANDER = "bystander"
#: Close codes the server documents: Pusher's, and 1009 for a message over the size limit.
CLOSE_CODES = {int(code) for code in ErrorCode} | {1009}
#: Events a client may be sent besides the channel events published to it.
DOCUMENTED = {"pusher:error", "pusher:pong", "pusher:subscription_error", "pusher:signin_success",
              "pusher:cache_miss", "pusher_internal:subscription_succeeded",
              "pusher_internal:member_added", "pusher_internal:member_removed",
              "pusher_internal:resume_succeeded", "pusher_internal:resume_failed",
              "pusher_internal:continuity_lost", "pusher_internal:watchlist_events",
              "pusher_internal:subscription_count"}

# -- strategies --------------------------------------------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12)
CHANNELS = st.one_of(
    st.sampled_from(["news", "private-fuzz", "presence-fuzz", "cache-fuzz", "history-fuzz",
                     "presence-history-fuzz", "private-encrypted-fuzz", "#server-to-user-fuzz",
                     "presence-cache-fuzz", ""]),
    TEXT, st.integers(100, 400).map(lambda n: "x" * n))
DEEP = st.integers(50, 3000).map(lambda n: "[" * n + "]" * n)
HUGE = st.integers(1000, MAX_MESSAGE_BYTES - 500).map(lambda n: "n" * n)
EVENTS = st.one_of(st.sampled_from(["pusher:ping", "pusher:pong", "pusher:subscribe",
                                    "pusher:unsubscribe", "pusher:signin", "client-fuzz",
                                    "pusher:teleport", ""]),
                   TEXT, st.just("client-").flatmap(lambda p: TEXT.map(p.__add__)))


@dataclass(frozen=True)
class Frame:
    """One message to send; ``signed`` frames get a valid auth for the socket they go on."""

    kind: str
    fields: Any

    def render(self, socket_id: str) -> str:
        if self.kind == "raw":
            return self.fields
        if self.kind == "subscribe":
            channel, member, resume, signed = self.fields
            data: dict[str, Any] = {"channel": channel}
            channel_data = None
            if member is not None:
                channel_data = data["channel_data"] = (member if isinstance(member, str)
                                                       else json.dumps(member))
            data["auth"] = _signed(lambda: channel_auth(MAIN, socket_id, channel, channel_data),
                                   signed)
            if resume is not None:
                data["resume"] = resume
            return json.dumps({"event": "pusher:subscribe", "data": data})
        if self.kind == "signin":
            user, signed = self.fields
            user_data = user if isinstance(user, str) else json.dumps(user)
            auth = _signed(lambda: f"{MAIN.key}:"
                                   f"{sign(MAIN.secret, user_auth_message(socket_id, user_data))}",
                           signed)
            return json.dumps({"event": "pusher:signin",
                               "data": {"user_data": user_data, "auth": auth}})
        return json.dumps(self.fields)


def _signed(make: Any, signed: Any) -> Any:
    """A valid signature when ``signed`` is True (and the text can be signed), else ``signed``."""
    if signed is not True:
        return signed
    try:
        return make()
    except UnicodeEncodeError:  # a raw surrogate in the channel name: nobody could sign it
        return "not-signable"


MEMBERS = st.one_of(st.none(), TEXT, JSON,
                    st.fixed_dictionaries({"user_id": st.one_of(TEXT, st.integers(), JSON)},
                                          optional={"user_info": JSON}))
FRAMES = st.one_of(
    st.builds(Frame, st.just("json"), JSON),
    st.builds(Frame, st.just("json"), st.fixed_dictionaries(
        {"event": EVENTS}, optional={"channel": st.one_of(CHANNELS, JSON), "data": JSON})),
    st.builds(Frame, st.just("raw"), st.one_of(
        TEXT.map(json.dumps), st.text(max_size=30),
        DEEP.map(lambda deep: '{"event":"pusher:subscribe","data":' + deep + "}"),
        DEEP.map(lambda deep: '{"event":"client-x","channel":"private-fuzz","data":' + deep + "}"),
        HUGE.map(lambda huge: json.dumps({"event": huge, "channel": huge})))),
    st.builds(Frame, st.just("subscribe"), st.tuples(
        CHANNELS, MEMBERS, st.one_of(st.none(), JSON, st.fixed_dictionaries(
            {"epoch": TEXT, "offset": st.integers()})),
        st.one_of(st.just(True), JSON))),
    st.builds(Frame, st.just("signin"), st.tuples(
        st.one_of(TEXT, JSON, st.fixed_dictionaries({"id": st.one_of(TEXT, JSON)},
                                                    optional={"watchlist": JSON})),
        st.one_of(st.just(True), JSON))),
    st.builds(Frame, st.just("json"), st.fixed_dictionaries(
        {"event": st.just("client-fuzz"), "channel": st.sampled_from(
            ["private-fuzz", "presence-fuzz", "private-encrypted-fuzz", "news"]),
         "data": st.one_of(JSON, TEXT, HUGE)})),
)
EVENT_BODIES = st.fixed_dictionaries({}, optional={
    "name": st.one_of(TEXT, JSON, st.integers(1, 300).map(lambda n: "e" * n)),
    "channel": st.one_of(CHANNELS, JSON),
    "channels": st.one_of(st.lists(CHANNELS, max_size=5), JSON),
    "data": st.one_of(TEXT, JSON, st.integers(10000, 11000).map(lambda n: "d" * n)),
    "socket_id": st.one_of(TEXT, JSON, st.just("1.2")),
    "info": st.one_of(TEXT, st.sampled_from(["subscription_count", "user_count", "cache"])),
})
#: Publishes that are valid but for what the generated values make of them.
PLAUSIBLE_BODIES = st.fixed_dictionaries({
    "name": st.one_of(st.just("e"), TEXT), "channel": st.sampled_from(
        ["news", "cache-fuzz", "history-fuzz", "private-fuzz"]),
    "data": st.one_of(TEXT, JSON.map(json.dumps))})
BODIES = st.one_of(
    EVENT_BODIES.map(lambda body: json.dumps(body).encode()),
    PLAUSIBLE_BODIES.map(lambda body: json.dumps(body).encode()),
    st.lists(EVENT_BODIES, max_size=12).map(lambda batch: json.dumps({"batch": batch}).encode()),
    JSON.map(lambda value: json.dumps(value).encode()),
    DEEP.map(lambda deep: ('{"name":"e","channel":"news","data":"x","d":' + deep + "}").encode()),
    st.binary(max_size=64),
)
PING = Frame("json", {"event": "pusher:ping", "data": {}})


def path_piece(value: str | bytes) -> str:
    """``value`` percent-encoded as one piece of a URL; a lone surrogate as the bytes
    ``surrogatepass`` makes of it, which are not UTF-8."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote(value, safe="")


#: Server and session ids as pusher-js makes them (a number, eight random characters).
PUSHER_IDS = st.tuples(st.integers(0, 999).map(str),
                       st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=8, max_size=8))
#: Server and session ids: pusher-js's kind, and odd ones (empty, ".", "/", not UTF-8...).
IDS = st.one_of(st.sampled_from(["0", "123", "abcdefgh"]), TEXT,
                st.binary(max_size=8)).map(path_piece)
KEYS = st.one_of(st.sampled_from([MAIN.key, QUIET.key, DISABLED.key, "no-such-key"]),
                 TEXT.map(path_piece))
#: Where an ``xhr_send`` goes: the session's own path ({}), or with its key, server id or
#: session id replaced.
TARGETS = st.one_of(st.just({}), st.fixed_dictionaries(
    {}, optional={"key": KEYS, "server": IDS, "sid": IDS}))


@dataclass(frozen=True)
class SendBody:
    """An ``xhr_send`` body: ``raw`` as it is, else ``frames`` rendered for the session's
    socket as a JSON array (``ascii=False``: raw UTF-8, a lone surrogate as bytes that
    are not UTF-8)."""

    frames: tuple[Frame, ...] = ()
    raw: bytes | None = None
    ascii: bool = True

    def render(self, socket_id: str) -> bytes:
        if self.raw is not None:
            return self.raw
        messages = [frame.render(socket_id) for frame in self.frames]
        return json.dumps(messages, ensure_ascii=self.ascii).encode("utf-8", "surrogatepass")


#: Messages that hold lone surrogates as such, which no WebSocket text frame can carry.
RAW_TEXT = TEXT.map(lambda text: Frame("raw", text))
SEND_BODIES = st.one_of(
    st.builds(SendBody, st.lists(st.one_of(FRAMES, RAW_TEXT), max_size=4).map(tuple),
              st.none(), st.booleans()),
    st.builds(SendBody, raw=st.one_of(
        st.binary(max_size=64),
        JSON.map(lambda value: json.dumps(value).encode()),  # mostly not an array of strings
        DEEP.map(str.encode),
        st.integers(1, 3).map(lambda n: json.dumps(["m" * (MAX_MESSAGE_BYTES * n + 1)]).encode()),
        st.integers(50, 400).map(lambda n: json.dumps([PING.render("")] * n).encode()),
    )),
)
#: What an ``xhr_send`` may be answered: ``SendHandler``'s statuses (204, and 400, 404 or 413
#: for a body or session it refuses); Tornado's 404 for a path no route takes and 400 for one
#: that is not UTF-8 are among them.
SEND_STATUSES = (204, 400, 404, 413)
#: What the receive request that opens a session may be answered (its path refused, as above).
OPEN_STATUSES = (200, 400, 404)

#: Names over the length limit stay within a few KB: nine of them (a list repeated) must keep
#: the request head under Tornado's 64 KiB, past which Tornado drops the connection unanswered.
SSE_CHANNELS = st.one_of(CHANNELS, st.sampled_from([BYSTANDER, "private-history-fuzz", "a,b", " "]),
                         st.integers(165, 4000).map(lambda n: "h" * n))
CHANNEL_LISTS = st.one_of(
    st.none(),
    st.lists(SSE_CHANNELS, max_size=5),
    st.lists(SSE_CHANNELS, min_size=1, max_size=3).map(lambda names: names * 3),  # duplicated
    st.integers(MAX_CHANNELS - 2, MAX_CHANNELS + 2).map(lambda n: [f"c{i}" for i in range(n)]),
)
#: Header text: no control characters, which make the request malformed HTTP (Tornado's to
#: refuse) rather than a garbage Last-Event-ID.
HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)


def event_ids(text: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """``Last-Event-ID`` values: ``text``, and ``<channel>:<epoch>:<offset>`` of garbage."""
    return st.one_of(st.none(), text, st.tuples(
        st.sampled_from(["history-fuzz", "news", "private-history-fuzz"]), text,
        st.one_of(st.integers(-5, 10 ** 20), text)).map(lambda parts: ":".join(map(str, parts))))


TOKENS = st.one_of(st.none(), st.just(True), TEXT,
                   st.tuples(st.integers(-10, 10 ** 13), TEXT).map(lambda p: f"{p[0]}:{p[1]}"))
USER_IDS = st.one_of(st.none(), st.just("ann"), TEXT, st.integers(100, 300).map(lambda n: "u" * n))


@dataclass(frozen=True)
class StreamAsk:
    """One SSE request; ``token`` True is a valid token for its channels and user."""

    key: str
    channels: list[str] | None
    token: Any
    user_id: str | None
    last_event_id: str | None
    header: str | None

    @property
    def listed(self) -> str | None:
        return None if self.channels is None else ",".join(self.channels)

    def query(self) -> str:
        token = self.token
        if token is True:
            token = _signed(lambda: sse_token(MAIN, self.listed or "", int(time.time()) + 60,
                                              self.user_id), True)
        values = {"channels": self.listed, "token": token, "user_id": self.user_id,
                  "last_event_id": self.last_event_id}
        return "&".join(f"{name}={path_piece(value)}" for name, value in values.items()
                        if value is not None)

    def headers(self) -> dict[str, str]:
        return {} if self.header is None else {"Last-Event-ID": self.header}


STREAM_ASKS = st.one_of(
    # What a page asks, but for the channels listed and the event id it resumes from.
    st.builds(StreamAsk, st.just(MAIN.key), st.lists(st.sampled_from(
        ["news", "history-fuzz", "cache-fuzz", "private-fuzz", BYSTANDER, "presence-fuzz",
         "presence-history-fuzz"]), min_size=1, max_size=4), st.just(True), st.just("ann"),
        st.none(), st.one_of(st.none(), event_ids(HEADER_TEXT))),
    st.builds(StreamAsk, KEYS.filter(bool), CHANNEL_LISTS, TOKENS, USER_IDS, event_ids(TEXT),
              event_ids(HEADER_TEXT)))
#: Events an SSE stream of the fuzz may carry: the documented ones (errors as pusher:error),
#: the event published to the stream's channels, the bystander's ticks.
SSE_EVENTS = DOCUMENTED | {"sse-fuzz", "tick"}

# -- the live server ---------------------------------------------------------------------


@pytest.fixture
def app(hub) -> tornado.web.Application:
    """conftest's server, with HTTP sessions held to the WebSocket's message limit, polls
    answered after a second of silence, and sessions kept past any example's length."""
    fallback = FallbackOptions(heartbeat_interval=1, disconnect_timeout=60)
    return tornado.web.Application(routes(hub, fallback=fallback,
                                          max_message_bytes=MAX_MESSAGE_BYTES) + auth_routes(APPS),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


class Bystander:
    """A subscriber on :data:`BYSTANDER` and the numbered sequence published to it."""

    def __init__(self, socket: Any, hub: Any) -> None:
        self.socket = socket
        self.hub = hub
        self.sent = 0

    async def tick(self) -> None:
        self.sent += 1
        await self.hub.trigger(MAIN, [BYSTANDER], "tick", str(self.sent))

    async def missed(self) -> int:
        """How many of the numbers sent it did not get, in order, once."""
        received = []
        while len(received) < self.sent:
            frame = await self.socket.receive(timeout=10)
            if frame is None:
                break
            if frame["event"] == "tick":
                received.append(int(frame["data"]))
        assert received == list(range(1, len(received) + 1)), "bystander got them out of order"
        return self.sent - len(received)


@pytest.fixture
def bystander(io_loop, raw, hub) -> Bystander:
    async def start() -> Bystander:
        socket = await raw()
        await socket.send({"event": "pusher:subscribe", "data": {"channel": BYSTANDER}})
        await socket.expect("pusher_internal:subscription_succeeded")
        return Bystander(socket, hub)
    return io_loop.run_sync(start)


def faults(caplog, since: int) -> list[str]:
    """Records logged since ``since`` that a client's input must never cause."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records[since:]
            if r.exc_info or (r.levelno >= logging.ERROR and r.name != "tornado.access")
            or "Internal error" in r.getMessage()]


def run_example(io_loop, caplog, counts: Counter, example: Callable[[], Awaitable[None]]) -> None:
    """Run one hypothesis example on the server's loop; a failed assertion or a fault
    logged meanwhile counts it as crashed, and fails it."""
    counts["examples"] += 1
    since = len(caplog.records)
    try:
        io_loop.run_sync(example, timeout=30)
    except Exception:
        counts["crashed"] += 1
        raise
    found = faults(caplog, since)
    counts["crashed"] += bool(found)
    assert not found, found


def check_reply(reply: dict, counts: Counter) -> bool:
    """Assert that ``reply`` is one the server documents, counting refusals; True for a pong."""
    event = reply["event"]
    assert event in DOCUMENTED or ("channel" in reply and not event.startswith(
        ("pusher:", "pusher_internal:"))), reply
    if event == "pusher:error":
        counts["refused"] += 1
        assert reply["data"]["code"] in CLOSE_CODES, reply
        assert "Internal error" not in reply["data"]["message"], reply
    elif event == "pusher:subscription_error":
        counts["refused"] += 1
        assert json.loads(reply["data"])["status"] in (400, 401, 403, 413), reply
    return event == "pusher:pong"


def hurts_no_one(name: str, fuzzed: Callable[[], None], counts: Counter, io_loop, caplog,
                 bystander: Bystander, cleanup: Callable[[], None] = lambda: None) -> None:
    """Run the hypothesis property ``fuzzed``, then check what every property promises:
    the bystander missed nothing and nothing a client's input must never cause was logged."""
    start = len(caplog.records)
    try:
        fuzzed()
    finally:
        cleanup()
        counts["lost"] = io_loop.run_sync(bystander.missed, timeout=30)
        report(name, counts)
    assert counts["lost"] == 0 and not faults(caplog, start)


def report(name: str, counts: Counter) -> None:
    """Print the counts; those a property adds (sessions opened, streams accepted) last."""
    own = ", ".join(f"{what} {count}" for what, count in counts.items()
                    if what not in {"tried", "examples", "refused", "crashed", "lost", "closed"})
    print(f"\nfuzz {name}: tried {counts['tried']} ({counts['examples']} examples), "
          f"refused {counts['refused']}, crashed {counts['crashed']}, lost {counts['lost']}, "
          f"closed with a documented code {counts['closed']}" + (f"; {own}" if own else ""))


# -- properties --------------------------------------------------------------------------

def test_fuzzed_websocket_frames_get_documented_replies_and_hurt_no_one(
        io_loop, raw, bystander, caplog):
    counts: Counter = Counter()

    async def example(frames: list[Frame]) -> None:
        socket = await raw()
        try:
            for frame in [*frames, PING]:
                await socket.send(frame.render(socket.socket_id))
                counts["tried"] += 1
        except tornado.websocket.WebSocketClosedError:
            pass  # the server closed it (e.g. a refused sign-in): the close code is checked below
        while (reply := await socket.receive(timeout=10)) is not None:
            if check_reply(reply, counts):
                break
        else:
            counts["closed"] += 1
            assert socket.close_code in CLOSE_CODES, f"closed with {socket.close_code}"
        socket.close()
        await bystander.tick()

    @FUZZ
    @given(st.lists(FRAMES, min_size=1, max_size=4))
    def frames_hurt_no_one(frames: list[Frame]) -> None:
        run_example(io_loop, caplog, counts, lambda: example(frames))

    hurts_no_one("websocket", frames_hurt_no_one, counts, io_loop, caplog, bystander)


def test_fuzzed_signed_http_bodies_get_documented_statuses_and_hurt_no_one(
        io_loop, server_port, bystander, caplog):
    counts: Counter = Counter()
    connection: list[Client] = []

    async def example(path: str, body: bytes) -> None:
        if not connection:
            connection.append(await Client.connect(server_port))
        http = connection[0]
        counts["tried"] += 1
        await http.send(publish(path, body))
        answer = await http.answer(timeout=10)
        assert answer.status in (200, 400, 413), (answer.status, answer.body)
        if answer.status != 200:
            counts["refused"] += 1
            assert isinstance(answer.json()["error"], str), answer.body
        await bystander.tick()

    @FUZZ
    @given(st.sampled_from([f"/apps/{MAIN.id}/events", f"/apps/{MAIN.id}/batch_events"]), BODIES)
    def bodies_hurt_no_one(path: str, body: bytes) -> None:
        run_example(io_loop, caplog, counts, lambda: example(path, body))

    hurts_no_one("http", bodies_hurt_no_one, counts, io_loop, caplog, bystander,
                 cleanup=lambda: [http.close() for http in connection])



# -- HTTP sessions and SSE streams -------------------------------------------------------

class PolledSession:
    """An HTTP session as pusher-js's ``xhr_polling`` keeps it, on ``{server}/{sid}``."""

    def __init__(self, port: int, server: str, sid: str) -> None:
        self.port, self.server, self.sid = port, server, sid
        self.receive = fallback_url(port, f"{server}/{sid}/xhr")
        self.socket_id: str | None = None

    async def open(self) -> None:
        """Open the session and read its greeting (``socket_id``); or, its path refused, not."""
        answer = await post(self.receive + "?protocol=7")
        assert answer.code in OPEN_STATUSES, (answer.code, answer.reason)
        if answer.code != 200:
            return
        received = frames(answer.body)
        assert received[0] == ("o", None), received
        messages = [message for kind, value in received[1:] if kind == "a" for message in value]
        while not messages:  # the greeting came after the poll was answered
            messages, _ = await self.poll()
        assert messages[0]["event"] == "pusher:connection_established", messages
        self.socket_id = json.loads(messages[0]["data"])["socket_id"]

    async def send(self, body: bytes, key: str = MAIN.key, server: str | None = None,
                   sid: str | None = None) -> int:
        """POST ``body`` to ``xhr_send`` on this session's path, or with pieces replaced."""
        server = self.server if server is None else server
        sid = self.sid if sid is None else sid
        url = fallback_url(self.port, f"{server}/{sid}/xhr_send", key)
        answer = await post(url, body)
        return answer.code

    async def poll(self) -> tuple[list[dict], list | None]:
        """One receive request: the messages it carried, and its ``c`` frame if closed."""
        answer = await post(self.receive)
        assert answer.code == 200, (answer.code, answer.reason)
        messages: list[dict] = []
        closed = None
        for kind, value in frames(answer.body):
            assert kind in ("a", "h", "c"), (kind, value)  # "o" opens a session, once
            if kind == "a":
                messages.extend(value)
            elif kind == "c":
                closed = value
        return messages, closed


def test_fuzzed_http_fallback_sends_get_documented_answers_and_hurt_no_one(
        io_loop, server_port, bystander, caplog):
    counts: Counter = Counter()

    async def example(ids: tuple[str, str], sends: list[tuple[SendBody, dict[str, str]]]) -> None:
        # A session id of its own: one used before would reach that example's session.
        session = PolledSession(server_port, ids[0], f"{ids[1]}-{counts['examples']}")
        await session.open()
        counts["sessions opened"] += session.socket_id is not None
        for body, target in [*sends, (SendBody((PING,)), {})]:
            status = await session.send(body.render(session.socket_id or ""), **target)
            counts["tried"] += 1
            assert status in SEND_STATUSES, status
            counts["refused"] += status != 204
        while session.socket_id is not None:  # until the pong, or the c frame saying why not
            messages, closed = await session.poll()
            if any([check_reply(message, counts) for message in messages]):  # all checked
                break
            if closed is not None:
                counts["closed"] += 1
                assert closed[0] in CLOSE_CODES, closed
                break
        await bystander.tick()

    @SESSION_FUZZ
    @given(st.one_of(PUSHER_IDS, st.tuples(IDS, IDS)),
           st.lists(st.tuples(SEND_BODIES, TARGETS), min_size=1, max_size=4))
    def sends_hurt_no_one(ids: tuple[str, str],
                          sends: list[tuple[SendBody, dict[str, str]]]) -> None:
        run_example(io_loop, caplog, counts, lambda: example(ids, sends))

    hurts_no_one("http fallback", sends_hurt_no_one, counts, io_loop, caplog, bystander)


def test_fuzzed_sse_requests_get_documented_answers_and_hurt_no_one(
        io_loop, server_port, hub, bystander, caplog):
    counts: Counter = Counter()

    async def example(ask: StreamAsk) -> None:
        counts["tried"] += 1
        client = await SSEClient.open(server_port, ask.key, ask.query(), ask.headers())
        try:
            if client.status == 200:
                counts["streams accepted"] += 1
                assert "text/event-stream" in client.head, client.head
                await hub.trigger(hub.apps.by_key(urllib.parse.unquote(ask.key)),
                                  [name for name in dict.fromkeys(ask.listed.split(",")) if name],
                                  "sse-fuzz", "fuzz")
                events = [await client.next()]
                while not client.events.empty():
                    events.append(client.events.get_nowait())
                for event in events:
                    assert event.get("event") in SSE_EVENTS, event
                    assert "Internal error" not in event.get("data", ""), event
                    counts["refused"] += event["event"] == "pusher:error"
            else:
                counts["refused"] += 1
                body = (await client.body()).strip()
                assert 400 <= client.status < 500 and "text/plain" in client.head, (client.head,
                                                                                     body)
                assert body and "\n" not in body and "Internal error" not in body, body
        finally:
            client.close()
        await bystander.tick()

    @SESSION_FUZZ
    @given(STREAM_ASKS)
    def requests_hurt_no_one(ask: StreamAsk) -> None:
        run_example(io_loop, caplog, counts, lambda: example(ask))

    hurts_no_one("sse", requests_hurt_no_one, counts, io_loop, caplog, bystander)
