"""Run the push server: one process, on the embedded default unless configured otherwise.

    python server.py [--host 127.0.0.1] [--port 6001]

Configuration comes from the environment (see ``settings.py``).
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:
    # `python server.py` in a checkout: run this file as part of the package.
    import checkout

    checkout.load()
    from tornado_push.server import main

    raise SystemExit(main())

import argparse
import asyncio
import logging
import signal
import ssl
import sys
from pathlib import Path

import tornado.httpclient
import tornado.httpserver
import tornado.web

from .handlers import routes
from .handlers.health import InFlightRequests
from .pubsub.apps import AppRegistry
from .pubsub.history import HistoryStore, MemoryHistoryStore
from .pubsub.history.mongo import MongoHistoryStore
from .pubsub.history.redis import RedisHistoryStore
from .pubsub.hub import Hub
from .pubsub.redis.broker import RedisBroker
from .pubsub.redis.client import connect
from .pubsub.redis.state import RedisState
from .pubsub.webhooks import Poster, Webhooks
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"


def make_poster(timeout: float) -> Poster:
    """Webhook POSTs with Tornado's HTTP client: the status, or OSError when there is none."""

    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        # The client is per IOLoop, so look it up on the loop that posts.
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            response = await client.fetch(url, method="POST", body=body, headers=headers,
                                          request_timeout=timeout, follow_redirects=False,
                                          raise_error=False)
        except tornado.httpclient.HTTPClientError as error:  # timeouts: 599, no response
            raise OSError(f"{url}: {error}") from error
        return response.code

    return post


def make_hub(settings: Settings) -> Hub:
    """The engine for these settings: in-process by default, Redis when configured."""
    webhooks = Webhooks(make_poster(settings.webhooks.timeout), options=settings.webhooks)
    apps = AppRegistry(settings.apps)
    history = make_history_store(settings)
    if settings.redis is None:
        return Hub(apps, options=settings.hub, webhooks=webhooks, history=history)
    broker = RedisBroker(settings.redis)
    state = RedisState(connect(settings.redis), prefix=settings.redis.prefix,
                       heartbeat_interval=settings.redis.heartbeat_interval)
    hub = Hub(apps, broker=broker, state=state, options=settings.hub, webhooks=webhooks,
              history=history)
    # Redis may have restarted empty: put this process's connections back.
    broker.add_reconnect_listener(hub.register_again)
    # Pub/sub dropped what was published meanwhile: history channels read it from the store.
    broker.add_reconnect_listener(hub.resync_history)
    return hub


def make_history_store(settings: Settings) -> HistoryStore:
    """Where history lives: MongoDB when configured, else Redis when configured, else memory."""
    if settings.mongo_url is not None:
        return MongoHistoryStore(settings.mongo_url, database_name=settings.mongo_database)
    if settings.redis is not None:
        return RedisHistoryStore(connect(settings.redis), prefix=settings.redis.prefix)
    return MemoryHistoryStore()


def make_application(settings: Settings, hub: Hub,
                     in_flight: InFlightRequests | None = None) -> tornado.web.Application:
    """The Tornado application with the push routes and the static pages."""
    static = [(r"/()", tornado.web.StaticFileHandler,
               {"path": str(STATIC_DIR), "default_filename": "index.html"})]
    return tornado.web.Application(
        routes(hub, in_flight, compression=settings.websocket_compression) + static,
        websocket_max_message_size=settings.max_message_bytes,
    )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Tornado's own TLS, for deployments without nginx in front."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def serve(settings: Settings) -> None:
    """Listen until SIGINT or SIGTERM, then drain (see :func:`drain`)."""
    hub = make_hub(settings)
    await hub.start()
    in_flight = InFlightRequests()
    application = make_application(settings, hub, in_flight)
    tls = tls_context(settings)
    server = application.listen(settings.port, address=settings.host, ssl_options=tls,
                                max_body_size=settings.max_body_bytes, xheaders=settings.xheaders)
    log.info("listening on %s://%s:%d with %d app(s), node %d, %s",
             "https" if tls else "http", settings.host, settings.port, len(settings.apps),
             hub.node_id, "in-process broker" if settings.redis is None else "Redis broker")
    if settings.uses_default_secret:
        log.warning("an app uses the well-known default secret: set PUSH_APP_SECRET in production")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    try:
        await asyncio.wait_for(drain(settings, server, hub, in_flight), settings.drain_timeout)
    except asyncio.TimeoutError:
        log.warning("drain took over %g s: exiting anyway", settings.drain_timeout)


async def drain(settings: Settings, server: tornado.httpserver.HTTPServer, hub: Hub,
                in_flight: InFlightRequests) -> None:
    """Stop gracefully: clients reconnect elsewhere at once and nobody sees them leave.

    New connections are refused and ``/ready`` turns false; every client is
    closed with 4200 so pusher-js reconnects at once (through nginx, to
    another process); HTTP API requests in flight finish; the closed clients'
    presence is kept for ``drain_grace`` seconds before it is given up.
    """
    log.info("draining: closing connections with 4200 so clients reconnect elsewhere")
    server.stop()
    hub.drain(settings.drain_grace)
    await in_flight.idle()
    await hub.close()  # waits for the held departures
    log.info("drained")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pusher protocol 7 push server")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1, or PUSH_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default 6001, or PUSH_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(host=args.host, port=args.port)
    except SettingsError as error:
        print(f"server.py: invalid setting: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
