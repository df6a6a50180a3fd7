"""``/metrics`` after real traffic: pusher-js clients, official SDK publishes, webhooks, Redis.

The server here is composed as a host app or ``server.py`` composes it
(``embed.Push``), so ``/metrics`` is the real route; scrapes are parsed with
``prometheus_client.parser`` and compared before and after the traffic.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import random
import string
import time
from typing import Any

import pusher
import pytest
import tornado.httpclient
import tornado.testing
import tornado.web
import tornado.websocket
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from app_server import auth_routes, sdk_client
from conftest import MAIN, MAX_MESSAGE_BYTES, QUIET, RawSocket, in_thread, running, subscribed
from tornado_push.embed import Push
from tornado_push.handlers.front import PushHTTPServer
from tornado_push.pubsub.apps import WebhookTarget
from tornado_push.pubsub.metrics import CLOSE_CODES
from tornado_push.pubsub import protocol
from tornado_push.pubsub.session import Session
from tornado_push.pubsub.timing import LATENCY_BUCKETS, Buckets, PublishTimer
from tornado_push.settings import load_settings
from sse_client import SSEClient
from webhook_receiver import receiver  # noqa: F401 (fixture)

P = "tornado_push_"
#: The main app with its webhooks going to the test receiver.
HOOKED_APPS = (MAIN, QUIET)


@pytest.fixture
def push(io_loop, receiver) -> Push:  # noqa: F811
    hooked = dataclasses.replace(MAIN, webhooks=(WebhookTarget(receiver.url("hooks")),))
    receiver.trust(hooked)
    settings = load_settings({"PUSH_WEBHOOK_BATCH_SECONDS": "0.05",
                              "PUSH_WEBHOOK_LEAVE_DELAY": "0.1"}, apps=(hooked, QUIET))
    yield from running(io_loop, Push.from_settings(settings))


@pytest.fixture
def hub(push: Push):
    return push.hub


@pytest.fixture
def app(push: Push) -> tornado.web.Application:
    return tornado.web.Application(push.routes() + auth_routes(list(HOOKED_APPS)),
                                   websocket_max_message_size=MAX_MESSAGE_BYTES)


class Scrape:
    """One ``/metrics`` answer, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        """The sum of ``sample``'s values over the series whose labels include ``labels``."""
        return sum(s.value for family in self.families.values() for s in family.samples
                   if s.name == sample and labels.items() <= s.labels.items())

    def series(self, family: str) -> int:
        """Distinct label sets of a family (a histogram's buckets are one series)."""
        return len({frozenset((k, v) for k, v in s.labels.items() if k != "le")
                    for s in self.families[family].samples})


async def scrape(port: int) -> Scrape:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return Scrape(response.body.decode())


async def scraped_until(port: int, check: Any, timeout: float = 10.0) -> Scrape:
    """Scrape until ``check(scrape)`` holds, for what the server counts on its own time."""
    latest: list[Scrape] = []

    async def holds() -> bool:
        latest[:] = [await scrape(port)]
        return check(latest[0])

    deadline = time.monotonic() + timeout
    while not await holds():
        assert time.monotonic() < deadline, "metrics never got there"
        await asyncio.sleep(0.05)  # a polling period, not synchronisation
    return latest[0]


@pytest.mark.gen_test(timeout=30)
async def test_connection_gauge_counts_clients_and_drops_when_they_leave(server_port, connect,
                                                                        raw):
    clients = [await connect(f"c{n}") for n in range(3)]
    before = await scrape(server_port)
    assert before.value(P + "connections", app=MAIN.id, transport="ws") == 3
    assert before.value(P + "connections_opened_total", app=MAIN.id) == 3
    for client in clients[:2]:
        await client.disconnect()
    await scraped_until(server_port, lambda s: s.value(P + "connections", app=MAIN.id) == 1)
    socket = await raw()
    socket.connection.close(1000, "bye")
    await raw(key="no-such-key", established=False)
    after = await scraped_until(server_port, lambda s: s.value(
        P + "connections_closed_total", app=MAIN.id) == 3)
    # pusher-js's disconnect() closes with 1000, as the raw socket did
    assert after.value(P + "connections_closed_total", app=MAIN.id, code="1000") == 3
    assert after.value(P + "connections_refused_total", app="_unknown", reason="unknown_app") == 1
    assert after.value(P + "connections", app=MAIN.id) == 1


