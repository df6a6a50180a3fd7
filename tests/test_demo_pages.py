"""The demo pages at ``/`` in real headless Chromium, against ``python server.py`` as a user runs it.

The server runs with no setting at all, so these also show that the embedded
default turns the demos on, and the history of the chat rooms with them (one
test, which drops connections from the hub, serves the same application
in-process instead; the chat tests take the network away with a :class:`Cable`). Each test drives pages at phone and desktop sizes,
saves their screenshots under ``test-artifacts/demo/``, and fails on any
console error or uncaught exception. Every wait is on an event in the page
(Playwright's ``expect`` polls the DOM until it holds or times out).
"""

from __future__ import annotations

import pytest
import tornado.web
from playwright.async_api import Page, expect

from browser import DESKTOP, PHONE, Browser, Cable
from conftest import MAIN
from redis_server import free_port
from server_processes import ServerProcess
from tornado_push.handlers.demo import MonitorTicker
from tornado_push.pubsub.errors import ErrorCode
from tornado_push.pubsub.hub import Hub
from tornado_push.embed import Push
from tornado_push.server import make_application
from tornado_push.settings import Settings


@pytest.fixture
def demo_url(io_loop) -> str:
    """The base URL of a ``python server.py`` started with the embedded default."""
    server = io_loop.run_sync(ServerProcess(free_port(), {}, name="demo server").start)
    yield f"http://127.0.0.1:{server.port}"
    io_loop.run_sync(server.terminate)


@pytest.fixture
def app(hub: Hub) -> tornado.web.Application:
    """The application ``python server.py`` serves with the demo on, for in-process tests."""
    return make_application(Push.from_settings(Settings(apps=(MAIN,), demo=True), hub))


async def join_chat(page: Page, name: str, room: str) -> None:
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Room").fill(room)
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator(".state")).to_have_attribute("data-state", "connected")
    await expect(page.locator("#members li.me")).to_have_text(f"{name} (you)")


