"""examples/django_chat end to end: Django's login, its auth views and its publishes,
stock pusher-js in headless Chromium, against ``python server.py``.

Both run as a user runs them (docs in the example's README): the push server
with an app of its own, and ``manage.py runserver`` pointed at it through the
example's environment, its SQLite database in the test's temporary folder.
Every wait in a page is on the page (Playwright's ``expect`` polls the DOM).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests
from playwright.async_api import Page, expect

from browser import DESKTOP, PHONE, Browser
from conftest import ROOT, in_thread, until
from redis_server import free_port
from server_processes import ServerProcess

EXAMPLE = ROOT / "examples" / "django_chat"
#: pusher-js's web build, from the npm package the tests install (no CDN).
PUSHER_WEB = ROOT / "tests" / "js" / "node_modules" / "pusher-js" / "dist" / "web"
APP = {"id": "7001", "key": "django-chat-key", "secret": "django-chat-secret"}
#: username: (name shown to the others, password)
USERS = {"alice": ("Alice", "alice-password-1"), "bob": ("Bob", "bob-password-1")}
#: Seconds a ``manage.py`` command may take.
MANAGE_TIMEOUT = 60


def manage(env: dict[str, str], *args: str) -> None:
    """``python manage.py ...`` in the example, failing with its output."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env,
                          capture_output=True, text=True, timeout=MANAGE_TIMEOUT)
    assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}{done.stderr}"


def example_env(database: Path, **more: str) -> dict[str, str]:
    """This environment, less any of the example's own settings, plus ``database`` and ``more``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PUSHER_", "DJANGO_", "CHAT_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "CHAT_DATABASE": str(database), **more}


@pytest.fixture(scope="module")
def users_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated and holding :data:`USERS`, made once; tests use copies."""
    database = tmp_path_factory.mktemp("django-chat") / "users.sqlite3"
    env = example_env(database)
    manage(env, "migrate", "--verbosity", "0")
    for username, (name, password) in USERS.items():
        manage(env, "add_chat_user", username, "--name", name, "--password", password)
    return database


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def chat_url(io_loop, tmp_path: Path, users_database: Path) -> Iterator[str]:
    """The Django site's base URL, with ``python server.py`` behind it; both stopped by PID."""
    push = ServerProcess(free_port(), {"PUSH_APP_ID": APP["id"], "PUSH_APP_KEY": APP["key"],
                                       "PUSH_APP_SECRET": APP["secret"]}, name="push server")
    io_loop.run_sync(push.start)
    django: ServerProcess | None = None
    database = Path(shutil.copy(users_database, tmp_path / "chat.sqlite3"))
    env = example_env(database, PUSHER_JS_DIR=str(PUSHER_WEB), PUSHER_APP_ID=APP["id"],
                      PUSHER_KEY=APP["key"], PUSHER_SECRET=APP["secret"],
                      PUSHER_HOST="127.0.0.1", PUSHER_PORT=str(push.port))
    try:
        port = free_port()
        django = ServerProcess(port, env, name="django", cwd=EXAMPLE, ready="Quit the server with",
                               command=("manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"))
        io_loop.run_sync(django.start)
        # runserver logs before it binds: wait for the socket too.
        io_loop.run_sync(lambda: until(lambda: accepts(port), timeout=10))
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in (django, push):
            if process is not None:
                io_loop.run_sync(process.terminate)
                print(process.describe(), end="\n\n")  # pytest shows it for a failure


async def log_in(browser: Browser, url: str, username: str, viewport: dict[str, int]) -> Page:
    """A page of its own (another device) through Django's login form into the lobby."""
    page = await browser.open(f"{url}/", viewport, username)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(USERS[username][1])
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{url}/rooms/lobby/")
    await expect(page.locator("#state")).to_have_attribute("data-state", "connected")
    return page