@pytest.mark.gen_test(timeout=30)
async def test_connections_are_labelled_by_their_transport(server_port, connect):
    await connect("ws")
    for transport in ("xhr_streaming", "xhr_polling"):
        await connect(transport, enabledTransports=[transport], httpHost="127.0.0.1",
                      httpPort=server_port)
    scraped = await scrape(server_port)
    for transport in ("ws", "xhr_streaming", "xhr_polling"):
        assert scraped.value(P + "connections", app=MAIN.id, transport=transport) == 1
        assert scraped.value(P + "connections_opened_total", app=MAIN.id,
                             transport=transport) == 1


@pytest.mark.gen_test(timeout=30)
async def test_sse_streams_are_connections_labelled_sse(server_port):
    stream = await SSEClient.open(server_port, query="channels=feed")
    assert stream.status == 200
    during = await scrape(server_port)
    assert during.value(P + "connections", app=MAIN.id, transport="sse") == 1
    assert during.value(P + "connections_opened_total", app=MAIN.id, transport="sse") == 1
    stream.close()  # the browser leaving: 1001, going away
    await scraped_until(server_port, lambda s: s.value(
        P + "connections_closed_total", app=MAIN.id, transport="sse", code="1001") == 1
        and s.value(P + "connections", app=MAIN.id, transport="sse") == 0)
    refused = await SSEClient.open(server_port, "no-such-key", "channels=feed")
    assert refused.status == 404
    refused.close()
    after = await scrape(server_port)
    assert after.value(P + "connections_refused_total", app="_unknown", reason="unknown_app") == 1


