"""Every message has a constructor, and it writes the bytes the hand-built dicts wrote."""

from __future__ import annotations

import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobfleet.domain import protocol

TASK = "12:0:7"
RUN = {"lang": 1, "script": "echo hi", "args": ["a"], "account": "root", "timeout": 60,
       "env": {"K": "v"}, "max_output": 1024}


def test_agent_messages_keep_their_wire_form() -> None:
    assert orjson.dumps(protocol.hello(
        version="0.1.0", hostname="h", os="Linux", os_name="Debian", ipv6="",
        labels={"env": "prod"}, known=[TASK])) == (
        b'{"t":"hello","version":"0.1.0","hostname":"h","os":"Linux","os_name":"Debian",'
        b'"ipv6":"","labels":{"env":"prod"},"known":["12:0:7"],"protocol":1,'
        b'"caps":["sensitive","proc","dispatch","frames","kinds"]}')
    assert protocol.output(TASK, 1, "x") == {"t": "out", "id": TASK, "seq": 1, "data": "x"}
    assert list(protocol.output(TASK, 2, "", [{"n": 0}])) == ["t", "id", "seq", "data", "files"]
    done = protocol.done(TASK, 3, status=9, exit=0, start=1, end=2, data="ok\n",
                         files=[{"n": 0, "status": 4}], vars="a=1\n")
    assert orjson.dumps(done) == (
        b'{"t":"done","id":"12:0:7","seq":3,"status":9,"exit":0,"start":1,"end":2,'
        b'"data":"ok\\n","files":[{"n":0,"status":4}],"vars":"a=1\\n"}')
    # no variables: no key (as before), and a note of the server's own has no files
    assert "vars" not in protocol.done(TASK, 3, status=9, exit=0, start=1, end=2, data="",
                                       vars="")
    assert protocol.file_log(TASK, [{"n": 1}]) == {"t": "file_log", "id": TASK,
                                                   "files": [{"n": 1}]}
    assert list(protocol.reply("r", files=[], missing=[])) == ["t", "id", "files", "missing"]
    assert list(protocol.reply("r", status=311, error="no")) == ["t", "id", "status", "error"]
    assert protocol.reply("r", results=[]) == {"t": "reply", "id": "r", "results": []}


def test_a_hello_says_what_its_agent_can_do() -> None:
    assert protocol.hello_caps({"t": "hello"}) is None  # an agent from before
    assert protocol.hello_caps({"caps": "proc"}) == frozenset()
    # a capability of a newer agent is kept (and never asked for); junk is not
    assert protocol.hello_caps({"caps": ["proc", "teleport", 7, "x" * 65]}) == {
        "proc", "teleport"}
    assert protocol.hello_caps(dict(protocol.hello(
        version="", hostname="", os="", os_name="", ipv6="", labels={}, known=[]))) == set(
        protocol.AGENT_CAPS)


def test_server_messages_keep_their_wire_form() -> None:
    assert orjson.dumps(protocol.welcome("ag-1", 7, 10.0, "0.1.0")) == (
        b'{"t":"welcome","agent_id":"ag-1","bk_host_id":7,"heartbeat":10.0,'
        b'"server_version":"0.1.0"}')
    # the engine wrote {"t": RUN, "id": ..., **template} (+ "sensitive", "collect_vars")
    assert orjson.dumps(protocol.run(TASK, **RUN)) == orjson.dumps(
        {"t": "run", "id": TASK, **RUN})
    assert orjson.dumps(protocol.run(TASK, **RUN, sensitive=True, collect_vars=False)) == (
        orjson.dumps({"t": "run", "id": TASK, **RUN, "sensitive": True,
                      "collect_vars": False}))
    item: protocol.DownloadItem = {"n": 0, "blob": "b1", "dest": "/tmp/x", "size": 1,
                                   "sha256": "00", "mode": 0o644, "is_dir": False,
                                   "src": "127.0.0.1:/x"}
    assert list(protocol.download(TASK, items=[item], account="root", create_dirs=True,
                                  speed_limit=None, timeout=60, max_size=None)) == [
        "t", "id", "kind", "items", "account", "create_dirs", "speed_limit", "timeout",
        "max_size"]
    assert protocol.kill(TASK, "timeout") == {"t": "kill", "id": TASK, "reason": "timeout"}
    assert orjson.dumps(protocol.ack([[TASK, 3]])) == b'{"t":"ack","acks":[["12:0:7",3]]}'
    # a request's id went on last (the engine numbers it when it sends)
    assert list(protocol.file_list("rq", ["/a"], "root")) == ["t", "patterns", "account", "id"]
    assert list(protocol.file_upload("rq", [{"n": 0, "path": "/a", "blob": "b"}], "root",
                                     None, 10)) == [
        "t", "items", "account", "speed_limit", "max_size", "id"]
    assert list(protocol.file_upload("rq", [], "root", None, 10, "3.1.s9")) == [
        "t", "items", "account", "speed_limit", "max_size", "seed_transfer", "id"]
    offer: protocol.SeedOffer = {"transfer": "3.1.s9", "token": "t", "expires": 1,
                                 "piece_size": protocol.PIECE_SIZE}
    assert list(protocol.file_seed("rq", [], "root", None, offer)) == [
        "t", "items", "account", "max_size", "seed", "id"]


