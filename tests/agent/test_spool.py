"""The result spool: what survives an agent crash and what an ack forgets."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from jobfleet.agent import spool as spool_module
from jobfleet.agent.enrollment import Credential, save_credential
from jobfleet.agent.spool import JOURNAL, Spool

pytestmark = pytest.mark.timeout(30)


def done(task_id: str, seq: int, status: int = 9) -> dict[str, Any]:
    return {
        "t": "done",
        "id": task_id,
        "seq": seq,
        "status": status,
        "exit": 0,
        "start": 1,
        "end": 2,
        "data": "",
    }


def out(task_id: str, seq: int, data: str) -> dict[str, Any]:
    return {"t": "out", "id": task_id, "seq": seq, "data": data}


def run_task(spool: Spool, task_id: str, chunks: list[str], *, finish: bool = True) -> None:
    spool.accept(task_id)
    spool.set_pgid(task_id, 4242)
    for seq, data in enumerate(chunks, 1):
        spool.add_output(task_id, seq, data)
    if finish:
        spool.finish(task_id, done(task_id, len(chunks) + 1))


@pytest.mark.parametrize("on_disk", [False, True])
def test_pending_and_ack(tmp_path: Path, on_disk: bool) -> None:
    spool = Spool(tmp_path / "spool" if on_disk else None)
    run_task(spool, "1:1:1", ["a", "b"])
    assert spool.known() == ["1:1:1"]
    assert spool.holds("1:1:1") and not spool.holds("1:1:2")
    assert spool.is_finished("1:1:1")
    assert spool.pending() == [out("1:1:1", 1, "a"), out("1:1:1", 2, "b"), done("1:1:1", 3)]

    spool.ack("1:1:1", 2)
    assert spool.pending() == [done("1:1:1", 3)]
    spool.ack("1:1:1", 1)  # a late, lower ack changes nothing
    assert spool.pending() == [done("1:1:1", 3)]

    spool.ack("1:1:1", 3)
    assert spool.known() == []
    assert not spool.holds("1:1:1")
    assert spool.pending() == []
    assert not spool.is_finished("1:1:1")
    spool.ack("1:1:1", 3)  # a repeated ack for a forgotten task is harmless


def test_memory_mode_touches_no_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spool = Spool(None)
    run_task(spool, "1:1:1", ["x"])
    assert spool.interrupted() == []
    assert list(tmp_path.iterdir()) == []


def test_pending_is_ordered_by_task_then_seq() -> None:
    spool = Spool(None)
    spool.accept("2:1:1")
    spool.accept("1:1:1")
    spool.add_output("1:1:1", 1, "p")
    spool.add_output("2:1:1", 2, "r")
    spool.add_output("2:1:1", 1, "q")
    assert [(m["id"], m["seq"]) for m in spool.pending()] == [
        ("2:1:1", 1),
        ("2:1:1", 2),
        ("1:1:1", 1),
    ]


def test_accept_twice_keeps_the_task() -> None:
    spool = Spool(None)
    run_task(spool, "1:1:1", ["a"], finish=False)
    spool.accept("1:1:1")
    assert spool.pending() == [out("1:1:1", 1, "a")]


def test_messages_for_an_unaccepted_task_are_refused() -> None:
    with pytest.raises(KeyError):
        Spool(None).add_output("9:9:9", 1, "x")


def test_reload_after_crash(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    run_task(spool, "1:1:1", ["a", "b"])
    run_task(spool, "1:1:2", ["c"], finish=False)
    spool.ack("1:1:1", 1)
    # no close(): the process just dies
    again = Spool(directory)
    assert again.known() == ["1:1:1", "1:1:2"]
    assert again.pending() == [out("1:1:1", 2, "b"), done("1:1:1", 3), out("1:1:2", 1, "c")]
    assert again.is_finished("1:1:1")
    assert not again.is_finished("1:1:2")
    assert again.interrupted() == [("1:1:2", 4242)]

    # the new agent reports the interrupted task; once acknowledged it is gone for good
    again.finish("1:1:2", done("1:1:2", 2, status=403))
    assert again.interrupted() == []
    again.ack("1:1:1", 3)
    again.ack("1:1:2", 2)
    assert again.known() == []
    assert Spool(directory).known() == []


def test_files_are_private(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    run_task(Spool(directory), "1:1:1", ["a"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert ":" not in path.name


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    run_task(spool, "1:1:1", ["a"], finish=False)
    with open(directory / JOURNAL, "ab") as journal:
        journal.write(b'{"t":"out","id":"1:1:1","seq":2,"da')
    again = Spool(directory)
    assert again.pending() == [out("1:1:1", 1, "a")]
    # later records land on a line of their own and survive the next reload
    again.add_output("1:1:1", 2, "b")
    assert Spool(directory).pending() == [out("1:1:1", 1, "a"), out("1:1:1", 2, "b")]


def test_damaged_record_in_the_middle_is_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    lines = [
        b'{"k":"accept","id":"1:1:1","at":1.0}',
        b"\x00\x00garbage",
        b'{"t":"out","id":"1:1:1","data":"no seq"}',
        b"[1, 2]",
        b'{"t":"out","id":"1:1:1","seq":1,"data":"a"}',
        b'{"t":"out","id":"7:7:7","seq":1,"data":"never accepted"}',
    ]
    (directory / JOURNAL).write_bytes(b"\n".join(lines) + b"\n")
    assert Spool(directory).pending() == [out("1:1:1", 1, "a")]


def test_journal_is_emptied_when_everything_is_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    for host in range(5):
        run_task(spool, f"1:1:{host}", ["x" * 100])
    for host in range(5):
        spool.ack(f"1:1:{host}", 2)
    assert (directory / JOURNAL).stat().st_size == 0


def test_journal_is_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "COMPACT_MIN_BYTES", 4096)
    directory = tmp_path / "spool"
    spool = Spool(directory, fsync=True)
    spool.accept("0:0:0")  # stays open, so the journal is never simply emptied
    for host in range(200):
        run_task(spool, f"1:1:{host}", ["y" * 50])
        spool.ack(f"1:1:{host}", 2)
    assert (directory / JOURNAL).stat().st_size < 3 * 4096
    assert not (directory / (JOURNAL + ".tmp")).exists()
    assert Spool(directory).known() == ["0:0:0"]


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from jobfleet.agent.spool import Spool

    spool = Spool(Path(sys.argv[1]))
    task = 0
    while True:
        task_id = f"5:1:{task}"
        spool.accept(task_id)
        spool.set_pgid(task_id, 1000 + task)
        for seq in range(1, 21):
            spool.add_output(task_id, seq, f"line {seq}\\n" * 50)
        if task % 2 == 0:
            spool.finish(task_id, {"seq": 21, "status": 9, "exit": 0,
                                   "start": 1, "end": 2, "data": ""})
        if task % 3 == 0:
            spool.ack(task_id, 10)
        if task == 3:
            print("ready", flush=True)
        task += 1
    """
)