@pytest.mark.gen_test(timeout=30)
async def test_deliveries_latency_and_publications_count_each_publish_by_source(
        server_port, connect, sdk):
    clients = [await connect(f"c{n}", user=f"u{n}") for n in range(3)]
    for client in clients:
        await subscribed(client, "private-room")
    before = await scrape(server_port)
    assert before.value(P + "subscriptions", app=MAIN.id, channel_type="private") == 3
    assert before.value(P + "channels", app=MAIN.id, channel_type="private") == 1

    for n in range(4):
        await in_thread(sdk.trigger, "private-room", "news", {"n": n})
    await in_thread(sdk.trigger_batch, [{"channel": "private-room", "name": "batched",
                                         "data": str(n)} for n in (1, 2)])
    await clients[0].trigger("private-room", "client-typing", {"who": 0})
    for client in clients:
        await client.expect(type="channel_event", channel="private-room", event="batched",
                            data=2)
    for client in clients[1:]:
        await client.expect(type="channel_event", channel="private-room", event="client-typing")

    after = await scrape(server_port)

    def grown(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert grown(P + "publications_total", app=MAIN.id, source="api") == 4
    assert grown(P + "publications_total", app=MAIN.id, source="batch_api") == 2
    assert grown(P + "publications_total", app=MAIN.id, source="client_event") == 1
    assert grown(P + "deliveries_total", app=MAIN.id) == 3 * 6 + 2  # the sender is excluded
    assert grown(P + "publish_latency_seconds_count") == 7
    assert grown(P + "broker_lag_seconds_count") == 7
    # One fan-out timed per loop iteration: the batch's two went out in one.
    timed = after.value(P + "publish_latency_seconds_count")  # every publication here
    assert 0 < after.value(P + "fanout_duration_seconds_count") < timed
    assert grown(P + "frames_received_total", app=MAIN.id, kind="client_event") == 1
    assert grown(P + "sent_bytes_total", app=MAIN.id) > 0
    assert grown(P + "http_requests_total", app=MAIN.id, endpoint="events", code="200") == 4
    assert grown(P + "http_requests_total", app=MAIN.id, endpoint="batch_events",
                 code="200") == 1
    assert grown(P + "http_request_duration_seconds_count", endpoint="events") == 4


class FlushingTransport:
    """Queues frames and writes them in a callback scheduled at the first, as the Flusher does."""

    kind = "test"

    def __init__(self, timer: PublishTimer) -> None:
        self.timer = timer
        self.queued: list[bytes] = []
        #: The publications the latency histogram had counted at each flush.
        self.latency_counts_at_flush: list[int] = []

    def send(self, frame: bytes) -> None:
        if not self.queued:
            asyncio.get_running_loop().call_soon(self.flush)
        self.queued.append(frame)

    def flush(self) -> None:
        self.latency_counts_at_flush.append(self.timer.latency.count)
        self.queued.clear()

    def close(self, code: int, reason: str) -> None:
        pass

    def unread_for(self, now: float) -> float:
        return 0.0


@pytest.mark.gen_test(timeout=10)
async def test_latency_is_observed_after_the_flush_that_writes_the_publication(hub):
    transport = FlushingTransport(hub.timer)
    session = Session(hub, MAIN, transport)
    session.open()
    await hub.subscribe(session, "timed", protocol.channel_kind("timed"))
    await asyncio.sleep(0)  # the greeting's flush
    await hub.trigger(MAIN, ["timed"], "news", "{}")
    await asyncio.sleep(0)
    assert transport.latency_counts_at_flush[-1] == 0  # not yet observed when written
    assert hub.timer.latency.count == 1
    assert hub.timer.broker_lag.count == 1


def test_bucket_counts_of_differences_match_a_bisect_per_value():
    """observe_since (counted a bucket at a time on sorted starts) puts each difference
    where one bisect per value would, negative ones at 0 and unsummed."""
    rng = random.Random(5)
    for _ in range(500):
        values = [rng.choice((-1.0, 0.0, rng.random() * 1e-3, rng.random() * 0.05,
                              rng.random() * 12, 20.0)) for _ in range(rng.randrange(30))]
        values = [v for v in values if all(abs(v - bound) > 1e-9 for bound in LATENCY_BUCKETS)]
        expected = [0] * (len(LATENCY_BUCKETS) + 1)
        for value in values:
            expected[bisect.bisect_left(LATENCY_BUCKETS, value) if value > 0 else 0] += 1
        total = sum(v for v in values if v > 0)
        buckets = Buckets()
        buckets.observe_since(100.0, [100.0 - value for value in values])
        assert buckets.counts == expected
        assert buckets.sum == pytest.approx(total, abs=1e-9)


@pytest.mark.gen_test(timeout=10)
async def test_broker_lags_are_counted_by_the_next_iteration_even_without_a_fan_out():
    """A history stream may hold what it receives: no fan-out follows, and the lags
    of what one iteration received (one clock read) are counted all the same."""
    clock = [100.0]
    timer = PublishTimer(clock=lambda: clock[0])
    for origin in (99.99, 99.0, 100.5):  # the last from a clock ahead of ours: 0
        timer.received(origin)
    clock[0] = 200.0  # not read again within the iteration
    assert timer.broker_lag.count == 0
    await asyncio.sleep(0)
    assert timer.broker_lag.count == 3
    assert timer.broker_lag.sum == pytest.approx(0.01 + 1.0)


@pytest.mark.gen_test(timeout=30)
async def test_signature_failures_count_by_reason_and_unknown_apps_as_one_label(server_port):
    forged = sdk_client(MAIN, server_port, secret="wrong-secret")
    stranger = pusher.Pusher(app_id="999", key="who", secret="x", host="127.0.0.1",
                             port=server_port, ssl=False)
    for client in (forged, stranger):
        with pytest.raises(pusher.errors.PusherError):
            await in_thread(client.trigger, "room", "news", {})
    with pytest.raises(pusher.errors.PusherError):
        await in_thread(forged.channels_info)
    metrics = await scrape(server_port)
    assert metrics.value(P + "http_auth_failures_total", app=MAIN.id, reason="bad_signature") == 2
    assert metrics.value(P + "http_auth_failures_total", app="_unknown",
                         reason="unknown_app") == 1
    assert metrics.value(P + "http_requests_total", app="_unknown", endpoint="events",
                         code="404") == 1
    assert metrics.value(P + "http_requests_total", app="_unknown", endpoint="channels",
                         code="401") == 1


@pytest.mark.gen_test(timeout=30)
async def test_webhook_failure_and_retry_show(server_port, connect, receiver):  # noqa: F811
    client = await connect("c")
    receiver.fail_next(1)
    await subscribed(client, "hooked")
    metrics = await scraped_until(server_port, lambda s: s.value(
        P + "webhook_requests_total", app=MAIN.id, outcome="success") == 1)
    assert metrics.value(P + "webhook_requests_total", app=MAIN.id, outcome="http_error") == 1
    assert metrics.value(P + "webhook_retries_total", app=MAIN.id) == 1
    assert metrics.value(P + "webhook_request_duration_seconds_count") == 2
    assert metrics.value(P + "webhook_queue_depth", app=MAIN.id) == 0


@pytest.mark.gen_test(timeout=30)
async def test_webhook_events_given_up_are_counted(server_port, push):
    # The counter once shadowed the observer method of the same name: drops logged a
    # traceback and were never counted.
    push.hub.observers.webhook_dropped(MAIN, "http://127.0.0.1:9/hooks", [{}, {}], "queue_full")
    metrics = await scrape(server_port)
    assert metrics.value(P + "webhook_events_dropped_total", app=MAIN.id, reason="queue_full") == 2


def series_budget(apps: int) -> dict[str, int]:
    """The most series each family may have, from the configuration alone: ``apps``
    configured, one ``_unknown`` more where a request may name none."""
    known = apps + 1
    endpoints, statuses, histograms = 13, 12, 1
    per_app = {"connections": 1, "connections_opened": 1,
               "connections_closed": len(CLOSE_CODES) + 1, "subscriptions": 9, "channels": 9,
               "subscriptions_refused": 5, "presence_members": 1, "signins": 1,
               "publications": 5, "deliveries": 1, "frames_received": 7, "received_bytes": 1,
               "sent_bytes": 1, "webhook_requests": 4, "webhook_retries": 1,
               "webhook_events_dropped": 3, "webhook_queue_depth": 1, "history_appends": 1,
               "history_reads": 1, "history_replayed": 1, "history_resumes": 2,
               "slow_consumer_disconnects": 1, "rate_limited": 3}
    per_known = {"connections_refused": 8, "http_requests": endpoints * statuses,
                 "http_auth_failures": 6}
    single = {"publish_latency_seconds": histograms, "broker_lag_seconds": histograms,
              "fanout_duration_seconds": histograms, "webhook_request_duration_seconds": 1,
              "event_loop_lag_seconds": 1, "draining": 1, "build_info": 1,
              "broker_connected": 1, "broker_reconnects": 1,
              "http_request_duration_seconds": endpoints,
              "broker_command_duration_seconds": 0}  # no Redis here
    return {P + name: bound for name, bound in (
        *((n, b * apps) for n, b in per_app.items()),
        *((n, b * known) for n, b in per_known.items()), *single.items())}


def noise(rng: random.Random, size: int = 12) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_=@,.;") for _ in
                   range(rng.randint(1, size)))


