"""CORS for the HTTP transports: SSE answers it for the page origins an app allows and
withholds it from the others; the pusher-js fallbacks answer every origin, as they refuse
a session in band (see :func:`readable_by`)."""

from __future__ import annotations

from ..pubsub.apps import App


def cors_headers(app: App | None, origin: str | None) -> dict[str, str]:
    """The CORS headers of a response to a request from ``origin`` (its ``Origin`` header,
    None without one) for ``app`` (None: the key names no app).

    An origin the app allows is echoed, so its page may read the response; one it refuses
    gets no ``Access-Control-Allow-Origin``, so the browser neither sends the page's
    requests past their preflight nor lets it read an answer. An unknown app's refusal is
    readable by any page (there is no list to go by), as is any response to a request
    without ``Origin``, which no browser sends cross-origin.
    """
    if origin is not None and app is not None and not app.origin_rules.allows(origin):
        return {"Vary": "Origin"}
    return readable_by(origin)


def readable_by(origin: str | None) -> dict[str, str]:
    """CORS headers that let the page of ``origin`` (None: no ``Origin`` header) read the
    response, whatever its app allows.

    For answers that carry their own refusal: a pusher-js fallback session from a refused
    origin is opened, told 4009 and closed in one answer, which pusher-js must be able to
    read to stop retrying (withheld, it would see failed requests and retry with backoff
    forever). Nothing else is readable there without a session.
    """
    if origin is None:
        return {"Access-Control-Allow-Origin": "*"}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
