"""The HTTP front: publishes answered without Tornado's HTTP/1 layer, everything else by Tornado.

Tornado spends most of an HTTP API request in Python around the handler:
header parsing, ``HTTPServerRequest``, ``RequestHandler`` setup and finish
(profiled in docs/benchmarks.md). That caps the publishes one process takes
from the SDKs at a few thousand a second. :class:`PushHTTPServer` is Tornado's
``HTTPServer`` whose plain-TCP connections start in a :class:`FrontConnection`.
There, requests are framed and their header blocks parsed by httptools
(llhttp, Node's HTTP parser, in C), and ``POST {prefix}/apps/{id}/events`` and
``.../batch_events`` are answered through the functions the Tornado handlers
call (``handlers/api.py``), with the same bytes Tornado would send.

A connection that does not start with ``POST`` (a WebSocket handshake, most
often) goes to Tornado before anything is read from it. On a connection that
does, the first request the front does not take goes to Tornado with every
byte after it, on the same socket, and the connection is Tornado's from then
on: a page, a query, and any publish out of the ordinary
(chunked, ``Expect``, ``Content-Encoding``, HTTP/1.0, an escaped path or query,
headers over the size limit, malformed). So Tornado keeps answering all of those as
before. TLS connections are Tornado's from the start. One exception: a request
whose declared body is over ``max_body_size``, whatever its path, is answered
413 with a JSON body, unread, and the connection closed, where Tornado would
answer a bare 400 (:class:`_BodyLimit`, on Tornado's side: the front hands
such a request over like any other it does not take).

Both paths bound how long a client may take to send a request
(:class:`HTTPTimeouts`), so that connections sending nothing, or a byte at a
time, are closed rather than held.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import enum
import json
import logging
import re
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable, Coroutine, Generator, NamedTuple

import httptools
import tornado
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.web

from ..pubsub import logjson
from ..pubsub.apps import App
from ..pubsub.hub import Hub
from . import api
from .health import InFlightRequests
from .outbound import Flusher
from .tornado_internals import preload

log = logging.getLogger(__name__)
access_log = logging.getLogger("tornado.access")  # where Tornado logs each request

Publish = Callable[[Hub, App, bytes], Awaitable[dict[str, Any]]]
_PUBLISHERS: dict[str, Publish] = {"events": api.publish_events,
                                   "batch_events": api.publish_batch}
#: Headers whose presence sends a request to Tornado, which handles what they ask for.
_TORNADO_HEADERS = frozenset((b"transfer-encoding", b"expect", b"content-encoding", b"upgrade"))
#: A query the front reads as is: the SDKs' (hex, digits, keys) need no unescaping.
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.~=&-]*")
#: Tornado's default for what HTTPServer's ``max_header_size`` leaves unset.
_MAX_HEADER_BYTES = 65536
#: How a connection that publishes starts.
_POST = b"POST "
#: Publish paths whose endpoint is remembered (PublishEndpoints.match).
_MATCHED_PATHS = 256
#: What is read ahead of the request being answered (pipelined requests) before reading pauses.
_READ_AHEAD_BYTES = 65536


@dataclass(frozen=True)
class HTTPTimeouts:
    """How long a client may take over each part of an HTTP request, in seconds.

    A connection is *ready* for a request when it is accepted and when the
    answer to its previous request is written (keep-alive). Then:

    - ``idle``: the request's first byte must come within ``idle``;
    - ``header``: its head (request line and headers) must be complete
      within ``idle + header``;
    - ``body``: its body must be complete within ``body`` of the head.

    Past a bound the connection is closed without an answer. A WebSocket
    handshake is a request like any other; once upgraded, the activity and
    pong timeouts govern the connection instead.

    Tornado's HTTP/1 server keeps one clock for the wait and the head (its
    ``idle_connection_timeout``, given ``idle + header`` here), so on
    connections Tornado serves (TLS ones, pages, queries, handshakes, and
    publishes after a hand-off) a keep-alive connection may stay silent for
    ``idle + header`` rather than ``idle``. A connection handed to Tornado
    starts Tornado's clock then: a new plain connection must send its first
    byte within ``idle`` and, if it goes to Tornado, complete its head within
    ``idle + header`` of that byte. Defaults: ``idle`` 5 s, as Node's
    keep-alive (SDKs keep a connection for publishing bursts; a lone publish
    later pays one connect); ``header`` 10 s, a head is one packet from a
    healthy client; ``body`` 30 s, the largest body (PUSH_MAX_BODY_BYTES,
    1 MiB) at under 300 kbit/s.
    """

    idle: float = 5.0
    header: float = 10.0
    body: float = 30.0

    @classmethod
    def of_tornado(cls, idle_connection_timeout: float | None,
                   body_timeout: float | None) -> HTTPTimeouts:
        """What Tornado's own ``HTTPServer`` arguments mean (one clock for the wait
        and the head), with our defaults for what they leave unset."""
        timeouts = cls() if body_timeout is None else cls(body=body_timeout)
        if idle_connection_timeout is None:
            return timeouts
        return replace(timeouts, idle=idle_connection_timeout, header=0.0)


class _Endpoint(NamedTuple):
    """A publish path matched: what answers it and how it was signed."""

    signed_path: str  # without the prefix, as the SDKs sign it
    app_id: str
    name: str  # the route's name in metrics: events or batch_events
    publish: Publish
    hub: Hub
    in_flight: InFlightRequests


class PublishEndpoints:
    """The publish routes an Application mounts (``handlers.routes``), under each prefix,
    with the engine and in-flight count each was mounted with."""

    def __init__(self, mounts: dict[str, tuple[Hub, InFlightRequests]]) -> None:
        self._mounts = mounts
        self._matched: dict[str, _Endpoint] = {}
        prefixes = "|".join(re.escape(prefix) for prefix in sorted(mounts, key=len, reverse=True))
        self._path = re.compile(rf"(?P<prefix>{prefixes})"
                                r"(?P<signed>/apps/(?P<app_id>[^/%]+)/(?P<kind>events|batch_events))")

    @classmethod
    def of(cls, application: tornado.web.Application) -> PublishEndpoints | None:
        """The publish routes among ``application``'s, or None if it has none."""
        mounts = {}
        for rule in application.wildcard_router.rules:
            if rule.target in (api.EventsHandler, api.BatchEventsHandler):
                options = rule.target_kwargs
                mounts[options.get("prefix", "")] = (options["hub"], options["in_flight"])
        return cls(mounts) if mounts else None

    def match(self, path: str) -> _Endpoint | None:
        """The endpoint of a request path, None when it is no publish route.

        The paths matched last are remembered (a bounded number): an app server
        publishes to the same few.
        """
        endpoint = self._matched.get(path)
        if endpoint is not None:
            return endpoint
        found = self._path.fullmatch(path)
        if found is None:
            return None
        hub, in_flight = self._mounts[found["prefix"]]
        endpoint = _Endpoint(found["signed"], found["app_id"], found["kind"],
                             _PUBLISHERS[found["kind"]], hub, in_flight)
        if len(self._matched) >= _MATCHED_PATHS:
            self._matched.clear()
        self._matched[path] = endpoint
        return endpoint