@pytest.mark.gen_test(timeout=60)
async def test_fuzzed_names_keys_and_paths_leave_series_within_the_configured_budget(
        server_port, raw, sdk):
    rng = random.Random(14)
    used: set[str] = set()
    http = tornado.httpclient.AsyncHTTPClient()
    socket = await raw()
    for _ in range(40):
        channel, event, key = (f"fz{noise(rng)}" for _ in range(3))
        used |= {channel, event, key}
        prefix = rng.choice(["", "private-", "presence-", "cache-", "private-encrypted-"])
        await socket.send({"event": "pusher:subscribe", "data": {"channel": prefix + channel,
                                                                  "auth": "x:y"}})
        await socket.send({"event": f"pusher:{event}", "data": {}})
        await socket.send({"event": f"client-{event}", "channel": prefix + channel, "data": {}})
        await socket.send(f"{{not json {event}")
        await in_thread(sdk.trigger, channel, event, {"x": 1})
        stranger = await raw(key=key, established=False)
        await stranger.closed()
        for path, body in ((f"/{channel}/{event}", None),
                           (f"/apps/{key}/events?auth_key={key}&auth_signature={event}", b"{}"),
                           (f"/apps/{MAIN.id}/events?auth_key={MAIN.key}&auth_timestamp=1"
                            f"&auth_signature={event}", b"{}")):
            await http.fetch(f"http://127.0.0.1:{server_port}{path}", raise_error=False,
                             method="GET" if body is None else "POST", body=body)
    await socket.barrier()
    metrics = await scrape(server_port)
    budget = series_budget(apps=len(HOOKED_APPS))
    for name, family in metrics.families.items():
        if name.startswith(("process_", "python_")) or name.endswith("_created"):
            continue  # the default collectors; when each counter's series began
        assert name in budget, f"{name} is not in the budget"
        assert metrics.series(name) <= budget[name], name
    defaults = [name for name in metrics.families if name.startswith(("process_", "python_"))]
    assert len(defaults) <= 20
    leaked = [text for text in used if text in metrics.text]
    assert not leaked, f"client-chosen names in the scrape: {leaked[:5]}"


