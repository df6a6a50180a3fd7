"""The admin console in headless Chromium, against two ``python server.py`` processes on Redis.

What an operator does: logs in, sees both processes in the nodes table,
watches an app in the debug console while an SDK publishes through the other
process, terminates a signed-in user's connections, drains the other node. Screenshots
at desktop and phone sizes go to ``test-artifacts/admin/``; any console error
(a Content-Security-Policy violation among them) fails the test.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Page, expect

from app_server import sdk_client
from browser import DESKTOP, PHONE, Browser
from conftest import MAIN, in_thread
from test_cluster_processes import app, connect_to  # noqa: F401  (fixtures: auth endpoints)

PASSWORD = "browser test admin password"


async def log_in(page: Page) -> None:
    await expect(page).to_have_url(f"{page.url.split('/admin/')[0]}/admin/login")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator("#state")).to_have_attribute("data-state", "connected")


@pytest.mark.gen_test(timeout=90)
async def test_admin_console_across_two_processes(redis_server, server_processes, connect_to,
                                                  browser: Browser):
    first, second = await server_processes(2, PUSH_REDIS_URL=redis_server.url,
                                           PUSH_ADMIN_PASSWORD=PASSWORD)
    page = await browser.open(f"http://127.0.0.1:{first.port}/admin/", DESKTOP, "admin")
    await browser.screenshot(page, "admin/login-desktop")
    await log_in(page)

    rows = page.locator("#nodes-table tbody tr")
    await expect(rows).to_have_count(2, timeout=10_000)
    for server in (first, second):
        await expect(page.locator("#nodes-table tbody")).to_contain_text(f"127.0.0.1:{server.port}")

    await page.get_by_role("button", name="Watch").click()
    await expect(page.locator("#debug-state")).to_have_attribute("data-state", "watching")

    # The first publish through the other process shows the watch has reached it;
    # the second is timed.
    sdk = sdk_client(MAIN, second.port)
    published = page.locator("#debug-events li[data-kind='published']")
    await in_thread(sdk.trigger, "news", "warm-up", {"n": 0})
    await expect(published.filter(has_text="warm-up")).to_have_count(1, timeout=10_000)
    await in_thread(sdk.trigger, "news", "timed", {"text": "<b>shown as text</b>"})
    sent = time.monotonic()
    await expect(published.filter(has_text="timed")).to_have_count(1, timeout=5_000)
    assert time.monotonic() - sent < 1.0, "the event took over a second to reach the console"
    await expect(published.filter(has_text="timed")).to_contain_text('"<b>shown as text</b>"')
    assert await page.locator("#debug-events b").count() == 0  # never parsed as HTML

    alice = await connect_to("alice", second, user="alice")
    await alice.signin()
    await alice.expect(type="signed_in")
    await expect(page.locator("#debug-events li[data-kind='connection_opened']")).to_have_count(1)

    await page.get_by_label("Channels (comma-separated)").fill("news")
    await page.get_by_label("Event name", exact=True).fill("from-admin")
    await page.get_by_role("button", name="Publish").click()
    await expect(page.locator("#event-result")).to_have_text("Published from-admin on news.")
    await expect(page.locator("#debug-events li[data-kind='published']")
                 .filter(has_text="admin from-admin")).to_have_count(1, timeout=5_000)

    await browser.screenshot(page, "admin/console-desktop")
    await page.set_viewport_size(PHONE)
    await browser.screenshot(page, "admin/console-phone")
    await page.set_viewport_size(DESKTOP)

    await page.get_by_label("User id").fill("alice")
    await page.get_by_role("button", name="Terminate").click()
    await expect(page.locator("#terminate-result")).to_have_text(
        "Closed every connection of alice.")
    await alice.expect(type="state", current="disconnected", timeout=10)
    await expect(page.locator("#debug-events li[data-kind='connection_closed']")
                 .filter(has_text="4009")).to_have_count(1, timeout=5_000)

    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.locator(f"#nodes-table tr:has-text('127.0.0.1:{second.port}') button").click()
    await second.wait_for_log("drained", timeout=15)
    assert await asyncio.wait_for(second._process.wait(), 15) == 0
    await expect(rows).to_have_count(1, timeout=15_000)  # its record expired
    browser.assert_no_errors()
