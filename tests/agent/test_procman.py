"""The agent's process manager: start, keep alive, stop, and messages for plugins."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from jobfleet.agent import processes
from jobfleet.agent.procman import ProcessManager, pid_alive, read_pid
from jobfleet.domain import protocol


def spec(setup: Path, **extra: str) -> protocol.ProcSpec:
    base: protocol.ProcSpec = {
        "namespace": "ns", "name": "loop", "proc_name": "loop.sh", "setup_path": str(setup),
        "pid_file": str(setup / "loop.pid"), "account": "", "start_cmd": "", "stop_cmd": "",
        "restart_cmd": "", "reload_cmd": "", "kill_cmd": "", "start_check_secs": 3}
    return {**base, **extra}  # type: ignore[typeddict-item]


def request(op: int, s: protocol.ProcSpec) -> dict[str, object]:
    return dict(protocol.proc_request(op, s))


async def test_spawned_process_is_kept_alive_and_remembered(tmp_path: Path) -> None:
    setup = tmp_path / "app"
    setup.mkdir()
    (setup / "loop.sh").write_text("#!/bin/sh\nwhile true; do sleep 0.2; done\n")
    (setup / "loop.sh").chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    manager = ProcessManager(state, check_interval=0.2)
    manager.start()
    try:
        started = (await manager.handle(request(protocol.PROC_START, spec(setup))))["proc"]
        assert started["code"] == 0 and started["delegated"] and started["pid"] > 0
        again = (await manager.handle(request(protocol.PROC_START, spec(setup))))["proc"]
        assert again["code"] == 828
        os.kill(started["pid"], signal.SIGKILL)
        for _ in range(50):
            await asyncio.sleep(0.1)
            now = (await manager.handle(request(protocol.PROC_STATUS, spec(setup))))["proc"]
            if now["pid"] > 0 and now["pid"] != started["pid"]:
                break
        assert now["restarts"] == 1 and now["status"] == 1
        assert json.loads((state / "procs.json").read_text())["ns:loop"]["restarts"] == 1
        # a new manager (a restarted agent) knows the process
        assert ProcessManager(state)._procs["ns:loop"].delegated
        stopped = (await manager.handle(request(protocol.PROC_STOP, spec(setup))))["proc"]
        assert stopped["code"] == 0 and stopped["status"] == 2 and not stopped["delegated"]
        assert not pid_alive(now["pid"])
        unknown = await manager.handle(request(protocol.PROC_STATUS, spec(setup, name="other")))
        assert unknown["proc"]["status"] == 0
    finally:
        await manager.stop()


async def test_failed_start_and_delivery(tmp_path: Path) -> None:
    manager = ProcessManager(tmp_path)
    manager.start()
    assert manager._keeper is None  # nothing delegated: no periodic work
    bad = spec(tmp_path, start_cmd="exit 3", start_check_secs=1)  # type: ignore[arg-type]
    answer = (await manager.handle(request(protocol.PROC_START, bad)))["proc"]
    assert answer["code"] == 65535 and "exited with 3" in answer["message"]
    never = spec(tmp_path, start_cmd="true", start_check_secs=1)  # type: ignore[arg-type]
    answer = (await manager.handle(request(protocol.PROC_START, never)))["proc"]
    assert answer["code"] == 836
    done = manager.deliver({"message_id": "../m 1", "slot_id": 3, "content": "hi"})
    path = Path(str(done["delivered"]))
    assert path.parent == tmp_path / "messages" / "3" and path.name == ".._m_1.json"
    assert json.loads(path.read_text())["content"] == "hi"
    assert ProcessManager(None).deliver({"message_id": "m", "slot_id": 1, "content": ""})[
        "status"] == 65535


async def test_a_process_sees_its_account_not_the_agents_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's environment (its enrollment token) stays the agent's: a managed process
    gets PATH, the locale and its account's login variables, as a script does."""
    monkeypatch.setenv("JOBFLEET_ENROLL_TOKEN", "not-for-plugins")
    setup = tmp_path / "app"
    setup.mkdir()
    seen = setup / "env.txt"
    command = f"env > {seen}; sleep 30 & echo $! > {setup / 'loop.pid'}"
    manager = ProcessManager(None)
    try:
        started = await manager.handle(
            request(protocol.PROC_START, spec(setup, start_cmd=command)))
        assert started["proc"]["code"] == 0, started
        env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
        me = pwd.getpwuid(os.geteuid())
        assert "JOBFLEET_ENROLL_TOKEN" not in env
        assert (env["USER"], env["HOME"], env["LOGNAME"]) == (me.pw_name, me.pw_dir, me.pw_name)
        assert env["PATH"]
        await manager.handle(request(protocol.PROC_KILL, spec(setup)))
    finally:
        await manager.stop()


