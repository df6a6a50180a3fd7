"""The one loader of outside JSON (pubsub/text.py): what it refuses, and what it must not."""

from __future__ import annotations

import json

import pytest

from tornado_push.pubsub import text
from tornado_push.pubsub.text import MAX_DEPTH, InvalidText


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("accepted", [
    '{"a":"\\ud83d\\ude00"}',  # a pair, as json.dumps writes an emoji
    json.dumps({"emoji": "\U0001F600", "é": "ü"}, ensure_ascii=False),
    '{"path":"C:\\\\ud800"}',  # an escaped backslash, then letters: no surrogate
    json.dumps({"data": "[" * 5000}),  # brackets in a string are not nesting
    nested(MAX_DEPTH),
    b'{"ok":"\xc3\xa9"}',
])
def test_text_json_can_carry_is_accepted(accepted):
    assert text.loads(accepted) == json.loads(accepted)


@pytest.mark.parametrize("refused, complaint", [
    ('"\\ud800"', "surrogate"),
    ('{"a":["x\\uDFFF"]}', "surrogate"),
    ('{"\\udbff":1}', "surrogate"),
    ('"\\ude00\\ud83d"', "surrogate"),  # a pair in the wrong order
    ('"x\ud800"', "surrogate"),  # raw, in a str
    (b'"\xed\xa0\x80"', "UTF-8"),  # raw, encoded as CESU/WTF-8
    (b'"\xff"', "UTF-8"),
    (nested(MAX_DEPTH + 1), "nested deeper than 64"),
    ('{"a":' + nested(100_000) + "}", "nested deeper than 64"),
    ("{oops", "Invalid JSON"),
])
def test_text_json_over_utf8_cannot_carry_or_too_deep_is_refused(refused, complaint):
    with pytest.raises(InvalidText, match=complaint):
        text.loads(refused)
