"""What an agent reports for a download the server killed."""

from __future__ import annotations

from typing import Any, cast

from jobfleet.agent.task import killed_download
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