class _BodyLimit(tornado.httputil.HTTPMessageDelegate):
    """A request declaring a body over the limit is answered 413 with a JSON body,
    unread, and the connection closed; Tornado itself would answer a bare 400.
    Anything else passes through.
    """

    def __init__(self, delegate: tornado.httputil.HTTPMessageDelegate,
                 connection: tornado.httputil.HTTPConnection, limit: int | None,
                 xheaders: bool) -> None:
        self._delegate = delegate
        self._connection = connection
        self._limit = limit
        self._xheaders = xheaders

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders
                         ) -> Awaitable[None] | None:
        declared = headers.get("Content-Length", "")
        if self._limit is not None and declared.isdigit() and int(declared) > self._limit:
            self._refuse(start_line, headers)
            return None
        return self._delegate.headers_received(start_line, headers)

    def _refuse(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> None:
        started = time.perf_counter()
        # Detached, Tornado reads no more of this connection: the body stays unread.
        remote_ip = self._connection.context.remote_ip  # type: ignore[attr-defined]
        if self._xheaders:  # as Tornado: X-Real-Ip, else the last X-Forwarded-For
            forwarded = headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
            remote_ip = headers.get("X-Real-Ip") or forwarded or remote_ip
        stream = self._connection.detach()  # type: ignore[attr-defined]
        try:
            written = stream.write(_too_large_answer(self._limit))
        except tornado.iostream.StreamClosedError:
            return  # the client has gone: nothing to answer
        written.add_done_callback(lambda _: stream.close())
        _log_request(413, start_line.path, remote_ip, started, start_line.method)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._delegate.on_connection_close()


class PushHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's ``HTTPServer``, with the front (:class:`FrontConnection`) answering the
    publish routes of the ``Application`` it serves.

    Same arguments as ``HTTPServer``, and ``timeouts`` (:class:`HTTPTimeouts`,
    default ``HTTPTimeouts()``); Tornado's ``idle_connection_timeout`` and
    ``body_timeout`` still work, meaning what they mean to Tornado, in place
    of ``timeouts``.
    """

    def initialize(self, request_callback: Any, *,  # type: ignore[override]
                   timeouts: HTTPTimeouts | None = None, **kwargs: Any) -> None:
        tornados = (kwargs.pop("idle_connection_timeout", None), kwargs.pop("body_timeout", None))
        if timeouts is None:
            timeouts = HTTPTimeouts.of_tornado(*tornados)
        elif tornados != (None, None):
            raise TypeError("give timeouts or Tornado's idle_connection_timeout and "
                            "body_timeout, not both")
        self.timeouts = timeouts
        super().initialize(request_callback, idle_connection_timeout=timeouts.idle + timeouts.header,
                           body_timeout=timeouts.body, **kwargs)
        self.endpoints = (PublishEndpoints.of(request_callback)
                          if isinstance(request_callback, tornado.web.Application) else None)
        self._fronts: set[FrontConnection] = set()
        self.flusher = Flusher()
        self.answerer = _Answerer()
        #: Connections whose first bytes have not come yet, each with its idle timer.
        self._undecided: dict[tornado.iostream.IOStream, asyncio.TimerHandle] = {}

    def start_request(self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
                      ) -> tornado.httputil.HTTPMessageDelegate:
        return _BodyLimit(super().start_request(server_conn, request_conn), request_conn,
                          self.conn_params.max_body_size, self.xheaders)

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        if self.endpoints is None or isinstance(stream, tornado.iostream.SSLIOStream):
            return super().handle_stream(stream, address)
        # Wait for the first bytes before choosing, so that a WebSocket handshake
        # (most connections) goes to Tornado untouched, with no front made for it.
        loop = asyncio.get_running_loop()
        self._undecided[stream] = loop.call_later(self.timeouts.idle, self._drop_silent, stream)
        loop.add_reader(stream.socket.fileno(), self._choose, stream, address)

    def _choose(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        """A publishing connection (it starts with ``POST``) gets a front; any other is Tornado's."""
        try:
            first = stream.socket.recv(len(_POST), socket.MSG_PEEK)
        except BlockingIOError:
            return  # woken for nothing: wait on
        except OSError:
            first = b""  # Tornado meets the error itself
        self._decided(stream)
        if first and _POST.startswith(first):  # a client may send "PO" now, "ST /apps..." later
            front = FrontConnection(self, self.endpoints, stream, address)
            self._fronts.add(front)
            front.start()
        else:
            super().handle_stream(stream, address)

    def _decided(self, stream: tornado.iostream.IOStream) -> None:
        asyncio.get_running_loop().remove_reader(stream.socket.fileno())
        self._undecided.pop(stream).cancel()

    def _drop_silent(self, stream: tornado.iostream.IOStream) -> None:
        """Close a connection that sent nothing for the idle timeout."""
        self._decided(stream)
        stream.close()

    def hand_off(self, front: FrontConnection, stream: tornado.iostream.IOStream,
                 address: tuple) -> None:
        """Serve ``stream`` with Tornado's HTTP/1 connection from now on."""
        self._fronts.discard(front)
        super().handle_stream(stream, address)

    def forget(self, front: FrontConnection) -> None:
        self._fronts.discard(front)

    async def close_all_connections(self) -> None:
        for stream in list(self._undecided):
            self._drop_silent(stream)
        for front in list(self._fronts):
            front.close()
        await super().close_all_connections()


@dataclass(slots=True)
class _Request:
    """A publish the front answers."""

    uri: str
    endpoint: _Endpoint
    query: dict[str, str]
    body: bytes
    keep_alive: bool
    remote_ip: str
    started: float
    #: The app that signed it, once checked (for metrics).
    app: App | None = None


class _Head:
    """What httptools reports of a header block: the target, the length, anything
    unusual, and the client's address as a proxy gives it (for the access log)."""

    __slots__ = ("url", "length", "unusual", "forwarded_for")

    def __init__(self) -> None:
        self.url = b""
        self.length: bytes | None = None
        self.unusual = False
        self.forwarded_for: bytes | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.length = value
        elif name in _TORNADO_HEADERS:
            self.unusual = True
        elif name == b"x-real-ip" or (name == b"x-forwarded-for" and self.forwarded_for is None):
            self.forwarded_for = value.rsplit(b",", 1)[-1].strip()


class _NotOurs(Exception):
    """The request is Tornado's to answer."""


class FrontState(enum.Enum):
    SERVING = "serving"  # the front answers the requests
    DRAINING = "draining"  # handing off once the answers written have left
    HANDED_OFF = "handed off"  # the connection is Tornado's
    CLOSED = "closed"


class FrontConnection(asyncio.Protocol):
    """One client connection while the front answers its requests, one at a time, in order.

    The front reads through an asyncio transport on a duplicate of the
    socket, so that closing the transport at the hand-off leaves the
    original, and the IOStream Tornado made for it, untouched.
    """

    def __init__(self, server: PushHTTPServer, endpoints: PublishEndpoints,
                 stream: tornado.iostream.IOStream, address: tuple) -> None:
        self._server = server
        self._endpoints = endpoints
        self._stream = stream
        self._address = address
        # What Tornado's HTTP/1 server calls the peer (a Unix socket's address is "").
        inet = stream.socket.family in (socket.AF_INET, socket.AF_INET6)
        self._peer_ip = address[0] if inet and address else "0.0.0.0"
        params = server.conn_params
        self._max_header_bytes = params.max_header_size or _MAX_HEADER_BYTES
        self._max_body_bytes = params.max_body_size or stream.max_buffer_size
        self._timeouts = server.timeouts
        self._keep_alive_allowed = not params.no_keep_alive
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.state = FrontState.SERVING
        self._starting: asyncio.Task[None] | None = None
        #: The request being answered: queued (_QUEUED), or the task answering it.
        self._answering: asyncio.Task[None] | object | None = None
        self._writing_paused = False
        #: Answers written at the end of this loop iteration (write_queued).
        self._queued: list[bytes] = []
        # Loop times: when the connection became ready for the request being read
        # (see HTTPTimeouts), and when that request's head was complete.
        self._ready_at = 0.0
        self._head_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._starting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        if self.state is FrontState.CLOSED:  # closed before its turn came
            return
        duplicate = None
        try:
            duplicate = self._stream.socket.dup()
            await asyncio.get_running_loop().connect_accepted_socket(lambda: self, duplicate)
        except OSError:  # out of descriptors, or the client already left
            if duplicate is not None:
                duplicate.close()
            self._closed()
        self._starting = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self.state is FrontState.CLOSED:  # closed while its transport was being made
            transport.close()
            return
        self._ready_at = asyncio.get_running_loop().time()
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._answering is None:
            self._serve_buffered()
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.state is not FrontState.HANDED_OFF:  # else only the duplicate closed
            self._closed()

    def _closed(self) -> None:
        """The connection is over: close the socket Tornado accepted too."""
        self.state = FrontState.CLOSED
        self._stream.close()
        self._server.forget(self)

    def pause_writing(self) -> None:
        # A client that sends requests without reading answers: stop reading too.
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.state is FrontState.DRAINING:
            self._finish_hand_off()
        else:
            self._update_reading()

    def _update_reading(self) -> None:
        """Read while the client takes its answers and the buffer holds no more than
        a request of the largest size, or, while one is answered, the read-ahead."""
        if self.state is not FrontState.SERVING:
            return
        limit = (_READ_AHEAD_BYTES if self._answering is not None
                 else self._max_header_bytes + self._max_body_bytes)
        if len(self._buffer) > limit or self._writing_paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (flushing what was written), unless it is Tornado's now."""
        if self.state in (FrontState.HANDED_OFF, FrontState.CLOSED):
            return
        if self._transport is None:  # still being made: connection_made closes it
            self._closed()
        else:
            self.write_queued()
            self._transport.close()

    # -- requests --------------------------------------------------------------------------

    def _serve_buffered(self) -> None:
        """Answer the next complete request in the buffer, or hand the connection to Tornado."""
        if self.state is not FrontState.SERVING:
            return
        try:
            request = self._take_request()
        except _NotOurs:
            return self._hand_off()
        if request is not None:
            if request.endpoint.hub.in_process:  # answered with the others read meanwhile
                self._answering = _QUEUED
                self._server.answerer.add(self, request)
            else:  # the engine's I/O may need a task (asyncio.timeout does)
                self._answering = asyncio.ensure_future(self._answer(request))

    def _take_request(self) -> _Request | None:
        """The first buffered request, once complete; None while bytes are missing.

        Raises :class:`_NotOurs` for a request Tornado should answer.
        """
        buffer = self._buffer
        if not buffer.startswith(b"POST /"[:len(buffer)]):
            raise _NotOurs  # a WebSocket handshake, most often: no need to parse it
        end = buffer.find(b"\r\n\r\n", 0, self._max_header_bytes)
        if end < 0:
            if len(buffer) >= self._max_header_bytes:
                raise _NotOurs
            return None
        head_end = end + 4
        head = _Head()
        parser = httptools.HttpRequestParser(head)
        try:
            parser.feed_data(bytes(buffer[:head_end]))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            raise _NotOurs from None
        if (head.unusual or head.length is None or parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"):
            raise _NotOurs
        length = int(head.length)  # llhttp accepts digits only
        if length > self._max_body_bytes:
            raise _NotOurs  # Tornado's side answers it 413 (_BodyLimit), unread
        if len(buffer) < head_end + length:
            if self._head_at is None:  # the body's time starts
                self._head_at = asyncio.get_running_loop().time()
                self._arm()
            return None
        request = self._publish_request(head, bytes(buffer[head_end:head_end + length]),
                                        parser.should_keep_alive())
        del buffer[:head_end + length]
        return request

    def _publish_request(self, head: _Head, body: bytes, keep_alive: bool) -> _Request:
        uri = head.url.decode("latin-1")  # as Tornado decodes the start line
        path, _, query = uri.partition("?")
        endpoint = self._endpoints.match(path)
        if endpoint is None or not _PLAIN_QUERY.fullmatch(query):
            raise _NotOurs
        arguments = dict(part.partition("=")[::2] for part in query.split("&") if part)
        return _Request(uri, endpoint, arguments, body, keep_alive and self._keep_alive_allowed,
                        self._remote_ip(head), time.perf_counter())

    def _remote_ip(self, head: _Head) -> str:
        # Like Tornado with xheaders: X-Real-Ip, else the last X-Forwarded-For.
        forwarded = head.forwarded_for if self._server.xheaders else None
        return forwarded.decode("latin-1") if forwarded else self._peer_ip

    def start_answer(self, request: _Request) -> None:
        """Answer ``request`` (:class:`_Answerer`) within this call, unless the engine waits:
        then a task answers it."""
        # Its own context: what authenticate names for the log lines (logjson.about)
        # must not stay for the next request.
        waiting = _start_eagerly(self._answer(request), contextvars.copy_context())
        if waiting is not None:
            self._answering = waiting

    async def _answer(self, request: _Request) -> None:
        in_flight = request.endpoint.in_flight
        in_flight.enter()
        try:
            status, value = 200, await self._publish(request)
        except Exception as error:  # noqa: BLE001  (every failure is answered, as Tornado does)
            status, value = self._failure(request, error)
        finally:
            in_flight.leave()
        self._write_answer(request, status, json.dumps(value).encode() if value else _EMPTY_JSON)

    @staticmethod
    async def _publish(request: _Request) -> dict[str, Any]:
        endpoint = request.endpoint
        app = request.app = api.authenticate(endpoint.hub, endpoint.app_id, "POST",
                                             endpoint.signed_path, request.query, request.body)
        return await endpoint.publish(endpoint.hub, app, request.body)

    def _failure(self, request: _Request, error: Exception) -> tuple[int, dict[str, str]]:
        refused = api.refusal(error)
        if refused is None:
            log.error("Uncaught exception POST %s (%s)", request.uri, request.remote_ip,
                      exc_info=error)
            return 500, {"error": "Internal Server Error"}
        status, message = refused
        log.info("POST %s refused: %s", request.uri.partition("?")[0], message)
        return status, {"error": message}

    def _write_answer(self, request: _Request, status: int, body: bytes) -> None:
        self._answering = None
        self._ready_at, self._head_at = asyncio.get_running_loop().time(), None
        observers = request.endpoint.hub.observers
        if observers:  # told even if the client has gone, as Tornado's on_finish is
            observers.http_answered(request.app, request.endpoint.name, status,
                                    time.perf_counter() - request.started)
        if self.state is not FrontState.SERVING:
            return
        self._arm()
        answer = _answer_bytes(status, body, request.keep_alive)
        _log_request(status, request.uri, request.remote_ip, request.started)
        if not request.keep_alive:
            self.write_queued()
            self._transport.write(answer)
            self._transport.close()
            return
        if not self._queued:
            self._server.flusher.mark(self)
        self._queued.append(answer)
        if self._buffer:
            self._serve_buffered()
        self._update_reading()

    def write_queued(self) -> None:
        """Write the keep-alive answers queued this loop iteration (``Flushable``).

        The server's :class:`~.outbound.Flusher` calls it once per iteration for
        every connection that queued one, after all of them were made: the sends
        then come together rather than between publishes, which took a seventh
        off the CPU time of a publish (docs/benchmarks.md). An answer that closes
        the connection is written at once, after any queued before it; so are
        queued ones before a hand-off or a close.
        """
        queued, self._queued = self._queued, []
        if queued and not self._transport.is_closing():
            self._transport.write(queued[0] if len(queued) == 1 else b"".join(queued))

    def abort(self) -> None:
        self._transport.abort()

    # -- hand-off and deadlines ------------------------------------------------------------

    def _hand_off(self) -> None:
        """Give the connection, with every byte not answered, to Tornado's HTTP/1 server."""
        self.write_queued()
        self._transport.pause_reading()
        self.state = FrontState.DRAINING
        if self._transport.get_write_buffer_size():
            # Answers written before must reach the client first: resume_writing
            # finishes the hand-off once the buffer is empty.
            self._transport.set_write_buffer_limits(high=0)
            return
        self._finish_hand_off()

    def _finish_hand_off(self) -> None:
        self.state = FrontState.HANDED_OFF
        self._transport.abort()  # closes the duplicate socket only, unread bytes stay queued
        self._stream.set_nodelay(False)  # asyncio turned it on; Tornado starts with it off
        preload(self._stream, bytes(self._buffer))
        self._buffer = bytearray()
        self._server.hand_off(self, self._stream, self._address)

    def _deadline(self) -> float | None:
        """When the request being read must be complete to go on (see :class:`HTTPTimeouts`);
        None while one is answered, which takes what the engine takes."""
        if self._answering is not None:
            return None
        timeouts = self._timeouts
        if self._head_at is not None:
            return self._head_at + timeouts.body
        if self._buffer:
            return self._ready_at + timeouts.idle + timeouts.header
        return self._ready_at + timeouts.idle

    def _arm(self) -> None:
        """Have the timer fire by the current deadline (none while an answer is awaited).

        A timer that fires first is kept: :meth:`_check_time` sets the next one
        then. Deadlines move later with each request on a keep-alive connection,
        so its timer fires about once per idle timeout, not once per request.
        """
        deadline = self._deadline()
        timer = self._timer
        if deadline is None or (timer is not None and timer.when() <= deadline):
            return
        if timer is not None:
            timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._check_time)

    def _check_time(self) -> None:
        """Close a connection past its deadline, as Tornado's HTTP/1 server does;
        bytes that came meanwhile may have moved the deadline on."""
        self._timer = None
        deadline = self._deadline()
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            self.close()
        else:
            self._arm()


#: What FrontConnection._answering holds while its request waits for the answerer.
_QUEUED = object()


class _Answerer:
    """Answers the publishes the fronts read in one loop iteration, together, after reading,
    on an engine in this process (``Hub.in_process``).

    The loop reads every connection, then the publishes run one after
    another, then the answers are written (:meth:`FrontConnection.write_queued`):
    each kind of work done in a row, and no task per request, which a publish
    that waits on nothing does not need. Measured: a tenth off the CPU time of a
    publish; a task per request answered in its read callback instead cost more
    than the tasks (docs/benchmarks.md).
    """

    def __init__(self) -> None:
        self._requests: list[tuple[FrontConnection, _Request]] = []

    def add(self, front: FrontConnection, request: _Request) -> None:
        if not self._requests:
            asyncio.get_running_loop().call_soon(self._answer_all)
        self._requests.append((front, request))

    def _answer_all(self) -> None:
        requests, self._requests = self._requests, []
        for front, request in requests:
            front.start_answer(request)


def _start_eagerly(coroutine: Coroutine[Any, None, None],
                   context: contextvars.Context) -> asyncio.Task[None] | None:
    """Run ``coroutine`` now, in ``context``, up to its first wait: None if it finished
    without waiting, else the task that runs the rest of it, in the same context.

    What ``asyncio.eager_task_factory`` (Python 3.12) does, for one coroutine.
    Exceptions out of its first part propagate.
    """
    try:
        waited = context.run(coroutine.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coroutine, waited), context=context)


