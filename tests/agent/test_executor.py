"""The process executor, against real subprocesses."""

from __future__ import annotations

import asyncio
import itertools
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.agent import executor as executor_module
from jobfleet.agent import interpreters
from jobfleet.agent.executor import ProcessExecutor
from jobfleet.agent.interpreters import find_interpreter
from jobfleet.agent.processes import kill_process_tree
from jobfleet.agent.swarm import InstantExecutor
from jobfleet.agent.task import TaskResult, TaskSpec
from jobfleet.domain.status import HostStatus, ScriptLanguage

SELF = pwd.getpwuid(os.geteuid()).pw_name
IS_ROOT = os.geteuid() == 0
MARK = "JF_TEST_MARK"

pytestmark = pytest.mark.timeout(30)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="switching accounts needs root")


# distinct in one run (two random ids could be equal: an executor takes a task whose id
# it already runs for a duplicate), and apart from other runs by the random start
TASK_NUMBERS = itertools.count(uuid.uuid4().int % 10**9)


def spec(script: str, **fields: object) -> TaskSpec:
    values: dict[str, object] = {
        "id": f"7:1:{next(TASK_NUMBERS)}",
        "lang": ScriptLanguage.SHELL,
        "script": script,
        "args": [],
        "account": SELF,
        "timeout": 30,
        "env": {},
        "max_output": 1 << 20,
    }
    values.update(fields)
    return TaskSpec(**values)  # type: ignore[arg-type]


