"""What an agent reports for a download the server killed."""

from __future__ import annotations

from typing import Any, cast

from jobfleet.agent.settings import AgentSettings
from jobfleet.agent.staging import staged_bytes
from jobfleet.agent.task import killed_download, script_spec
from jobfleet.domain import protocol
from jobfleet.domain.status import FileLogStatus, HostStatus


def test_a_killed_download_keeps_what_ended_and_fails_the_rest() -> None:
    task = cast(protocol.DownloadRun, {"items": [{"n": 0}, {"n": 1}, {"n": 2}]})
    done: list[protocol.FileItem] = [{"n": 0, "status": int(FileLogStatus.SUCCESS),
                                      "progress": 100}]
    result, items = killed_download("terminate", 1, task, done)
    assert result.status == HostStatus.GSE_TASK_TERMINATE_SUCCESS
    assert "terminated" in result.message and result.start_ms == 1
    assert items is not None
    by_n: dict[int, Any] = {int(i["n"]): i for i in items}
    assert by_n[0]["status"] == FileLogStatus.SUCCESS
    assert [by_n[n]["status"] for n in (1, 2)] == [FileLogStatus.FAILED] * 2
    assert "terminated" in by_n[1]["log"]


def test_a_download_killed_by_the_step_timeout_says_so() -> None:
    task = cast(protocol.DownloadRun, {"items": [{"n": 0}]})
    result, items = killed_download("timeout", 1, task, [])
    assert result.status == HostStatus.GSE_TIMEOUT and "timed out" in result.message
    assert items and items[0]["status"] == FileLogStatus.FAILED


def test_the_staged_script_holds_the_bytes_the_server_sent() -> None:
    raw = b"echo \xd6\xd0\xce\xc4 \xff caf\xc3\xa9\n"
    message = protocol.exact_script(dict(protocol.run(
        "1:0:1", lang=1, script=raw.decode("utf-8", "surrogateescape"), args=["a b"],
        account="root", timeout=5, env={}, max_output=1000, sensitive=True)))
    settings = AgentSettings(server="http://127.0.0.1:9", state_dir=None, ip="127.0.0.1")
    spec = script_spec("1:0:1", cast(protocol.ScriptRun, message), settings)
    # a sensitive parameter still comes first, as ``set --``
    assert staged_bytes(spec) == b"set -- 'a b'\n" + raw
    utf8 = dict(protocol.run("1:0:1", lang=1, script="echo é\n", args=[], account="root",
                             timeout=5, env={}, max_output=1000))
    spec = script_spec("1:0:1", cast(protocol.ScriptRun, utf8), settings)
    assert staged_bytes(spec) == "echo é\n".encode()