def test_a_pid_file_is_read_no_further_than_a_pid(tmp_path: Path) -> None:
    """The pid path is the caller's: a device that never ends, a FIFO no one writes or a
    huge file give their first number or none, at once and without reading them all."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    with big.open("wb") as out:
        out.write(b"4242\n")
        out.truncate(1 << 40)  # sparse: a terabyte that nothing may read whole
    assert read_pid("/dev/zero") == -1
    assert read_pid(str(fifo)) == -1
    assert read_pid(str(big)) == 4242
    assert read_pid(str(tmp_path)) == -1
    assert read_pid(str(tmp_path / "missing")) == -1


def _reaped(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.11's own pidfd watcher is replaced only there",
)
def test_a_managed_process_that_ends_after_the_agents_loop_is_reaped(tmp_path: Path) -> None:
    """A managed process runs on after its agent stops; in a program that embeds the
    agent (its loop closed, the program still running) it is reaped when it ends, not
    left a zombie of the program."""
    setup = tmp_path / "app"
    setup.mkdir()
    (setup / "once.sh").write_text("#!/bin/sh\nsleep 1\n")
    (setup / "once.sh").chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()

    async def agent() -> int:
        processes.reap_without_threads(asyncio.get_running_loop())
        manager = ProcessManager(state)
        try:
            once = spec(setup, proc_name="once.sh", pid_file=str(setup / "once.pid"))
            once["start_check_secs"] = 0
            started = (await manager.handle(request(protocol.PROC_START, once)))["proc"]
            assert started["code"] == 0, started
            return int(started["pid"])
        finally:
            await manager.stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_child_watcher()
    try:
        pid = asyncio.run(agent())
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(previous)
    assert _reaped(pid, within=10), Path(f"/proc/{pid}/stat").read_text()


def test_a_link_planted_at_a_messages_partial_file_is_not_followed(tmp_path: Path) -> None:
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    outside.write_text("kept")
    folder = state / "messages" / "1"
    folder.mkdir(parents=True)
    (folder / ".m1.part").symlink_to(outside)
    done = ProcessManager(state).deliver({"message_id": "m1", "slot_id": 1, "content": "hi"})
    assert outside.read_text() == "kept"
    assert json.loads(Path(str(done["delivered"])).read_text())["content"] == "hi"
    assert not (folder / ".m1.part").exists()
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert ((state / "messages").stat().st_mode & 0o777) == 0o700


def test_a_messages_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    (state / "messages").mkdir(parents=True)
    elsewhere.mkdir()
    (state / "messages" / "1").symlink_to(elsewhere)
    with pytest.raises(OSError, match="not a directory of the agent's own"):
        ProcessManager(state).deliver({"message_id": "m1", "slot_id": 1, "content": "hi"})
    assert list(elsewhere.iterdir()) == []


async def test_a_link_planted_at_the_procs_partial_file_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("kept")
    state = tmp_path / "state"
    state.mkdir()
    (state / "procs.part").symlink_to(outside)
    manager = ProcessManager(state)
    await manager.handle(request(protocol.PROC_UNDELEGATE, spec(tmp_path)))
    assert outside.read_text() == "kept"
    saved = json.loads((state / "procs.json").read_text())
    assert list(saved) == ["ns:loop"]
    assert ((state / "procs.json").stat().st_mode & 0o777) == 0o600


async def test_a_spec_with_a_field_of_another_type_is_refused_before_it_is_kept(
        tmp_path: Path) -> None:
    """Kept, it would end the keeper's task (where the error is lost) at its next look."""
    manager = ProcessManager(tmp_path)
    manager.start()
    bad: Any = {**spec(tmp_path)}
    del bad["pid_file"]
    with pytest.raises(TypeError, match="pid_file"):
        await manager.handle(request(protocol.PROC_DELEGATE, bad))
    bad = {**spec(tmp_path), "start_check_secs": "5"}
    with pytest.raises(TypeError, match="start_check_secs"):
        await manager.handle(request(protocol.PROC_START, bad))
    assert manager._procs == {} and manager._keeper is None
    assert not (tmp_path / "procs.json").exists()
    await manager.stop()


async def test_a_dispatch_and_a_proc_save_do_not_wait_for_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both run on the agent's event loop: an fsync there holds every task's output."""
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    manager = ProcessManager(tmp_path)
    manager.deliver({"message_id": "m1", "slot_id": 1, "content": "hi"})
    await manager.handle(request(protocol.PROC_UNDELEGATE, spec(tmp_path)))
    assert (tmp_path / "procs.json").exists()
    assert synced == []


def test_a_saved_spec_of_another_type_is_skipped_and_the_others_are_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = {"spec": spec(tmp_path), "delegated": True, "restarts": 2, "start_time": 5}
    mistyped = {"spec": {**spec(tmp_path, name="bad"), "start_check_secs": "3"},
                "delegated": True, "restarts": 0, "start_time": 0}
    (tmp_path / "procs.json").write_text(json.dumps({"ns:bad": mistyped, "ns:loop": good}))
    manager = ProcessManager(tmp_path)
    assert list(manager._procs) == ["ns:loop"]
    kept = manager._procs["ns:loop"]
    assert kept.delegated and kept.restarts == 2 and kept.spec == good["spec"]
    assert "proc_state_unreadable proc=ns:bad" in caplog.text
    assert "start_check_secs" in caplog.text