async def send_chat(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()


@pytest.mark.gen_test(timeout=60)
async def test_chat_room_shows_members_messages_typing_and_leaving(demo_url, browser: Browser):
    alice = await browser.open(f"{demo_url}/chat.html", PHONE, "alice")
    await join_chat(alice, "Alice", "tea")
    bob = await browser.open(f"{demo_url}/chat.html?room=tea", DESKTOP, "bob")
    await join_chat(bob, "Bob", "tea")

    for page in (alice, bob):
        await expect(page.locator("#members li")).to_have_text(
            ["Alice (you)", "Bob"] if page is alice else ["Alice", "Bob (you)"], use_inner_text=True)
        await expect(page.locator("#count")).to_have_text("2")
    await expect(alice.locator(".messages .notice").last).to_have_text("Bob joined")

    await bob.get_by_label("Message").press_sequentially("Hel")
    await expect(alice.locator("#typing")).to_have_text("Bob is typing…")
    await send_chat(bob, "Hello Alice")
    await send_chat(alice, "Hi Bob")
    for page in (alice, bob):  # each message once, in order, on both pages, the sender's included
        await expect(page.locator(".messages .text")).to_have_text(["Hello Alice", "Hi Bob"])
        await expect(page.locator(".messages .who")).to_have_text(["Bob", "Alice"])
    await expect(alice.locator("#typing")).to_have_text("")
    await expect(bob.locator(".messages li.mine")).to_have_count(1)

    await browser.screenshot(alice, "demo/chat-phone")
    await browser.screenshot(bob, "demo/chat-desktop")
    await bob.context.close()
    await expect(alice.locator("#members li")).to_have_text(["Alice (you)"])
    await expect(alice.locator("#count")).to_have_text("1")
    await expect(alice.locator(".messages .notice").last).to_have_text("Bob left")
    browser.assert_no_errors()


async def send_chats(page: Page, *texts: str) -> None:
    """Send each text once the one before has been shown, as a person would."""
    for text in texts:
        await send_chat(page, text)
        await expect(page.locator(".messages .text").last).to_have_text(text)


@pytest.mark.gen_test(timeout=60)
async def test_chat_page_joining_a_room_shows_its_recent_messages_first(demo_url, browser: Browser):
    alice = await browser.open(f"{demo_url}/chat.html", DESKTOP, "alice")
    await join_chat(alice, "Alice", "pier")
    await send_chats(alice, "First", "Second")
    bob = await browser.open(f"{demo_url}/chat.html?room=pier", PHONE, "bob")
    await join_chat(bob, "Bob", "pier")
    await expect(bob.locator(".messages .text")).to_have_text(["First", "Second"])
    await send_chats(alice, "Third")
    await expect(bob.locator(".messages .text")).to_have_text(["First", "Second", "Third"])
    await expect(bob.locator(".messages li").nth(2)).to_have_text("You joined pier as Bob")
    await browser.screenshot(bob, "demo/chat-recent-phone")
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_chat_page_back_from_a_lost_connection_shows_what_it_missed_once_each(
        demo_url, browser: Browser):
    alice = await browser.open(f"{demo_url}/chat.html", PHONE, "alice")
    cable = await Cable.attach(alice)
    await join_chat(alice, "Alice", "dock")
    bob = await browser.open(f"{demo_url}/chat.html?room=dock", DESKTOP, "bob")
    await join_chat(bob, "Bob", "dock")
    await send_chats(bob, "Before")
    await expect(alice.locator(".messages .text")).to_have_text(["Before"])

    await cable.cut()
    await expect(alice.locator(".state")).to_have_attribute("data-state", "reconnecting")
    await send_chats(bob, "While you were away", "Still away")
    cable.plug()
    await expect(alice.locator(".state")).to_have_attribute("data-state", "connected")
    await send_chats(bob, "Welcome back")
    await expect(alice.locator(".messages .text")).to_have_text(
        ["Before", "While you were away", "Still away", "Welcome back"])
    await expect(alice.locator(".messages .notice", has_text="could not be recovered")).to_have_count(0)
    await browser.screenshot(alice, "demo/chat-resumed-phone")
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_chat_page_says_so_when_what_it_missed_cannot_be_recovered(io_loop, browser: Browser):
    port = free_port()
    server = await ServerProcess(port, {}, name="demo server").start()
    try:
        alice = await browser.open(f"http://127.0.0.1:{port}/chat.html", PHONE, "alice")
        cable = await Cable.attach(alice)
        await join_chat(alice, "Alice", "dock")
        await cable.cut()
        await server.kill()  # its history was in memory: the restarted server has a new epoch
        server = await ServerProcess(port, {}, name="restarted demo server").start()
        cable.plug()
        await expect(alice.locator(".messages .notice").last).to_have_text(
            "Messages sent while you were offline could not be recovered")
        await expect(alice.locator(".state")).to_have_attribute("data-state", "connected")
        await browser.screenshot(alice, "demo/chat-not-recovered-phone")
        browser.assert_no_errors()
    finally:
        await server.terminate()


async def charted(page: Page, figure: str, points: int) -> str:
    """The chart of ``figure`` once it holds ``points`` points or more (checked every frame)."""
    tile = f'[data-figure="{figure}"]'
    await page.wait_for_function(f"document.querySelector('{tile}').dataset.points >= {points}")
    return await page.locator(f"{tile} path").get_attribute("d")


@pytest.mark.gen_test(timeout=60)
async def test_monitor_charts_move_with_each_push(demo_url, browser: Browser):
    phone = await browser.open(f"{demo_url}/monitor.html", PHONE, "phone")
    await expect(phone.locator(".state")).to_have_attribute("data-state", "connected")
    drawn = await charted(phone, "messages_per_second", 2)
    assert drawn.startswith("M0.0 ") and " L300.0 " in drawn
    await phone.wait_for_function(  # the next push moves the line
        "drawn => document.querySelector('[data-figure=messages_per_second] path')"
        ".getAttribute('d') !== drawn", arg=drawn)

    desktop = await browser.open(f"{demo_url}/monitor.html", DESKTOP, "desktop")
    for page in (phone, desktop):  # real figures: both pages are connected and watching
        await expect(page.locator("#source")).to_contain_text("2 watching")
        await expect(page.locator('[data-figure="connections"] .value')).to_have_text("2")
    await charted(desktop, "connections", 3)
    rss = await desktop.locator('[data-figure="rss_mb"] .value').inner_text()
    assert float(rss) > 1
    await browser.screenshot(phone, "demo/monitor-phone")
    await browser.screenshot(desktop, "demo/monitor-desktop")
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_page_shows_reconnecting_then_gets_figures_again_after_a_drop(hub, server_port, browser):
    ticker = MonitorTicker(hub, MAIN, interval=0.2)
    ticker.start()
    try:
        page = await browser.open(f"http://127.0.0.1:{server_port}/monitor.html", PHONE, "monitor")
        badge = page.locator(".state")
        await expect(badge).to_have_attribute("data-state", "connected")
        await charted(page, "connections", 1)
        hub.close_all(ErrorCode.OVER_CAPACITY, "Over capacity: retry later")  # 4100: back off
        await page.wait_for_function("document.querySelector('.state').dataset.state === 'reconnecting'")
        assert (await badge.inner_text()).startswith("Reconnecting…")
        await expect(badge).to_have_attribute("data-state", "connected")
        points = int(await page.locator('[data-figure="connections"]').get_attribute("data-points"))
        await charted(page, "connections", points + 2)  # subscribed again: the figures flow
    finally:
        ticker.stop()
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_notification_reaches_every_page_viewing_it(demo_url, browser: Browser):
    sender = await browser.open(f"{demo_url}/notifications.html", PHONE, "sender")
    viewer = await browser.open(f"{demo_url}/notifications.html", DESKTOP, "viewer")
    for page in (sender, viewer):
        await expect(page.locator(".state")).to_have_attribute("data-state", "connected")

    await sender.get_by_label("Title").fill("Deploy finished")
    await sender.get_by_label("Message").fill("Version 2.1 is live")
    await sender.get_by_label("Kind").select_option("success")
    await sender.get_by_role("button", name="Notify everyone").click()
    for page in (sender, viewer):
        await expect(page.locator(".toast")).to_contain_text("Deploy finished")
        await expect(page.locator("#feed li")).to_have_count(1)
        await expect(page.locator("#feed li")).to_have_attribute("data-level", "success")
        await expect(page.locator("#feed li")).to_contain_text("Version 2.1 is live")
    await expect(sender.get_by_label("Title")).to_have_value("")  # the form is ready for the next
    await browser.screenshot(sender, "demo/notifications-phone")
    await browser.screenshot(viewer, "demo/notifications-desktop")
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_index_lists_the_demos_and_shows_the_connection(demo_url, browser: Browser):
    for viewport, size in ((PHONE, "phone"), (DESKTOP, "desktop")):
        page = await browser.open(f"{demo_url}/", viewport, size)
        await expect(page.locator(".state")).to_have_attribute("data-state", "connected")
        await expect(page.locator(".cards a")).to_have_text(["Chat", "Monitor", "Notifications"])
        await browser.screenshot(page, f"demo/index-{size}")
    browser.assert_no_errors()


@pytest.mark.gen_test(timeout=60)
async def test_index_says_the_demos_are_off_when_a_real_secret_is_set(io_loop, browser: Browser):
    server = await ServerProcess(free_port(), {"PUSH_APP_SECRET": "a-real-secret"}).start()
    try:
        page = await browser.open(f"http://127.0.0.1:{server.port}/", DESKTOP, "index")
        await expect(page.locator("#demos h2")).to_have_text("Demos are off")
        await expect(page.locator(".state")).to_be_hidden()
        for path in ("/chat.html", "/demo/auth", "/demo/notify"):
            assert (await page.request.post(f"http://127.0.0.1:{server.port}{path}")).status == 404
        browser.assert_no_errors()
    finally:
        await server.terminate()
