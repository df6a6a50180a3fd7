"""The admin console's credentials and the checks every admin request goes through.

Every process of a deployment derives the same signing key from
``PUSH_ADMIN_PASSWORD`` (PBKDF2, a fixed salt: no second setting to keep in
step), so a session cookie made by one process is accepted by all, and changing
the password ends every session. A cookie is ``{session id}.{expiry}.{HMAC}``;
the CSRF token is an HMAC of the session id, so it is tied to that session and
needs no storage. Every comparison of a secret is constant-time.
:class:`AdminRequest` is what every admin handler shares: the security
headers, reading the session, the Origin check.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .admin import AdminConsole

#: Logins and every action of a signed-in operator, with the client address; never a
#: password, cookie or token. Not rate-limited (``lograte.UNLIMITED``): only someone
#: holding the password can make these lines.
audit = logging.getLogger("tornado_push.admin.audit")
#: Failed and throttled logins, refused cross-origin or token-less requests: anyone can
#: make these, so they pass the log rate limit like every other line.
refusals = logging.getLogger("tornado_push.admin.refusals")

COOKIE = "push_admin"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "_csrf"
#: On every admin answer: nothing inline, nothing from elsewhere, never in a frame.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, Chromium sends "Origin: null" with the login form.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: Seconds a login lasts.
SESSION_SECONDS = 8 * 3600
#: PBKDF2 rounds deriving the key: a stolen cookie does not make guessing the password cheap.
_KDF_ROUNDS = 100_000
_KDF_SALT = b"tornado-push admin console session key"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class AdminKeys:
    """Checks the password and signs and checks session cookies and CSRF tokens."""

    def __init__(self, password: str) -> None:
        if not password:
            raise ValueError("the admin console needs a password")
        self._password_digest = hashlib.sha256(password.encode()).digest()
        self._key = hashlib.pbkdf2_hmac("sha256", password.encode(), _KDF_SALT, _KDF_ROUNDS)

    def password_matches(self, given: str) -> bool:
        """Constant-time, whatever the lengths (digests of equal length are compared)."""
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._password_digest)

    def _sign(self, purpose: str, text: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}\0{text}".encode(), hashlib.sha256).digest())

    def new_session(self, now: float | None = None) -> str:
        """A cookie value for a new session, valid for :data:`SESSION_SECONDS`."""
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        payload = f"{secrets.token_urlsafe(18)}.{expires}"
        return f"{payload}.{self._sign('session', payload)}"

    def session_id(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a cookie this deployment signed and that has not expired."""
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign("session", f"{session_id}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) <= (time.time() if now is None else now):
            return None
        return session_id

    def csrf_token(self, session_id: str) -> str:
        return self._sign("csrf", session_id)

    def csrf_matches(self, session_id: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(session_id))


class LoginThrottle:
    """Failed logins per client address: after :attr:`free` failures each further try
    waits twice as long as the last (1 s, 2 s, 4 s... up to :attr:`longest`).

    The table is bounded: at most :attr:`size` addresses, the least recently
    failed forgotten first, and an address is forgotten :attr:`forget_after`
    seconds after its last failure or at its first success.
    """

    def __init__(self, *, free: int = 5, longest: float = 300.0, forget_after: float = 900.0,
                 size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.longest = longest
        self.forget_after = forget_after
        self.size = size
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # ip → count, last

    def wait(self, address: str) -> float:
        """Seconds before ``address`` may try again; 0 when it may now."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        count, last = entry
        now = self._clock()
        if now - last > self.forget_after:
            del self._failures[address]
            return 0.0
        if count < self.free:
            return 0.0
        return max(0.0, last + min(2.0 ** (count - self.free), self.longest) - now)

    def failed(self, address: str) -> None:
        count = self._failures.pop(address, (0, 0.0))[0]
        self._failures[address] = (count + 1, self._clock())
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def __len__(self) -> int:
        """Addresses remembered now."""
        return len(self._failures)


class AdminRequest:
    """What every admin handler checks and sends: security headers, the session, the Origin.

    A mixin, for plain handlers and the WebSocket feed alike.
    """

    #: True for the few routes that answer without a session (the login form, its
    #: stylesheets, redirects, 404): none of them shows any data.
    public = False
    console: AdminConsole
    prefix: str
    request: Any

    def initialize(self, console: AdminConsole, prefix: str = "") -> None:
        self.console = console
        self.prefix = prefix

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)  # type: ignore[attr-defined]

    def check_xsrf_cookie(self) -> None:
        """None: admin actions check their own CSRF token (tied to the session) instead,
        whatever a host app's ``xsrf_cookies`` says."""

    def session_id(self) -> str | None:
        return self.console.keys.session_id(self.get_cookie(COOKIE))  # type: ignore[attr-defined]

    def same_origin(self) -> bool:
        """Whether the browser says the request comes from this console's own origin."""
        origin = self.request.headers.get("Origin")
        return origin is not None and origin == f"{self.request.protocol}://{self.request.host}"

    @property
    def cookie_path(self) -> str:
        return f"{self.prefix}/admin"

    @property
    def client(self) -> str:
        return self.request.remote_ip or "?"