async def run(
    executor: ProcessExecutor,
    task: TaskSpec,
    on_started: Callable[[int], None] | None = None,
) -> tuple[TaskResult, list[str]]:
    chunks: list[str] = []

    async def on_output(text: str) -> None:
        chunks.append(text)

    result = await executor.run(task, on_output, on_started)
    return result, chunks


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (zombies have none)."""
    needle = f"{MARK}={marker}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


async def wait_started(marker: str, count: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while len(marked_processes(marker)) < count:
        assert time.monotonic() < deadline, "the script's processes never appeared"
        await asyncio.sleep(0.02)


async def wait_gone(marker: str, within: float = 2.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return left


@pytest.fixture
def marker() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked_processes(value):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    # under /tmp rather than tmp_path: pytest's 0700 parents would stop other accounts
    path = Path(tempfile.mkdtemp(prefix="jobfleet-exec-"))
    os.chmod(path, 0o711)
    yield path / "work"
    subprocess.run(["rm", "-rf", str(path)], check=False)


MakeExecutor = Callable[..., ProcessExecutor]


@pytest.fixture
def make_executor(work_dir: Path) -> Iterator[MakeExecutor]:
    """Executors on ``work_dir``, closed at the end: each one's watchdog process is let
    go and waited for, not left running past the test."""
    made: list[ProcessExecutor] = []

    def make(**options: Any) -> ProcessExecutor:
        made.append(ProcessExecutor(work_dir, **options))
        return made[-1]

    yield make
    for executor in made:
        reaper = executor.close()
        if reaper is not None:
            reaper.join()


@pytest.fixture
def executor(make_executor: MakeExecutor) -> ProcessExecutor:
    return make_executor(chunk_interval=0.05)


# --- output and exit status -----------------------------------------------------------


async def test_echo_delivers_one_chunk(executor: ProcessExecutor) -> None:
    result, chunks = await run(executor, spec("echo hello"))
    assert (result.status, result.exit_code, result.message) == (HostStatus.SUCCESS, 0, "")
    assert chunks == ["hello\n"]
    assert result.start_ms <= result.end_ms


async def test_output_is_byte_exact_and_ordered(executor: ProcessExecutor) -> None:
    script = """printf '{"a": 1}'; echo; echo err >&2; echo out"""
    _, chunks = await run(executor, spec(script))
    assert "".join(chunks) == '{"a": 1}\nerr\nout\n'


async def test_silent_script_never_calls_on_output(executor: ProcessExecutor) -> None:
    result, chunks = await run(executor, spec("true"))
    assert result.status == HostStatus.SUCCESS
    assert chunks == []


async def test_nonzero_exit(executor: ProcessExecutor) -> None:
    result, _ = await run(executor, spec("exit 3"))
    assert (result.status, result.exit_code) == (HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE, 3)


async def test_killed_by_signal_reports_128_plus_n(executor: ProcessExecutor) -> None:
    result, _ = await run(executor, spec("kill -TERM $$"))
    assert (result.status, result.exit_code) == (HostStatus.SCRIPT_NOT_ZERO_EXIT_CODE, 143)


async def test_args_are_never_shell_interpreted(executor: ProcessExecutor, tmp_path: Path) -> None:
    trap = tmp_path / "injected"
    args = ["a b", f"$(touch {trap})", f"; touch {trap}", "'\"", ""]
    _, chunks = await run(executor, spec('printf "<%s>\\n" "$@"', args=args))
    assert "".join(chunks) == "".join(f"<{arg}>\n" for arg in args)
    assert not trap.exists()


@pytest.mark.parametrize("script_files", [False, True])
async def test_python_and_perl(make_executor: MakeExecutor, script_files: bool) -> None:
    executor = make_executor(script_files=script_files)
    python = "import sys; print(sys.argv[1:], sys.version_info[0])"
    result, chunks = await run(executor, spec(python, lang=ScriptLanguage.PYTHON, args=["x"]))
    assert result.status == HostStatus.SUCCESS
    assert "".join(chunks).startswith("['x'] ")
    if find_interpreter(ScriptLanguage.PERL) is None:
        pytest.skip("no perl on this host")
    perl = 'print "perl:$ARGV[0]\\n";'
    _, chunks = await run(executor, spec(perl, lang=ScriptLanguage.PERL, args=["y"]))
    assert chunks == ["perl:y\n"]


async def test_utf8_split_across_reads(executor: ProcessExecutor) -> None:
    script = r"printf '\303'; sleep 0.2; printf '\251\n'"
    _, chunks = await run(executor, spec(script))
    assert "".join(chunks) == "é\n"


async def test_invalid_utf8_is_replaced(executor: ProcessExecutor) -> None:
    _, chunks = await run(executor, spec(r"printf 'a\377b'"))
    assert chunks == ["a\ufffdb"]


async def test_nul_becomes_the_symbol_for_null(executor: ProcessExecutor) -> None:
    _, chunks = await run(executor, spec(r"printf 'a\0b\0'; printf '\342\202'; sleep 0.2; "
                                         r"printf '\254\0'"))
    assert "".join(chunks) == "a\u2400b\u2400\u20ac\u2400"


# --- chunking and truncation ----------------------------------------------------------


async def test_chunks_flush_on_interval(executor: ProcessExecutor) -> None:
    _, chunks = await run(executor, spec("echo a; sleep 0.4; echo b"))
    assert chunks == ["a\n", "b\n"]


async def test_chunks_flush_on_size_before_exit(make_executor: MakeExecutor) -> None:
    executor = make_executor(chunk_interval=30, chunk_bytes=10)
    seen: list[tuple[float, str]] = []
    start = time.monotonic()

    async def on_output(text: str) -> None:
        seen.append((time.monotonic() - start, text))

    script = "head -c 100 /dev/zero | tr '\\0' x; sleep 0.5; echo end"
    result = await executor.run(spec(script), on_output)
    assert result.status == HostStatus.SUCCESS
    assert seen[0][0] < 0.45
    assert "".join(text for _, text in seen) == "x" * 100 + "end\n"


async def test_slow_consumer_loses_nothing(
    make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "PAUSE_READING_AT", 16384)
    executor = make_executor(chunk_bytes=4096)
    received: list[str] = []

    async def on_output(text: str) -> None:
        received.append(text)
        await asyncio.sleep(0.01)  # slower than the script writes: reading pauses

    script = "for i in $(seq 1 3000); do printf '%05d%0995d\\n' $i 0; done"
    result = await executor.run(spec(script, max_output=1 << 30), on_output)
    lines = "".join(received).splitlines()
    assert result.status == HostStatus.SUCCESS
    assert [int(line[:5]) for line in lines] == list(range(1, 3001))
    assert all(len(line) == 1000 for line in lines)


async def test_output_truncated_once(executor: ProcessExecutor) -> None:
    script = "head -c 100 /dev/zero | tr '\\0' x; sleep 0.1; echo more"
    result, chunks = await run(executor, spec(script, max_output=10))
    assert result.status == HostStatus.SUCCESS
    assert "".join(chunks) == "x" * 10 + "\n[jobfleet-agent: output truncated at 10 bytes]\n"


async def test_truncation_inside_a_character(executor: ProcessExecutor) -> None:
    _, chunks = await run(executor, spec("printf 'ééé'", max_output=3))
    assert "".join(chunks) == "é\ufffd\n[jobfleet-agent: output truncated at 3 bytes]\n"


# --- interpreters -----------------------------------------------------------------------


def test_python_lookup_skips_shims(tmp_path: Path) -> None:
    shims = tmp_path / ".pyenv" / "shims"
    real = tmp_path / "bin"
    for directory in (shims, real):
        directory.mkdir(parents=True)
    for path in (shims / "python3", real / "python"):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    dirs = [str(shims), str(real)]
    resolve = interpreters._resolve_python
    assert resolve(dirs, ["/nonexistent/python3"], sys.executable) == str(real / "python")
    assert resolve(dirs, [sys.executable], sys.executable) == sys.executable
    # only a shim: the running interpreter's real binary stands in for it
    only_shim = resolve([str(shims)], [], sys.executable)
    assert only_shim == os.path.realpath(sys.executable)
    assert resolve([str(tmp_path / "empty")], [], sys.executable) is None


def test_find_interpreter_uses_real_binaries() -> None:
    python = find_interpreter(ScriptLanguage.PYTHON)
    assert python is not None
    assert "/shims/" not in python[0]
    shell = find_interpreter(ScriptLanguage.SHELL)
    assert shell is not None
    assert os.path.basename(shell[0]) in ("bash", "sh")
    assert find_interpreter(ScriptLanguage.BAT) is None


async def test_missing_interpreter_fails_the_host(executor: ProcessExecutor) -> None:
    result, chunks = await run(executor, spec("echo hi", lang=ScriptLanguage.BAT))
    assert (result.status, result.exit_code) == (HostStatus.SCRIPT_FAILED, 127)
    assert result.message.startswith("jobfleet-agent: ")
    if find_interpreter(ScriptLanguage.POWERSHELL) is None:
        result, _ = await run(executor, spec("Write-Output 1", lang=ScriptLanguage.POWERSHELL))
        assert (result.status, result.exit_code) == (HostStatus.SCRIPT_FAILED, 127)
        assert result.message == (
            "jobfleet-agent: no interpreter for powershell on this host (looked for pwsh)"
        )
    assert chunks == []


# --- files, environment, accounts --------------------------------------------------------


async def test_script_is_in_memory_by_default(executor: ProcessExecutor, work_dir: Path) -> None:
    script = 'echo "$0"; readlink "$0"'
    result, chunks = await run(executor, spec(script))
    assert result.status == HostStatus.SUCCESS
    path, target = "".join(chunks).splitlines()
    assert path.startswith(("/dev/fd/", "/proc/self/fd/"))
    assert target.startswith("/memfd:script.sh")
    assert list(work_dir.iterdir()) == []


async def test_script_file_is_private_and_removed(
    make_executor: MakeExecutor, work_dir: Path
) -> None:
    executor = make_executor(script_files=True)
    script = 'echo "$0"; stat -c "%a %U" "$0"; stat -c "%a" "$(dirname "$0")"'
    _, chunks = await run(executor, spec(script))
    path, file_mode, dir_mode = "".join(chunks).splitlines()
    assert path.endswith(".sh")
    assert Path(path).parent.parent == work_dir
    assert file_mode == f"600 {SELF}"
    assert dir_mode == "700"
    assert not Path(path).exists()
    assert list(work_dir.iterdir()) == []


async def test_environment_is_clean(
    make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rc_file = tmp_path / "rc"
    rc_file.write_text("echo SOURCED\n")
    monkeypatch.setenv("AGENT_SECRET", "hunter2")
    monkeypatch.setenv("BASH_ENV", str(rc_file))
    monkeypatch.setenv("LANG", "C.UTF-8")
    executor = make_executor()
    _, chunks = await run(executor, spec("env", id="7:1:1", env={"EXTRA": "1"}))
    env = dict(line.split("=", 1) for line in "".join(chunks).splitlines())
    assert "SOURCED" not in "".join(chunks)
    assert "AGENT_SECRET" not in env
    assert "BASH_ENV" not in env
    assert env["EXTRA"] == "1"
    assert env["JOBFLEET_TASK_ID"] == "7:1:1"
    assert env["LANG"] == "C.UTF-8"
    assert env["USER"] == env["LOGNAME"] == SELF
    assert env["HOME"] == pwd.getpwnam(SELF).pw_dir
    assert "PATH" in env


@needs_root
@pytest.mark.parametrize("script_files", [False, True])
async def test_runs_as_the_requested_account(
    make_executor: MakeExecutor, script_files: bool
) -> None:
    executor = make_executor(script_files=script_files)
    nobody = pwd.getpwnam("nobody")
    script = 'id -un; id -G; pwd; echo "$HOME $USER"; stat -L -c %U "$0"'
    result, chunks = await run(executor, spec(script, account="nobody"))
    assert result.status == HostStatus.SUCCESS, chunks
    name, groups, cwd, env, owner = "".join(chunks).splitlines()
    assert name == "nobody"
    assert sorted(map(int, groups.split())) == sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    expected_cwd = nobody.pw_dir if os.path.isdir(nobody.pw_dir) else "/tmp"
    assert cwd == expected_cwd
    assert env == f"{nobody.pw_dir} nobody"
    # an in-memory script belongs to the agent but is reachable only through the fd
    assert owner == ("nobody" if script_files else SELF)


async def test_unknown_account_fails_the_host(executor: ProcessExecutor) -> None:
    account = "no-such-user-" + uuid.uuid4().hex[:8]
    result, chunks = await run(executor, spec("echo hi", account=account))
    assert result.status == HostStatus.GSE_USER_ERROR
    assert account in result.message
    assert chunks == []


@needs_root
async def test_non_root_agent_cannot_switch(
    executor: ProcessExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(os, "geteuid", lambda: nobody.pw_uid)
    result, _ = await run(executor, spec("echo hi", account="root"))
    assert result.status == HostStatus.GSE_USER_ERROR
    assert result.message == "jobfleet-agent: the agent runs as nobody and cannot switch to root"


async def test_spawn_error_fails_the_host(executor: ProcessExecutor) -> None:
    result, _ = await run(executor, spec("echo hi", env={"BAD=NAME": "x"}))
    assert result.status == HostStatus.SCRIPT_FAILED
    assert result.message.startswith("jobfleet-agent: could not start the script")


# --- process groups, timeouts, kills -------------------------------------------------------


async def test_on_started_gets_the_process_group(executor: ProcessExecutor) -> None:
    started: list[int] = []
    _, chunks = await run(executor, spec("cut -d' ' -f5 /proc/$$/stat"), started.append)
    assert started == [int("".join(chunks))]


TREE = "sleep 1000 & setsid sleep 1000 & echo started; sleep 1000"


async def test_timeout_kills_the_whole_tree(executor: ProcessExecutor, marker: str) -> None:
    begin = time.monotonic()
    result, chunks = await run(executor, spec(TREE, timeout=1, env={MARK: marker}))
    assert time.monotonic() - begin < 3
    assert (result.status, result.exit_code) == (HostStatus.SCRIPT_TIMEOUT, 137)
    assert "timed out" in result.message
    assert chunks == ["started\n"]
    assert await wait_gone(marker) == []


async def test_kill_terminates_the_whole_tree(executor: ProcessExecutor, marker: str) -> None:
    task = spec(TREE, env={MARK: marker})
    kills: list[bool] = []

    async def on_output(text: str) -> None:
        await wait_started(marker, 4)
        kills.append(executor.kill(task.id))

    result = await executor.run(task, on_output)
    assert kills == [True]
    assert (result.status, result.exit_code) == (HostStatus.GSE_TASK_TERMINATE_SUCCESS, 137)
    assert await wait_gone(marker) == []
    assert executor.kill(task.id) is False


async def test_cancelled_run_leaves_nothing_behind(executor: ProcessExecutor, marker: str) -> None:
    task = asyncio.create_task(run(executor, spec(TREE, env={MARK: marker})))
    await wait_started(marker, 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await wait_gone(marker) == []


def group_leader(pids: list[int]) -> int:
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            if int(stat.read().rsplit(")", 1)[1].split()[2]) == pid:
                return pid
    raise AssertionError("no group leader")


async def test_kill_process_tree_finds_escaped_children(marker: str) -> None:
    # what a crashed agent leaves behind: a task tree that is no descendant of this
    # process (setsid -f forks and lets the tree be reparented)
    env = {**os.environ, MARK: marker, "JOBFLEET_TASK_ID": "1:1:1"}
    subprocess.run(["setsid", "-f", "bash", "-c", TREE], env=env, check=True)
    await wait_started(marker, 3)
    kill_process_tree(group_leader(marked_processes(marker)))
    assert await wait_gone(marker) == []


async def test_kill_process_tree_spares_processes_it_did_not_start(marker: str) -> None:
    # a pgid from the spool that now belongs to something else (recycled after a reboot)
    env = {**os.environ, MARK: marker}
    proc = subprocess.Popen(["sleep", "1000"], env=env, start_new_session=True)
    try:
        await wait_started(marker, 1)
        kill_process_tree(proc.pid)
        await asyncio.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


async def test_kill_process_tree_spares_this_agents_own_tasks(
    executor: ProcessExecutor, marker: str
) -> None:
    started: list[int] = []
    sleeper = spec("sleep 1000; true", env={MARK: marker})
    task = asyncio.create_task(run(executor, sleeper, started.append))
    await wait_started(marker, 2)
    # the processes can be seen a moment before the executor reports the start
    for _ in range(250):
        if started:
            break
        await asyncio.sleep(0.02)
    kill_process_tree(started[0])
    await asyncio.sleep(0.1)
    assert len(marked_processes(marker)) == 2
    assert executor.kill(sleeper.id)
    result, _ = await task
    assert result.status == HostStatus.GSE_TASK_TERMINATE_SUCCESS


async def test_background_child_holding_the_pipe_does_not_hang(
    executor: ProcessExecutor, marker: str
) -> None:
    begin = time.monotonic()
    result, chunks = await run(executor, spec("nohup sleep 100 & echo done", env={MARK: marker}))
    assert time.monotonic() - begin < 1.5
    assert result.status == HostStatus.SUCCESS
    assert chunks == ["done\n"]
    # a deliberately backgrounded process is left running
    assert len(marked_processes(marker)) == 1


async def test_event_loop_stays_responsive(executor: ProcessExecutor, marker: str) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    begun = time.monotonic()
    background = asyncio.create_task(ticker())
    result, _ = await run(executor, spec(TREE, timeout=1, env={MARK: marker}))
    background.cancel()
    took = time.monotonic() - begun
    assert result.status == HostStatus.SCRIPT_TIMEOUT
    # the loop ran all along: no pause near the run's length (a blocking wait for the
    # tree); counting ticks alone tells a loaded machine's slow timers from a block
    gaps = [b - a for a, b in zip([begun, *ticks], [*ticks, time.monotonic()], strict=True)]
    assert len(ticks) >= 10 and max(gaps) < took / 2, (len(ticks), max(gaps), took)


async def test_instant_executor() -> None:
    chunks: list[str] = []

    async def on_output(text: str) -> None:
        chunks.append(text)

    result = await InstantExecutor().run(spec("echo hi"), on_output)
    assert (result.status, result.exit_code, chunks) == (HostStatus.SUCCESS, 0, [])
    assert InstantExecutor().kill("1:1:1") is False
