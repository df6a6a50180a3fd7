"""What happens on this process, told as it happens: the seam metrics and the debug console use.

The hub, the sessions and the webhooks call :class:`Observers`, which passes
each call on to every :class:`Observer` added to it. An observer overrides the
methods it cares about; the rest are no-ops. Observers are called on the event
loop, synchronously, at the moment the thing happens, so they must be quick
and must not raise (:class:`Observers` logs, rate-limited, and goes on when one
does): they count, or copy what they need and return.

The broadcast path (one publication fanned out to many sockets) is not told
here, publication by publication and socket by socket: that would cost every
delivery a call. Metrics read its counters at scrape time instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .apps import App
    from .broker import Publication
    from .session import Session

log = logging.getLogger(__name__)

#: A connection that ended without a close frame (RFC 6455 7.1.5).
CLOSED_ABNORMALLY = 1006

#: ``Observer.published``'s ``source``: where a publication entered the cluster.
SOURCE_API = "api"
SOURCE_BATCH_API = "batch_api"
SOURCE_CLIENT_EVENT = "client_event"
#: The host application (``Push.trigger``) or the server's own pages.
SOURCE_SERVER = "server"
SOURCE_ADMIN = "admin"


class Observer:
    """Told what happens on this process. Every method is a no-op here: override what you need.

    Calls come on the event loop, at the moment of the event; an observer must
    return quickly and should not raise.
    """

    def connection_opened(self, session: Session) -> None:
        """A connection was admitted and greeted (``connection_established`` queued)."""

    def connection_refused(self, app: App | None, reason: str) -> None:
        """A connection was refused before ``connection_established``.

        ``app`` is None when the key names no app. ``reason`` is one of a short fixed
        list (``unknown_app``, ``no_protocol``, ``unsupported_protocol``, ``app_disabled``,
        ``over_capacity``, ``draining``, ``over_quota``, ``too_many_from_ip``, ``origin``):
        never anything the client chose."""

    def connection_closed(self, session: Session, code: int) -> None:
        """An admitted connection ended, with this close code (1006: no close frame)."""

    def subscribed(self, session: Session, channel: str) -> None:
        """The hub recorded a new subscription; ``subscription_succeeded`` follows, unless
        it is undone (told as :meth:`unsubscribed`: the two always pair up)."""

    def subscription_refused(self, session: Session, channel: str, status: int) -> None:
        """A subscribe was answered with ``pusher:subscription_error`` and this status."""

    def unsubscribed(self, session: Session, channel: str) -> None:
        """A session left a channel it had joined (unsubscribe, its connection ended, or
        the subscription was undone)."""

    def published(self, app: App, publication: Publication, source: str) -> None:
        """A publication was accepted here and handed to the broker (once per channel).

        ``source`` is one of the ``SOURCE_*`` names. Events the server makes itself
        (presence, subscription counts) are not told here."""

    def webhook_attempted(self, app: App, url: str, events: list[dict[str, Any]],
                          outcome: str, status: int | None, seconds: float) -> None:
        """One POST of a webhook batch ended.

        ``outcome``: ``success``, ``http_error`` (``status`` says which), ``timeout`` or
        ``connection_error``."""

    def webhook_dropped(self, app: App, url: str, events: list[dict[str, Any]],
                        reason: str) -> None:
        """Webhook events were given up: ``retries_exhausted``, ``queue_full`` or
        ``superseded`` (the cluster state no longer bore them out)."""

    def http_answered(self, app: App | None, endpoint: str, status: int, seconds: float) -> None:
        """An HTTP request was answered with ``status`` after ``seconds``.

        ``endpoint`` names the route (``events``, ``batch_events``, ``channels``, ...,
        ``health``), never the path; ``app`` is None when the request named no app
        that signed it. Told on both paths (the HTTP front and Tornado's handlers)."""

    def http_auth_failed(self, app: App | None, reason: str) -> None:
        """An HTTP API request's signature was refused: ``unknown_app`` (``app`` None),
        ``bad_key``, ``bad_signature``, ``stale_timestamp``, ``bad_body_md5`` or
        ``missing_params``."""


class Observers(Observer):
    """Every observer added, told in the order they were added; the hub's one seam.

    Each of :class:`Observer`'s methods is, on this object, a function made when
    an observer is added or removed: nothing when no observer overrides that
    method, else a call to each that does. So an observer listening to rare
    events costs the frequent ones (``published``) nothing, and one that raises
    is logged (rate-limited) without costing the others or the caller.
    """

    def __init__(self) -> None:
        self._observers: tuple[Observer, ...] = ()
        self._bind()

    def add(self, observer: Observer) -> None:
        self._observers += (observer,)
        self._bind()

    def remove(self, observer: Observer) -> None:
        self._observers = tuple(o for o in self._observers if o is not observer)
        self._bind()

    def __bool__(self) -> bool:
        return bool(self._observers)

    def _bind(self) -> None:
        for method in _METHODS:
            base = getattr(Observer, method)
            calls = tuple(getattr(o, method) for o in self._observers
                          if getattr(type(o), method, base) is not base)
            setattr(self, method, _teller(method, calls) if calls else _ignore)


#: Observer's methods, which :class:`Observers` binds.
_METHODS = tuple(name for name, value in vars(Observer).items()
                 if callable(value) and not name.startswith("_"))


def _ignore(*args: Any) -> None:
    """What :class:`Observers` tells when no observer listens."""


def _teller(method: str, calls: tuple[Callable[..., None], ...]) -> Callable[..., None]:
    """Calls each of ``calls`` (observers' ``method``) with the same arguments."""

    def tell(*args: Any) -> None:
        for call in calls:
            try:
                call(*args)
            except Exception:  # an observer's bug must not cost the connection or publish
                log.exception("an observer failed in %s", method)

    return tell
