"""Every agent message is checked on its own: one bad message never costs its neighbours."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest

from jobfleet.domain import protocol
from jobfleet.domain.protocol import clean_text
from jobfleet.gateway.validation import read_frame, read_load

TASK = "12:0:7"


def done(**over: Any) -> dict[str, Any]:
    return {"t": "done", "id": TASK, "seq": 2, "status": 9, "exit": 0, "start": 1, "end": 2,
            "data": "ok\n", **over}


GOOD = [
    done(),
    done(exit=None, start=None, end=None, data=""),
    done(vars="a=1\n\0b=2", tag="x" * 255, files=[{"n": 0, "status": 1, "size": 5,
                                                    "speed": 1, "progress": 100, "log": ""}]),
    {"t": "out", "id": TASK, "seq": 1, "data": "x" * protocol.MAX_CHUNK_CHARS},
    {"t": "out", "id": TASK, "seq": 3, "data": "", "files": [{"n": 1, "size": None}]},
    {"t": "file_log", "id": TASK, "files": [{"n": 1, "status": 4, "speed": 0.5}]},
    {"t": "reply", "id": "abc", "files": [{"path": "/a", "rel": "a", "size": 1, "mode": 0o644,
                                           "is_dir": False}], "missing": []},
    {"t": "reply", "id": "abc", "results": [{"blob": "b", "size": 1, "sha256": "00",
                                             "speed": 2.5}]},
    {"t": "reply", "id": "abc", "status": 311, "error": "no such account"},
]

BAD = [
    ("bad_status", done(status="abc")),
    ("bad_status", done(status=2**31)),
    ("bad_status", done(status=1.0)),
    ("bad_status", done(status=None)),
    ("bad_status", {k: v for k, v in done().items() if k != "status"}),
    ("bad_seq", done(seq=-1)),
    ("bad_seq", done(seq=protocol.MAX_AGENT_SEQ + 1)),
    ("bad_seq", done(seq="2")),
    ("bad_exit", done(exit="0")),
    ("bad_exit", done(exit=-(2**31) - 1)),
    ("bad_start", done(start="yesterday")),
    ("bad_start", done(start=-1)),
    ("bad_end", done(end=2**63)),
    ("bad_end", done(end=True)),
    ("bad_data", done(data=5)),
    ("bad_data", done(data=None)),
    ("bad_data", {"t": "out", "id": TASK, "seq": 1, "data": "x" * (protocol.MAX_CHUNK_CHARS + 1)}),
    ("bad_vars", done(vars={"a": "b"})),
    ("bad_vars", done(vars="x" * (protocol.MAX_VARS_CHARS + 1))),
    ("bad_tag", done(tag="x" * 256)),
    ("bad_files", done(files="junk")),
    ("bad_files", done(files=[5])),
    ("bad_files", done(files=[{"status": 1}])),
    ("bad_files", done(files=[{"n": -1}])),
    ("bad_files", done(files=[{"n": 1, "progress": 101}])),
    ("bad_files", done(files=[{"n": 1, "speed": -1.0}])),
    ("bad_files", done(files=[{"n": 1, "speed": "fast"}])),
    ("bad_files", done(files=[{"n": 1, "log": "x" * 70000}])),
    ("bad_files", done(files=[{"n": i} for i in range(protocol.MAX_FILE_ITEMS + 1)])),
    ("bad_id", done(id="1:2")),
    ("bad_id", done(id="a:b:c")),
    ("bad_id", done(id="1:0:7\n")),
    ("bad_id", done(id="1:9999999999:7")),
    ("bad_id", done(id=12)),
    ("bad_id", {"t": "reply", "id": ["x"]}),
    ("bad_files", {"t": "reply", "id": "r", "files": [{"path": "/a"}]}),
    ("bad_type", {"t": "hello"}),
    ("bad_type", {"t": "ack"}),
    ("bad_type", {"id": TASK}),
    ("bad_type", None),
    ("bad_type", [1]),
    # pydantic quotes the unknown tag in full
    ("bad_type", {"t": "x" * 5000}),
]


def encode(value: Any) -> bytes:
    # json, not orjson: some bad values do not fit 64 bits or are NaN
    return json.dumps(value).encode()


def test_good_messages_pass_in_one_pass() -> None:
    messages, refused = read_frame(encode(GOOD))
    assert refused == [] and len(messages) == len(GOOD)
    assert messages[0] == done()
    single, refused = read_frame(orjson.dumps(done()))
    assert single == [done()] and refused == []


@pytest.mark.parametrize(("reason", "message"), BAD, ids=[f"{r}-{i}" for i, (r, _) in
                                                          enumerate(BAD)])
def test_each_bad_message_is_refused_alone(reason: str, message: Any) -> None:
    frame = [done(seq=1), message, done(seq=3)]
    messages, refused = read_frame(encode(frame))
    assert [m["seq"] for m in messages] == [1, 3]
    assert [r.reason for r in refused] == [reason]
    assert refused[0].detail and len(refused[0].detail) <= 200


def test_a_refusal_names_the_task_to_acknowledge_when_it_can() -> None:
    _, refused = read_frame(encode([done(status="abc"), done(seq=-1), done(id=5)]))
    assert (refused[0].task, refused[0].seq) == (TASK, 2)
    assert refused[1].seq is None and refused[2].task is None


def test_a_frame_that_is_not_json_is_refused_whole() -> None:
    for raw in (b"{nope", b"\xff\xfe", b"", b'"\\ud800"'):
        messages, refused = read_frame(raw)
        assert messages == [] and [r.reason for r in refused] == ["bad_json"]


def test_the_frame_limit_holds_the_largest_chunk_even_when_escaped() -> None:
    # what an agent sends at most in one message, each character a six-byte escape
    worst = len(orjson.dumps({"t": "out", "id": TASK, "seq": 1,
                              "data": "\x01" * protocol.AGENT_CHUNK_CHARS}))
    assert worst < protocol.AGENT_FRAME_BYTES < protocol.MAX_FRAME_BYTES


def test_clean_text_maps_what_databases_cannot_hold() -> None:
    assert clean_text("plain") == "plain"
    assert clean_text("a\0b") == "a\u2400b"
    assert clean_text("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert clean_text("caf\u00e9 \u20ac \U0001f600") == "caf\u00e9 \u20ac \U0001f600"
    text = "\0\ud83d"
    assert clean_text(clean_text(text)) == clean_text(text) == "\u2400\ufffd"


def test_validation_cost_per_message() -> None:
    """A loose bound against pathologies; the figure itself is in the notes."""
    frame = orjson.dumps([{"t": "out", "id": f"{i}:0:{i}", "seq": 1, "data": "x" * 100}
                          for i in range(20_000)])
    started = time.perf_counter()
    messages, _ = read_frame(frame)
    elapsed = time.perf_counter() - started
    assert len(messages) == 20_000
    assert elapsed / 20_000 < 50e-6


def test_a_process_state_in_a_reply_is_checked() -> None:
    state = protocol.proc_state(0, "success", status=1, pid=42, delegated=True, restarts=2)
    good, bad = read_frame(orjson.dumps({"t": "reply", "id": "r1", "proc": state}))
    assert good[0]["proc"] == state and bad == []
    for field, value in (("status", 3), ("pid", -2), ("restarts", -1), ("delegated", "yes")):
        wrong = {**state, field: value}
        good, bad = read_frame(orjson.dumps({"t": "reply", "id": "r1", "proc": wrong}))
        assert good == [] and len(bad) == 1, (field, bad)
    assert protocol.proc_request(protocol.PROC_STOP, {})["op"] == 1  # type: ignore[typeddict-item]


def test_a_host_load_is_checked_in_a_hello_and_a_stats_message() -> None:
    load = protocol.host_load(12.5, 40.0, 1_700_000_000_000)
    assert read_load(load) == load
    assert read_load({"cpu": 1, "mem": 2, "started": 3}) == {"cpu": 1.0, "mem": 2.0, "started": 3}
    # an older agent reports none; a load that does not fit is dropped
    for bad in (None, {"cpu": 101, "mem": 1, "started": 1}, {"cpu": "1", "mem": 1, "started": 1},
                {"cpu": 1, "mem": -1, "started": 1}, {"cpu": 1, "mem": 1}, [1, 2, 3], "x"):
        assert read_load(bad) is None, bad
    good, bad_ones = read_frame(orjson.dumps([protocol.stats(load)]))
    assert good == [protocol.stats(load)] and not bad_ones
    _good, [refused] = read_frame(b'{"t": "stats", "load": {"cpu": NaN, "mem": 1, "started": 1}}')
    assert refused.reason in ("bad_json", "bad_load")
    _good, [refused] = read_frame(orjson.dumps({"t": "stats", "load": {"cpu": 200, "mem": 1,
                                                                       "started": 1}}))
    assert refused.reason == "bad_load"


@pytest.mark.parametrize("field", ["missing", "files", "results"])
def test_a_reply_list_past_its_bound_is_refused(field: str) -> None:
    item: Any = {"missing": "", "files": {"path": "", "rel": ""}, "results": {"blob": ""}}[field]
    at_bound = {"t": "reply", "id": "r", field: [item] * protocol.MAX_REPLY_ITEMS}
    good, bad = read_frame(orjson.dumps(at_bound))
    assert len(good) == 1 and not bad
    over = {"t": "reply", "id": "r", field: [item] * (protocol.MAX_REPLY_ITEMS + 1)}
    good, bad = read_frame(orjson.dumps(over))
    assert not good and [r.reason for r in bad] == [f"bad_{field}"]
