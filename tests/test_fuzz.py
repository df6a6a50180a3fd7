"""Property-based fuzzing of a live server (hypothesis), over raw WebSocket and signed HTTP.

Each example is a short burst of generated input: JSON of right and wrong
types, lone surrogates as JSON escapes, deep nesting, huge names, known
events with garbage data, subscriptions and sign-ins signed over garbage (so
that they pass the signature and reach validation), client events; and HTTP
API bodies signed as the SDKs sign them. Meanwhile a bystander subscriber
receives a steady numbered sequence. The properties:

- every reply is a documented one: never "Internal error", never a 5xx;
- nothing is logged at ERROR level and no traceback;
- the fuzzed connection answers a ping afterwards, unless the server closed it
  with a documented code;
- the bystander misses nothing.

The counts (tried / refused / crashed / lost) are printed for docs/reliability.md:
``pytest -q -s tests/test_fuzz.py -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest
import tornado.websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MAIN, MAX_MESSAGE_BYTES
from test_http_front import Client, publish
from tornado_push.pubsub.errors import ErrorCode
from tornado_push.pubsub.signing import channel_auth, sign, user_auth_message

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
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

# -- the live server ---------------------------------------------------------------------


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


def report(name: str, counts: Counter) -> None:
    print(f"\nfuzz {name}: tried {counts['tried']} ({counts['examples']} examples), "
          f"refused {counts['refused']}, crashed {counts['crashed']}, lost {counts['lost']}, "
          f"closed with a documented code {counts['closed']}")


# -- properties --------------------------------------------------------------------------

def test_fuzzed_websocket_frames_get_documented_replies_and_hurt_no_one(
        io_loop, raw, bystander, caplog):
    counts: Counter = Counter()

    async def example(frames: list[Frame]) -> None:
        socket = await raw()
        try:
            for frame in [*frames, Frame("json", {"event": "pusher:ping", "data": {}})]:
                await socket.send(frame.render(socket.socket_id))
                counts["tried"] += 1
        except tornado.websocket.WebSocketClosedError:
            pass  # the server closed it (e.g. a refused sign-in): the close code is checked below
        while (reply := await socket.receive(timeout=10)) is not None:
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
            elif event == "pusher:pong":
                break
        else:
            counts["closed"] += 1
            assert socket.close_code in CLOSE_CODES, f"closed with {socket.close_code}"
        socket.close()
        await bystander.tick()

    start = len(caplog.records)

    @FUZZ
    @given(st.lists(FRAMES, min_size=1, max_size=4))
    def frames_hurt_no_one(frames: list[Frame]) -> None:
        run_example(io_loop, caplog, counts, lambda: example(frames))

    try:
        frames_hurt_no_one()
    finally:
        counts["lost"] = io_loop.run_sync(bystander.missed, timeout=30)
        report("websocket", counts)
    assert counts["lost"] == 0 and not faults(caplog, start)


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

    start = len(caplog.records)

    @FUZZ
    @given(st.sampled_from([f"/apps/{MAIN.id}/events", f"/apps/{MAIN.id}/batch_events"]), BODIES)
    def bodies_hurt_no_one(path: str, body: bytes) -> None:
        run_example(io_loop, caplog, counts, lambda: example(path, body))

    try:
        bodies_hurt_no_one()
    finally:
        for http in connection:
            http.close()
        counts["lost"] = io_loop.run_sync(bystander.missed, timeout=30)
        report("http", counts)
    assert counts["lost"] == 0 and not faults(caplog, start)