@pytest.mark.gen_test(timeout=30)
async def test_metrics_off_serves_no_route_and_observes_nothing(io_loop):
    push = Push.from_settings(load_settings({"PUSH_METRICS": "0"}, apps=(MAIN,)))
    await push.start()
    sock, port = tornado.testing.bind_unused_port()
    server = PushHTTPServer(tornado.web.Application(push.routes()))
    server.add_socket(sock)
    try:
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/metrics", raise_error=False)
        assert response.code == 404
        assert push.metrics is None and not push.hub.observers and push.hub.timer is None
    finally:
        server.stop()
        await push.close()


@pytest.mark.gen_test(timeout=90)
async def test_latency_is_observed_on_each_process_of_a_redis_cluster(
        redis_server, server_processes):
    first, second = await server_processes(2, PUSH_REDIS_URL=redis_server.url)
    sockets = []
    for server in (first, second):
        connection = await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{server.port}/app/{MAIN.key}?protocol=7")
        socket = RawSocket(connection)
        await socket.expect("pusher:connection_established")
        await socket.send({"event": "pusher:subscribe", "data": {"channel": "across"}})
        await socket.expect("pusher_internal:subscription_succeeded")
        sockets.append(socket)
    for n in range(3):
        await in_thread(sdk_client(MAIN, first.port).trigger, "across", "news", {"n": n})
    for socket in sockets:
        for _ in range(3):
            await socket.expect("news", timeout=10)
    origin, other = await scrape(first.port), await scrape(second.port)
    assert origin.value(P + "publications_total", source="api") == 3
    assert other.value(P + "publications_total", source="api") == 0
    for metrics in (origin, other):  # the other only knows origin_time from Redis
        assert metrics.value(P + "publish_latency_seconds_count") == 3
        assert metrics.value(P + "broker_lag_seconds_count") == 3
        assert metrics.value(P + "deliveries_total", app=MAIN.id) == 3
        assert metrics.value(P + "broker_connected") == 1
        assert metrics.value(P + "broker_command_duration_seconds_count", op="subscribe") >= 1
    for socket in sockets:
        socket.close()


@pytest.mark.gen_test(timeout=30)
async def test_bytes_received_are_the_utf8_size_of_each_message(server_port, raw):
    socket = await raw()
    before = (await scrape(server_port)).value("tornado_push_received_bytes_total", app=MAIN.id)
    messages = [json.dumps({"event": "pusher:ping", "data": {}}),
                json.dumps({"event": "pusher:ping", "data": {"note": "héllo ☃ 𝄞"}},
                           ensure_ascii=False)]
    for message in messages:
        await socket.send(message)
    await socket.barrier()
    after = (await scrape(server_port)).value("tornado_push_received_bytes_total", app=MAIN.id)
    assert after - before == sum(len(message.encode()) for message in messages)
