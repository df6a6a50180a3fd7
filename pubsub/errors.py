"""Pusher error codes and the exceptions that carry them.

Every refusal the engine makes is one of these exceptions; the handlers map
them to the wire (``pusher:error`` and a close code, ``pusher:subscription_error``,
or an HTTP status) in one place each.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Close and ``pusher:error`` codes; pusher-js reacts to the range.

    4000-4099: refused, the client does not retry as is.
    4100-4199: retry after a backoff.
    4200-4299: reconnect at once.
    4300-4399: the message was rejected; the connection stays open.
    """

    NO_SUCH_APP = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_TIMEOUT = 4201
    INACTIVITY = 4202
    INVALID_MESSAGE = 4300
    CLIENT_EVENT_REJECTED = 4301


class PushError(Exception):
    """Base of every refusal; ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionRefused(PushError):
    """The connection must end: send ``pusher:error`` then close with ``code``.

    ``reason`` names a refusal before ``connection_established`` for observers
    (see :meth:`pubsub.observe.Observer.connection_refused`); empty otherwise."""

    def __init__(self, code: ErrorCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class MessageRejected(PushError):
    """One inbound message is refused with ``pusher:error``; the connection stays."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INVALID_MESSAGE) -> None:
        super().__init__(message)
        self.code = code


class SubscriptionRefused(PushError):
    """A subscribe is refused with ``pusher:subscription_error`` on the channel."""

    def __init__(self, message: str, *, kind: str = "AuthError", status: int = 401) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ApiError(PushError):
    """An HTTP API request is refused with ``status`` and a JSON error body.

    ``reason`` names a refused signature's fault for metrics, from a fixed list
    (see :func:`pubsub.signing.verify_request`); None for other refusals."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class BrokerUnavailable(PushError):
    """The broker or shared state (Redis) cannot be reached; HTTP answers 503."""


class HistoryUnavailable(BrokerUnavailable):
    """The history store cannot be reached: a publish on a history channel is
    refused (HTTP 503, nothing delivered), a resume is answered "cannot recover"."""
