"""Real headless Chromium for the page tests, driven by Playwright's async API.

Debian's ``chromium`` (``scripts/test`` installs it with apt); Playwright never
downloads a browser here. Playwright runs on the test's own event loop (the
one pytest-tornado gives each test), beside any in-process server, so nothing
blocks and no second loop exists.

Fixture (a pytest plugin: ``pytest_plugins = ["browser"]``):
    browser   ``page = await browser.open(url, PHONE, "alice")``: a page in a context of
              its own (own storage, like another device); every console error and
              uncaught exception of every page is kept for :meth:`Browser.assert_no_errors`

:class:`PageHandler` serves a test's own page from a Tornado app.

``cable = await Cable.attach(page)`` routes the page's push WebSockets through
Playwright, so a test can lose the network under a page and give it back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import tornado.web
from playwright.async_api import BrowserContext, Page, Playwright, WebSocketRoute, async_playwright

CHROMIUM = "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
#: Screenshots land here (gitignored), for people to look at after a run.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class Browser:
    """One Chromium; each :meth:`open` is a new context, as if on another device."""

    def __init__(self, playwright: Playwright) -> None:
        self._playwright = playwright
        self._chromium: Any = None
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    async def start(self) -> Browser:
        self._chromium = await self._playwright.chromium.launch(executable_path=CHROMIUM)
        return self

    async def open(self, url: str, viewport: dict[str, int] = DESKTOP, name: str = "page",
                   **context_options: Any) -> Page:
        """A page showing ``url``; its console errors and page errors go to :attr:`errors`.

        ``context_options`` go to Playwright's ``new_context`` (e.g.
        ``ignore_https_errors=True`` for a test certificate)."""
        context = await self._chromium.new_context(viewport=viewport, **context_options)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("console", lambda message: message.type == "error"
                and self.errors.append(f"{name}: console: {message.text}"))
        page.on("pageerror", lambda error: self.errors.append(f"{name}: page error: {error}"))
        await page.goto(url)
        return page

    async def screenshot(self, page: Page, name: str) -> Path:
        """Save a full-page PNG under ``test-artifacts/``."""
        path = ARTIFACTS / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(path), full_page=True)
        return path

    def assert_no_errors(self) -> None:
        assert not self.errors, "the pages reported errors:\n" + "\n".join(self.errors)

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        if self._chromium is not None:
            await self._chromium.close()


class Cable:
    """A page's connections to the push server, through Playwright's WebSocket routing.

    Plugged in, each connection is passed on to the server untouched. Unplugged,
    a new connection is closed at once (1006, as when the network is down), so
    the page keeps retrying and nothing reaches the server: what is published
    meanwhile is what the page missed. No real socket fails, so the browser logs
    no console error for it.
    """

    #: The close code a browser reports for a connection lost without a close frame.
    LOST = 1006

    def __init__(self) -> None:
        self.plugged = True
        #: Connections the page opened while unplugged (each closed at once).
        self.refused = 0
        self._sockets: list[WebSocketRoute] = []

    @classmethod
    async def attach(cls, page: Page) -> Cable:
        """Route ``page``'s connections to ``/app/{key}`` from now on."""
        cable = cls()
        await page.route_web_socket(re.compile(r"/app/[^/?]+"), cable._route)
        return cable

    async def _route(self, socket: WebSocketRoute) -> None:
        if not self.plugged:
            self.refused += 1
            await socket.close(code=self.LOST, reason="network down")
            return
        socket.connect_to_server()
        self._sockets.append(socket)

    def unplug(self) -> None:
        """Refuse new connections; open ones stay until they close or :meth:`cut`."""
        self.plugged = False

    async def cut(self) -> None:
        """Lose every open connection (the server's side closes too) and refuse new ones."""
        self.unplug()
        while self._sockets:
            await self._sockets.pop().close(code=self.LOST, reason="network down")

    def plug(self) -> None:
        self.plugged = True

    def inject(self, frame: dict[str, Any]) -> None:
        """Hand ``frame`` to the page on its newest connection, as if the server sent it."""
        self._sockets[-1].send(json.dumps(frame))


class PageHandler(tornado.web.RequestHandler):
    """Serves one fixed HTML page: ``(r"/page", PageHandler, {"html": PAGE})``."""

    def initialize(self, html: str) -> None:
        self.html = html

    def get(self) -> None:
        self.finish(self.html)


@pytest.fixture
def browser(io_loop) -> Iterator[Browser]:
    playwright = io_loop.run_sync(async_playwright().start)
    browser = io_loop.run_sync(Browser(playwright).start)
    yield browser
    io_loop.run_sync(browser.close)
    io_loop.run_sync(playwright.stop)
