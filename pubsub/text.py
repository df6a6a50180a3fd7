"""The one loader for JSON from outside: what JSON over UTF-8 can carry, nested a bounded depth.

Python's ``json.loads`` accepts text that the rest of the server cannot use:
a ``"\\ud800"`` escape decodes to a lone UTF-16 surrogate, which no UTF-8
encoder takes, so the value would fail later, when a frame, a signature or a
member list is encoded, after it was recorded; and nesting beyond about
1,000 levels raises ``RecursionError``. :func:`loads` refuses both with
:class:`InvalidText`, before anything is recorded. Every piece of JSON that
arrives (WebSocket frames and their ``data``, ``channel_data``, ``user_data``,
HTTP API and demo bodies) goes through it, so every string past it encodes.

Text that arrives raw is already strict UTF-8, so a raw surrogate cannot
arrive: Tornado decodes WebSocket text frames with the strict UTF-8 codec
(and ends the connection otherwise), and :func:`loads` decodes bytes (HTTP
bodies) strictly itself, where ``json.loads`` would let ``surrogatepass``
through. Raw surrogates in a ``str`` are refused all the same.

Cost on the hot path: a one-character search and two ``str.count`` calls, in
C (a regular expression scans only text holding a backslash; a ``str`` that is
not ASCII is also encoded once); the parsed value is walked only when they
find an escaped surrogate or more brackets than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting of arrays and objects accepted; the Pusher protocol needs a few levels.
MAX_DEPTH = 64
#: An escaped surrogate (valid in a pair or not): the cue to look at the decoded strings.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class InvalidText(ValueError):
    """Text that is not JSON the server accepts; ``message`` says why, for the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def loads(text: str | bytes) -> Any:
    """Parse JSON from outside, or raise :class:`InvalidText`.

    Refuses invalid UTF-8, invalid JSON, lone surrogates (escaped or raw) in
    any string or key, and nesting deeper than :data:`MAX_DEPTH`.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = text.decode("utf-8")  # strict: no surrogate can be in the result
        except UnicodeDecodeError:
            raise InvalidText("Text is not valid UTF-8") from None
    elif not text.isascii():
        check_string(text)
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidText(f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise InvalidText("Invalid JSON") from None
    if _has_escaped_surrogate(text) or text.count("[") + text.count("{") > MAX_DEPTH:
        check_value(value)
    return value


def _has_escaped_surrogate(text: str) -> bool:
    # A one-character test first: memchr, far faster than the regular expression.
    return "\\" in text and _ESCAPED_SURROGATE.search(text) is not None


def check_value(value: Any) -> None:
    """Raise :class:`InvalidText` if a decoded value holds a lone surrogate or nests
    deeper than :data:`MAX_DEPTH`; iterative, so any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_string(item)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InvalidText(f"JSON is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)


def check_string(text: str) -> str:
    """``text``, or :class:`InvalidText` if it holds a lone surrogate (no UTF-8 for it)."""
    try:
        text.encode("utf-8")  # in C: several times faster than a regular-expression scan
    except UnicodeEncodeError:
        raise InvalidText("Text holds a lone UTF-16 surrogate (such as \\ud800), "
                          "which UTF-8 cannot carry") from None
    return text