async def say(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()


@pytest.mark.gen_test(timeout=60)
async def test_two_logged_in_users_chat_see_each_other_type_and_one_leaves(
        chat_url: str, browser: Browser) -> None:
    alice = await log_in(browser, chat_url, "alice", PHONE)
    bob = await log_in(browser, chat_url, "bob", DESKTOP)
    for page, members in ((alice, ["Alice (you)", "Bob"]), (bob, ["Alice", "Bob (you)"])):
        await expect(page.locator("#members li")).to_have_text(members)  # presence, Django names
        await expect(page.locator("#count")).to_have_text("2")
        await expect(page.locator("#state")).to_have_attribute("data-signed-in", "true")
    await expect(alice.locator("#messages .notice").last).to_have_text("Bob joined")

    await bob.get_by_label("Message").press_sequentially("Hel")  # client-typing, browser to browser
    await expect(alice.locator("#typing")).to_have_text("Bob is typing…")
    await say(bob, "Hello Alice")  # POSTed to Django, which triggers it
    for page in (alice, bob):  # once each, the sender's page included
        await expect(page.locator("#messages .said .text")).to_have_text(["Hello Alice"])
        await expect(page.locator("#messages .said .who")).to_have_text(["Bob"])
    await expect(bob.locator("#messages .said.mine")).to_have_count(1)
    await expect(alice.locator("#typing")).to_have_text("")

    await say(alice, "@bob have a look")  # Django's send_to_user, to bob's signed-in connection
    await expect(alice.locator("#messages .said .text").last).to_have_text("@bob have a look")
    await expect(bob.locator("#messages .mention .text")).to_have_text(
        "mentioned you: @bob have a look")
    await expect(bob.locator("#messages .mention .who")).to_have_text("Alice")
    await expect(alice.locator("#messages .mention")).to_have_count(0)
    await browser.screenshot(alice, "django-chat/alice-phone")
    await browser.screenshot(bob, "django-chat/bob-desktop")

    await bob.context.close()  # member_removed when his only connection goes
    await expect(alice.locator("#members li")).to_have_text(["Alice (you)"])
    await expect(alice.locator("#count")).to_have_text("1")
    await expect(alice.locator("#messages .notice").last).to_have_text("Bob left")
    browser.assert_no_errors()


class Visitor:
    """One browser's cookies on the Django site, as its pages post: with the CSRF header."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.get(f"{url}/accounts/login/", timeout=10)  # sets the CSRF cookie

    def post(self, path: str, *, csrf: bool = True, **data: str) -> requests.Response:
        headers = {"X-CSRFToken": self.session.cookies["csrftoken"]} if csrf else {}
        return self.session.post(f"{self.url}{path}", data=data, headers=headers, timeout=10,
                                 allow_redirects=False)

    def log_in(self, username: str) -> Visitor:
        response = self.post("/accounts/login/", username=username, password=USERS[username][1])
        assert response.status_code == 302, response.text
        return self

    def user_id(self) -> str:
        """The id the sign-in view gives this visitor's user, with its Django name."""
        signed = self.post("/pusher/user-auth", socket_id="1.2")
        assert signed.status_code == 200, signed.text
        user = json.loads(signed.json()["user_data"])
        assert user["user_info"]["name"] in {name for name, _ in USERS.values()}
        return user["id"]


def check_auth_rules(url: str) -> None:
    alice, bob = Visitor(url).log_in("alice"), Visitor(url).log_in("bob")
    alice_id, bob_id = alice.user_id(), bob.user_id()
    assert alice_id != bob_id

    # A presence channel: any room, with the member named from the Django user.
    answer = alice.post("/pusher/auth", socket_id="1.2", channel_name="presence-room-tea")
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.json()["channel_data"]) == {"user_id": alice_id,
                                                         "user_info": {"name": "Alice"}}
    # A private channel: its owner only, and the answer is a bare auth.
    answer = alice.post("/pusher/auth", socket_id="1.2", channel_name=f"private-user-{alice_id}")
    assert answer.status_code == 200 and set(answer.json()) == {"auth"}
    assert answer.json()["auth"].startswith(APP["key"] + ":")
    for channel in (f"private-user-{bob_id}", "presence-other", "presence-room-Tea"):
        assert alice.post("/pusher/auth", socket_id="1.2", channel_name=channel
                          ).status_code == 403, channel
    assert alice.post("/pusher/auth", socket_id="bad", channel_name="presence-room-tea"
                      ).status_code == 400
    # Nothing without the CSRF token, nothing logged out (403, not a redirect to a form).
    assert alice.post("/pusher/auth", csrf=False, socket_id="1.2",
                      channel_name="presence-room-tea").status_code == 403
    stranger = Visitor(url)
    for path in ("/pusher/auth", "/pusher/user-auth", "/rooms/lobby/messages"):
        response = stranger.post(path, socket_id="1.2", channel_name="presence-room-tea", text="hi")
        assert response.status_code == 403, (path, response.status_code)
    # A message is checked before anything is published.
    assert alice.post("/rooms/lobby/messages", text="   ").status_code == 400
    assert alice.post("/rooms/lobby/messages", text="x" * 1001).status_code == 400
    assert alice.post("/rooms/lobby/messages", text="hello").status_code == 200


@pytest.mark.gen_test(timeout=60)
async def test_auth_views_sign_only_what_the_logged_in_user_may_join(chat_url: str) -> None:
    await in_thread(check_auth_rules, chat_url)
