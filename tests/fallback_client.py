"""pusher-js's HTTP fallback reduced to its wire, for tests of ``/pusher/app/{key}/...``."""

from __future__ import annotations

import json
from typing import Any

import tornado.httpclient

from conftest import MAIN


def fallback_url(port: int, path: str, key: str = MAIN.key) -> str:
    """The URL of ``{server}/{session}/{kind}`` (``path``) of an HTTP session on ``key``."""
    return f"http://127.0.0.1:{port}/pusher/app/{key}/{path}"


async def post(url: str, body: str | bytes = "", **headers: str
               ) -> tornado.httpclient.HTTPResponse:
    """A POST as pusher-js sends it (JSON content type); any status is returned, not raised."""
    client = tornado.httpclient.AsyncHTTPClient()
    return await client.fetch(url, method="POST", body=body, raise_error=False,
                              request_timeout=60,
                              headers={"Content-Type": "application/json", **headers})


def frames(body: bytes) -> list[tuple[str, Any]]:
    """The frames of a receive request's answer, one per line, as pusher-js reads them:
    ``("o", hostname or None)``, ``("h", None)``, ``("a", [message dicts])``,
    ``("c", [code, reason])``. Anything else fails the test."""
    parsed: list[tuple[str, Any]] = []
    for line in body.decode("ascii").splitlines():
        kind, rest = line[:1], line[1:]
        if kind == "o":
            parsed.append(("o", json.loads(rest)["hostname"] if rest else None))
        elif kind == "h":
            assert rest.strip("h") == "", line  # a heartbeat, or the streaming prelude
            parsed.append(("h", None))
        elif kind == "a":
            parsed.append(("a", [json.loads(message) for message in json.loads(rest)]))
        elif kind == "c":
            code, reason = json.loads(rest)
            assert isinstance(code, int) and isinstance(reason, str), line
            parsed.append(("c", [code, reason]))
        else:
            raise AssertionError(f"undocumented frame line {line!r}")
    return parsed
