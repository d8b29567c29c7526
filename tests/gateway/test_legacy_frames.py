"""Which frames past the usual limit an agent of an earlier release may send: its backlog,
output messages that are nearly all text, not structure that parses into millions of
objects."""

from __future__ import annotations

import json

import pytest

from jobfleet.domain import protocol
from jobfleet.gateway.endpoint import _mostly_text

SIZE = protocol.MAX_FRAME_BYTES + 1024


def _backlog(line: str) -> str:
    message = {"type": "output", "task": "1:2:3", "seq": 1, "data": line * 600}
    return json.dumps([message] * (SIZE // (len(line) * 600) + 1))


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    "line",
    ["x" * 99 + "\n", "a,b:c,d,e:f,g,h\n", 'quoted "a,b", \\\\ and \\\\"x:y"\n'],
    ids=["text", "csv", "escapes"],
)
def test_a_backlog_of_text_is_read_whatever_the_text(line: str, as_bytes: bool) -> None:
    raw = _backlog(line)
    assert _mostly_text(raw.encode() if as_bytes else raw)


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    "frame",
    [
        "[" + "[]," * (SIZE // 3) + "[]]",
        "[" + "0," * (SIZE // 2) + "0]",
        "[" + "null," * (SIZE // 5) + "null]",
        '{"a":' + ',"a":'.join(["0"] * (SIZE // 6)) + "}",
        # a string's escaped quote must not hide the values after the string
        '["a\\\\"' + ",0" * (SIZE // 2) + "]",
        '["a\\"b",' + "0," * (SIZE // 2) + '"c\\"d"]',
    ],
    ids=["lists", "numbers", "nulls", "keys", "escaped-backslash", "escaped-quotes"],
)
def test_a_frame_of_values_is_refused(frame: str, as_bytes: bool) -> None:
    assert len(frame) > protocol.MAX_FRAME_BYTES
    json.loads(frame)
    assert not _mostly_text(frame.encode() if as_bytes else frame)