def test_every_message_type_has_its_constructor() -> None:
    kinds = {}
    for union in (protocol.AgentMessage, protocol.ServerMessage):
        for cls in typing.get_args(union):
            kinds[cls.__name__] = typing.get_type_hints(cls)["t"]
    built = [protocol.hello(version="", hostname="", os="", os_name="", ipv6="", labels={},
                            known=[]),
             protocol.output(TASK, 1, ""),
             protocol.done(TASK, 1, status=0, exit=0, start=0, end=0, data=""),
             protocol.file_log(TASK, []), protocol.reply("r"),
             protocol.welcome("a", 1, 1.0, ""), protocol.run(TASK, **RUN),
             protocol.download(TASK, items=[], account="", create_dirs=True, speed_limit=None,
                               timeout=1, max_size=None),
             protocol.kill(TASK, "x"), protocol.ack([]), protocol.file_list("r", [], ""),
             protocol.file_upload("r", [], "", None, None),
             protocol.file_seed("r", [], "", None, {"transfer": "x", "token": "t", "expires": 1,
                                                    "piece_size": 1}),
             protocol.stats(protocol.host_load(1.0, 2.0, 3))]
    assert {m["t"] for m in built} == {typing.get_args(k)[0] for k in kinds.values()} | {"hello"}


def test_a_name_keeps_no_control_character() -> None:
    from jobfleet.domain.protocol import clean_name

    assert clean_name("web-01.example") == "web-01.example"
    assert clean_name("web\x1b]0;t\x07\x00\t\r\n\x7f\x9b-01") == "web]0;t-01"
    assert clean_name("hôte-\ud800") == "hôte-\ufffd"


def _run_message(script: str, lang: int = 1) -> dict[str, typing.Any]:
    return dict(protocol.run("1:0:1", lang=lang, script=script, args=[], account="root",
                             timeout=5, env={}, max_output=1000))


def test_a_utf8_script_goes_on_the_wire_as_before() -> None:
    for script in ("echo hi\n", "echo 中文 é\n"):
        message = _run_message(script)
        assert protocol.exact_script(message) is message
        assert protocol.script_bytes(typing.cast(protocol.ScriptRun, message)) == script.encode()


def test_a_script_that_is_not_utf8_travels_as_its_bytes() -> None:
    raw = b"echo \xd6\xd0\xce\xc4 \xff\n"
    message = protocol.exact_script(_run_message(raw.decode("utf-8", "surrogateescape")))
    # JSON carries it, and the agent gets the bytes back
    wire = orjson.loads(orjson.dumps(message))
    assert protocol.script_bytes(wire) == raw
    assert "script_b64" not in _run_message("echo hi\n")


def test_an_agent_without_script_b64_fails_with_the_reason_instead_of_running_other_bytes(
    tmp_path: Path,
) -> None:
    raw = "echo \udcd6\udcd0\n"
    runners = [(1, ["bash"]), (4, [sys.executable])]
    if shutil.which("perl"):
        runners.append((3, ["perl"]))
    for lang, argv in runners:
        old = protocol.exact_script(_run_message(raw, lang))["script"]
        path = tmp_path / f"old{lang}"
        path.write_text(old)
        done = subprocess.run([*argv, str(path)], capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode != 0, done
        assert "not UTF-8" in done.stderr and "upgrade the agent" in done.stderr, done


def test_clean_texts_refuses_what_nests_past_its_depth() -> None:
    shallow: list[Any] = ["a\x00"]
    for _ in range(protocol.MAX_TEXT_DEPTH - 1):
        shallow = [shallow]
    assert protocol.clean_texts(shallow) is not None
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested"):
        protocol.clean_texts({"a": deep})


def test_a_refused_reply_carries_a_bounded_why() -> None:
    """The why quotes what the agent sent: the failed request gets a bounded part of it,
    whoever refused the answer."""
    error = protocol.refused_reply("r1", "x" * 5000)["error"]
    assert "x" * protocol.REFUSED_DETAIL in error
    assert len(error) < protocol.REFUSED_DETAIL + 100
