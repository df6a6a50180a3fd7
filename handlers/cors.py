"""CORS for the HTTP transports (the pusher-js fallbacks, SSE): answered for the page
origins an app allows, withheld from the others."""

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
    if origin is None:
        return {"Access-Control-Allow-Origin": "*"}
    if app is not None and not app.origin_rules.allows(origin):
        return {"Vary": "Origin"}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
