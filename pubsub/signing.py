"""HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests, webhooks.

Every comparison of a signature is constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

from .apps import App
from .errors import ApiError

#: How far an HTTP API request's ``auth_timestamp`` may be from our clock.
TIMESTAMP_WINDOW_SECONDS = 600


def sign(secret: str, message: str) -> str:
    """Hex HMAC-SHA256 of ``message`` under ``secret``."""
    # hmac.digest is OpenSSL's one-shot HMAC: half the time of hmac.new(...).hexdigest().
    return hmac.digest(secret.encode(), message.encode(), "sha256").hex()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def auth_token(app: App, message: str) -> str:
    """The ``"{key}:{hex signature}"`` token a client sends to show ``message`` was signed."""
    return f"{app.key}:{sign(app.secret, message)}"


def _verify_auth_token(app: App, message: str, auth: object) -> bool:
    """Check an ``"{key}:{hex signature}"`` token over ``message``."""
    if not isinstance(auth, str):
        return False
    key, _, signature = auth.partition(":")
    # Both halves are compared in constant time and always both evaluated.
    key_ok = _same(app.key, key)
    return _same(sign(app.secret, message), signature) and key_ok


def channel_auth_message(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The string a channel auth signs: presence channels add the exact channel_data."""
    message = f"{socket_id}:{channel}"
    return message if channel_data is None else f"{message}:{channel_data}"


def channel_auth(app: App, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The ``"{key}:{signature}"`` token an app server gives a client to subscribe."""
    return f"{app.key}:{sign(app.secret, channel_auth_message(socket_id, channel, channel_data))}"


def verify_channel_auth(app: App, socket_id: str, channel: str, auth: object,
                        channel_data: str | None = None) -> bool:
    """True when ``auth`` authorizes ``socket_id`` on ``channel``."""
    return _verify_auth_token(app, channel_auth_message(socket_id, channel, channel_data), auth)


def user_auth_message(socket_id: str, user_data: str) -> str:
    """The string a sign-in signs: the exact ``user_data`` JSON."""
    return f"{socket_id}::user::{user_data}"


def verify_user_auth(app: App, socket_id: str, user_data: str, auth: object) -> bool:
    """True when ``auth`` signs ``user_data`` in for ``socket_id``."""
    return _verify_auth_token(app, user_auth_message(socket_id, user_data), auth)


def webhook_signature(app: App, body: bytes) -> str:
    """``X-Pusher-Signature`` for a webhook body."""
    return hmac.digest(app.secret.encode(), body, "sha256").hex()


def verify_request(app: App, method: str, path: str, query: Mapping[str, str],
                   body: bytes, now: float) -> None:
    """Check an HTTP API request signed as the official server SDKs sign it.

    ``query`` holds the decoded query parameters. Raises :class:`ApiError`
    (401) naming what is wrong, its ``reason`` one of ``missing_params``,
    ``bad_key``, ``stale_timestamp``, ``bad_body_md5``, ``bad_signature``.
    """
    params = {name.lower(): value for name, value in query.items()}
    signature = params.pop("auth_signature", None)
    if not signature or "auth_key" not in params or "auth_timestamp" not in params:
        raise ApiError(401, "Missing auth_key, auth_timestamp or auth_signature",
                       "missing_params")
    if params["auth_key"] != app.key:
        raise ApiError(401, "Unknown auth_key", "bad_key")
    if params.get("auth_version", "1.0") != "1.0":
        raise ApiError(401, "Unsupported auth_version: use 1.0", "bad_signature")
    try:
        timestamp = int(params["auth_timestamp"])
    except ValueError:
        raise ApiError(401, "auth_timestamp must be an integer", "stale_timestamp") from None
    if abs(now - timestamp) > TIMESTAMP_WINDOW_SECONDS:
        raise ApiError(401, f"auth_timestamp is more than {TIMESTAMP_WINDOW_SECONDS} s from server time",
                       "stale_timestamp")
    if body or "body_md5" in params:
        if not _same(hashlib.md5(body).hexdigest(), params.get("body_md5", "")):
            raise ApiError(401, "body_md5 does not match the body", "bad_body_md5")
    query_string = "&".join(f"{name}={params[name]}" for name in sorted(params))
    expected = sign(app.secret, f"{method}\n{path}\n{query_string}")
    if not _same(expected, signature):
        raise ApiError(401, "Invalid signature: check the app secret and the signed path",
                       "bad_signature")


def sse_token_message(key: str, channels: str, user_id: str | None, expiry: int) -> str:
    """What an SSE token signs: the app key, the ``channels`` query value exactly as sent,
    the presence user id (empty when none) and the expiry (Unix seconds)."""
    return f"sse\n{key}\n{channels}\n{user_id or ''}\n{expiry}"


def sse_token(app: App, channels: str, expiry: int, user_id: str | None = None) -> str:
    """The ``token`` query value of an SSE stream: ``"{expiry}:{hex signature}"``."""
    return f"{expiry}:{sign(app.secret, sse_token_message(app.key, channels, user_id, expiry))}"


def verify_sse_token(app: App, channels: str, user_id: str | None, token: object,
                     now: float) -> bool:
    """True when ``token`` signs this stream's channels and user and has not expired at
    ``now`` (Unix seconds). The signature is compared in constant time."""
    if not isinstance(token, str):
        return False
    expiry, _, signature = token.partition(":")
    if not (expiry.isascii() and expiry.isdigit()) or len(expiry) > 12:
        return False
    expected = sign(app.secret, sse_token_message(app.key, channels, user_id, int(expiry)))
    return _same(expected, signature) and int(expiry) > now