async def _resume(coroutine: Coroutine[Any, None, None], waited: Any) -> None:
    """The rest of a coroutine that waited on ``waited``, as if awaited from here; its
    log lines stay about what its first part named (:func:`logjson.adopt`)."""
    logjson.adopt()
    await _Resumed(coroutine, waited)


class _Resumed:
    """``await`` on a coroutine already started: what ``yield from`` does, from its wait on."""

    def __init__(self, coroutine: Coroutine[Any, None, None], waited: Any) -> None:
        self._coroutine = coroutine
        self._waited = waited

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waited = self._coroutine, self._waited
        while True:
            try:
                sent = yield waited
            except BaseException as error:  # cancellation included, passed on as yield from does
                step, value = coroutine.throw, error
            else:
                step, value = coroutine.send, sent
            try:
                waited = step(value)
            except StopIteration:
                return


def _too_large_answer(limit: int) -> bytes:
    """413 with a JSON body, closing the connection (its body is left unread)."""
    message = f"Request body is over {limit} bytes"
    return _answer_bytes(413, json.dumps({"error": message}).encode(), keep_alive=False)


#: The body of most answers (a publish that asked for no ``info``).
_EMPTY_JSON = b"{}"


def _answer_bytes(status: int, body: bytes, keep_alive: bool) -> bytes:
    """A JSON answer with the headers, in the order, that Tornado's ``JsonHandler`` sends.

    The last answer made is kept for the rest of its second (its ``Date``):
    under load, most answers are the same ``200 {}``.
    """
    global _last_answer
    now = int(time.time())
    if _last_answer[:4] == (now, status, keep_alive, body):
        return _last_answer[4]
    reason = tornado.httputil.responses.get(status, "Unknown")
    close = "" if keep_alive else "Connection: close\r\n"
    answer = (f"HTTP/1.1 {status} {reason}\r\nServer: TornadoServer/{tornado.version}\r\n"
              f"Content-Type: application/json; charset=UTF-8\r\n"
              f"Date: {email.utils.formatdate(now, usegmt=True)}\r\n"
              f"Content-Length: {len(body)}\r\n{close}\r\n").encode("latin-1") + body
    _last_answer = (now, status, keep_alive, body, answer)
    return answer


#: (second, status, keep-alive, body, the answer's bytes) of the last answer made.
_last_answer: tuple[int, int, bool, bytes, bytes] = (0, 0, False, b"", b"")


def _log_request(status: int, uri: str, remote_ip: str, started: float,
                 method: str = "POST") -> None:
    """The line Tornado's ``Application.log_request`` writes for a request."""
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        elapsed = 1000.0 * (time.perf_counter() - started)
        access_log.log(level, "%d %s %s (%s) %.2fms", status, method, uri, remote_ip, elapsed)