def test_survives_sigkill_mid_write(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline() == "ready\n"
    time.sleep(0.1)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    spool = Spool(directory)
    known = spool.known()
    assert len(known) > 3
    by_task: dict[str, list[int]] = {task_id: [] for task_id in known}
    for message in spool.pending():
        by_task[message["id"]].append(message["seq"])
    for number, task_id in enumerate(known):
        seqs = by_task[task_id]
        first = 11 if number % 3 == 0 and seqs and seqs[0] == 11 else 1
        # a whole prefix of what was written, with nothing missing in between
        assert seqs == list(range(first, first + len(seqs)))
        assert spool.is_finished(task_id) == (21 in seqs)
    interrupted = dict(spool.interrupted())
    assert all(not spool.is_finished(task_id) for task_id in interrupted)
    assert all(pgid is None or pgid >= 1000 for pgid in interrupted.values())


def test_a_record_the_full_disk_cut_short_spoils_neither_the_next_nor_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    spool.accept("1:1:1")
    real = spool_module._write_all

    def disk_full_midway(fd: int, data: bytes) -> None:
        # what a disk that fills up mid-record does: part written, then ENOSPC
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_all", disk_full_midway)
    for seq in range(1, 4):
        spool.add_output("1:1:1", seq, f"chunk {seq}")
    monkeypatch.setattr(spool_module, "_write_all", real)
    spool.finish("1:1:1", done("1:1:1", 4))
    # the agent dies before the server acknowledged: its restart has the result
    again = Spool(directory)
    assert again.is_finished("1:1:1")
    assert again.pending()[-1] == done("1:1:1", 4)
    failed = [r for r in caplog.records if r.getMessage().startswith("spool write failed")]
    assert len(failed) == 1, failed
    assert any(r.getMessage().startswith("spool write resumed") for r in caplog.records)


def test_a_link_planted_at_a_partial_file_is_not_followed(tmp_path: Path) -> None:
    """The journal's and the credential's partial files are made anew, never opened
    through a link someone left at their name."""
    outside = tmp_path / "outside"
    outside.write_text("kept")
    state = tmp_path / "state"
    (state / "spool").mkdir(parents=True)
    (state / "spool" / "spool.jsonl.tmp").symlink_to(outside)
    (state / "credential.tmp").symlink_to(outside)
    spool = Spool(state / "spool")
    spool.accept("1:1:1")
    spool.close()
    Spool(state / "spool").close()
    save_credential(state, Credential("a", "s3cr3t", 1))
    assert outside.read_text() == "kept"
    assert "s3cr3t" in (state / "credential.json").read_text()
    assert ((state / "credential.json").stat().st_mode & 0o777) == 0o600
