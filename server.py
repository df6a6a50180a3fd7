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
import gc
import logging
import signal
import ssl
import sys
from pathlib import Path

import tornado.httpserver
import tornado.web

from .embed import Push
from .handlers import demo
from .handlers.front import PushHTTPServer
from .pubsub import logjson, lograte
from .settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: What is served at / with the demo off: the index and what it loads.
_INDEX_FILES = r"/(|index\.html|demo\.css|demo\.js|push\.js)"


def make_application(push: Push) -> tornado.web.Application:
    """The Tornado application: the push routes, the demo endpoints and the static pages.

    With the demo on, every file of ``static/`` is served and the demo
    endpoints answer; with it off, only the index page and what it loads,
    and ``/demo/config`` tells the index to say that the demos are off.
    """
    settings = push.settings
    # The admin console serves its own files (its routes come first, under its CSP).
    pages = r"/(?!admin)(.*)" if settings.demo else _INDEX_FILES
    static = [(pages, tornado.web.StaticFileHandler,
               {"path": str(STATIC_DIR), "default_filename": "index.html"})]
    demo_routes = demo.routes(push.hub, settings.demo_app if settings.demo else None)
    return tornado.web.Application(push.routes() + demo_routes + static)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Tornado's own TLS, for deployments without nginx in front."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def tune_gc(threshold: int) -> None:
    """Keep garbage-collection pauses out of delivery latency.

    A young collection promotes whatever happens to be alive at that moment
    (requests and frames in flight). With Python's threshold of 700 that is
    often enough, at thousands of deliveries a second, to trigger a full
    collection every second or so, and a full collection walks every
    connection's objects: 65-150 ms at 1,000 connections, collecting nothing
    (bench/broadcast.py --gc-pauses). A larger threshold promotes far less;
    objects alive at startup (modules, the application) are frozen so no full
    collection walks them again.
    """
    gc.collect()
    gc.freeze()
    if threshold > 0:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


async def serve(settings: Settings) -> None:
    """Listen until SIGINT or SIGTERM, then drain (see :func:`drain`); SIGHUP reloads the
    apps (see :func:`reload_apps`)."""
    push = Push.from_settings(settings)
    await push.start()
    application = make_application(push)
    tune_gc(settings.gc_threshold)
    tls = tls_context(settings)
    server = PushHTTPServer(application, ssl_options=tls, max_body_size=settings.max_body_bytes,
                            xheaders=settings.xheaders, timeouts=settings.http_timeouts)
    server.listen(settings.port, address=settings.host)
    log.info("listening on %s://%s:%d with %d app(s), node %d, %s",
             "https" if tls else "http", settings.host, settings.port, len(settings.apps),
             push.hub.node_id, "in-process broker" if settings.redis is None else "Redis broker")
    ticker = demo.MonitorTicker(push.hub, settings.demo_app) if settings.demo else None
    if ticker is not None:
        ticker.start()
        log.info("demo pages on at / (PUSH_DEMO=false turns them off)")
    stop = asyncio.Event()
    push.on_drain_request = stop.set  # the admin console's "drain node": as on SIGTERM
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_apps, push)
    await stop.wait()
    if ticker is not None:
        ticker.stop()
    try:
        await asyncio.wait_for(drain(settings, server, push), settings.drain_timeout)
    except asyncio.TimeoutError:
        log.warning("drain took over %g s: exiting anyway", settings.drain_timeout)


def reload_apps(push: Push) -> None:
    """On SIGHUP: serve the apps the configuration gives now (``PUSH_APPS_FILE`` read
    again). A configuration that does not validate changes nothing, and the log says why."""
    try:
        changes = push.reload_apps(load_settings().apps)
    except ValueError as error:  # SettingsError included
        log.error("apps not reloaded, the running ones stay as they were: %s", error)
        return
    log.info("apps reloaded: %s added, %s changed, %s removed",
             *(", ".join(app.id for app in apps) or "none"
               for apps in (changes.added, changes.changed, changes.removed)))


async def drain(settings: Settings, server: tornado.httpserver.HTTPServer, push: Push) -> None:
    """Stop gracefully: clients reconnect elsewhere at once and nobody sees them leave.

    New connections are refused and ``/ready`` turns false; every client is
    closed with 4200 so pusher-js reconnects at once (through nginx, to
    another process); HTTP API requests in flight finish; the closed clients'
    presence is kept for ``drain_grace`` seconds before it is given up.
    """
    log.info("draining: closing connections with 4200 so clients reconnect elsewhere")
    server.stop()
    await push.close(settings.drain_grace)  # waits for the held departures
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
    # Every logger's records (ours, Tornado's, asyncio's) reach these handlers.
    lograte.limit(logging.getLogger().handlers)
    logjson.install(logging.getLogger().handlers, json_lines=settings.log_format == "json")
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
