"""Nothing of a task outlives it: timeout, terminate, and an agent that is SIGKILLed.

Every test runs with both containments: a cgroup per task (cgroup v2, root) and
process tracking (process group, session, descendants, the task's environment tag).
Processes are found by a unique marker in their command line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobfleet.agent import liveness, processes
from jobfleet.agent.executor import ProcessExecutor
from jobfleet.agent.task import TaskSpec
from jobfleet.domain.status import HostStatus, ScriptLanguage

pytestmark = pytest.mark.timeout(60)


def cgroups_available() -> bool:
    try:
        containment = processes.choose(processes.CGROUP, Path(tempfile.gettempdir()) / "probe")
    except processes.ContainmentError:
        return False
    containment.close()
    return True


@pytest.fixture(params=[processes.CGROUP, processes.PROC])
def mode(request: pytest.FixtureRequest) -> str:
    if request.param == processes.CGROUP and not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    return str(request.param)


@pytest.fixture
def marker() -> Iterator[str]:
    # a number sleep accepts, and a string no other process has in its command line
    value = f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**9:09d}"
    yield value
    for pid in marked(value):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jobfleet-procs-"))
    yield path / "work"
    shutil.rmtree(path, ignore_errors=True)


def marked(marker: str) -> list[int]:
    """Live (not zombie) processes with ``marker`` in their command line."""
    found = []
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                if needle not in cmdline.read():
                    continue
            with open(f"/proc/{name}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        found.append(int(name))
    return found


async def wait_for(marker: str, count: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while len(marked(marker)) < count:
        assert time.monotonic() < deadline, f"only {marked(marker)} started"
        await asyncio.sleep(0.02)


async def wait_gone(marker: str, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while (left := marked(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return left


def escaping_tree(marker: str) -> str:
    """Four escapes: a double-forked setsid sleep, a python daemon (fork, setsid,
    fork), a sleep that ignores SIGTERM, and the script's own sleep."""
    return textwrap.dedent(
        f"""\
        (setsid sleep {marker} &)
        python3 - {marker} <<'EOF' >/dev/null 2>&1
        import os, sys, time
        if os.fork():
            sys.exit(0)
        os.setsid()
        if os.fork():
            os._exit(0)
        time.sleep(1000)
        EOF
        trap '' TERM
        sleep {marker} &
        echo started
        sleep {marker}
        """
    )


# distinct in one run (two random ids could be equal: an executor takes a task whose id
# it already runs for a duplicate), and apart from other runs by the random start
TASK_NUMBERS = itertools.count(uuid.uuid4().int % 10**9)


ESCAPES = 4


def spec(script: str, timeout: int = 60) -> TaskSpec:
    return TaskSpec(
        id=f"9:1:{next(TASK_NUMBERS)}",
        lang=ScriptLanguage.SHELL,
        script=script,
        args=[],
        account="root" if os.geteuid() == 0 else os.environ.get("USER", ""),
        timeout=timeout,
        env={},
        max_output=1 << 20,
    )


async def ignore(_text: str) -> None:
    return None


async def test_timeout_leaves_nothing(mode: str, work_dir: Path, marker: str) -> None:
    executor = ProcessExecutor(work_dir, containment=mode)
    try:
        result = await executor.run(spec(escaping_tree(marker), timeout=2), ignore)
        assert result.status == HostStatus.SCRIPT_TIMEOUT
        assert await wait_gone(marker) == []
    finally:
        executor.close()


async def test_terminate_leaves_nothing(mode: str, work_dir: Path, marker: str) -> None:
    executor = ProcessExecutor(work_dir, containment=mode)
    task = spec(escaping_tree(marker))
    try:
        running = asyncio.create_task(executor.run(task, ignore))
        await wait_for(marker, ESCAPES)
        assert executor.kill(task.id)
        result = await running
        assert result.status == HostStatus.GSE_TASK_TERMINATE_SUCCESS
        assert await wait_gone(marker) == []
    finally:
        executor.close()


async def test_cgroup_catches_a_daemon_that_drops_its_environment(
    work_dir: Path, marker: str
) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    executor = ProcessExecutor(work_dir, containment=processes.CGROUP)
    try:
        script = f"(env -i setsid sleep {marker} &)\nsleep {marker}\n"
        result = await executor.run(spec(script, timeout=1), ignore)
        assert result.status == HostStatus.SCRIPT_TIMEOUT
        assert await wait_gone(marker) == []
        assert executor_cgroups(executor) == []
    finally:
        executor.close()


def executor_cgroups(executor: ProcessExecutor) -> list[Path]:
    """The executor's task cgroups that hold a process (empty ones wait for a task)."""
    base = executor._containment.base  # type: ignore[attr-defined]
    found = [p for p in base.iterdir() if p.is_dir()] if base.exists() else []
    return [p for p in found if processes.cgroup_pids(p)]


async def test_deliberate_background_process_survives_a_normal_end(
    mode: str, work_dir: Path, marker: str
) -> None:
    executor = ProcessExecutor(work_dir, containment=mode)
    try:
        result = await executor.run(spec(f"nohup sleep {marker} >/dev/null 2>&1 &"), ignore)
        assert result.status == HostStatus.SUCCESS
        await wait_for(marker, 1)
        if mode == processes.CGROUP:
            # out of the agent's cgroups: the agent's death spares it
            assert executor_cgroups(executor) == []
    finally:
        executor.close()
    await asyncio.sleep(0.3)
    assert len(marked(marker)) == 1


AGENT = """
import asyncio, sys
from pathlib import Path
from jobfleet.agent.executor import ProcessExecutor
from jobfleet.agent.task import TaskSpec

async def main() -> None:
    executor = ProcessExecutor(Path(sys.argv[1]), containment=sys.argv[2])
    spec = TaskSpec(id="5:1:1", lang=1, script=sys.stdin.read(), args=[], account=sys.argv[3],
                    timeout=600, env={}, max_output=1 << 20)
    async def out(text: str) -> None:
        print(text, end="", flush=True)
    await executor.run(spec, out)

asyncio.run(main())
"""


async def test_a_sigkilled_agent_leaves_nothing(mode: str, work_dir: Path, marker: str) -> None:
    account = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(work_dir), mode, account],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert agent.stdin is not None
        agent.stdin.write(escaping_tree(marker).encode())
        agent.stdin.close()
        await wait_for(marker, ESCAPES)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert await wait_gone(marker) == []
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


async def test_a_new_agent_kills_what_a_dead_one_left_in_its_cgroups(
    work_dir: Path, marker: str
) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    # what an agent and its watchdog, both killed, leave behind
    first = processes.choose(processes.CGROUP, work_dir)
    first.enter("5:1:2")
    try:
        subprocess.run(["setsid", "-f", "sleep", marker], check=True)
    finally:
        first.home()
    await wait_for(marker, 1)
    ProcessExecutor(work_dir, containment=processes.CGROUP).close()
    assert await wait_gone(marker) == []


def test_an_emptied_task_cgroup_serves_a_later_task(work_dir: Path) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    containment = processes.choose(processes.CGROUP, work_dir)
    assert isinstance(containment, processes.CgroupContainment)
    try:
        containment.enter("a")
        containment.home()
        first = containment.path("a")
        containment.release("a")
        assert first.is_dir()  # empty, kept for the next task
        containment.enter("b")
        containment.home()
        assert containment.path("b") == first
        containment.release("b")
        first.rmdir()  # as another agent, starting, removes cgroups that hold nothing
        containment.enter("c")
        try:
            assert os.getpid() in processes.cgroup_pids(containment.path("c"))
        finally:
            containment.home()
        containment.release("c")
    finally:
        containment.close()
    assert not containment.base.exists()


def test_killing_a_task_being_started_spares_the_agent(tmp_path: Path) -> None:
    """From the move into a task's cgroup until its spawn returns, the agent is in that
    cgroup; a kill of the task then (a terminate, the agent's stop) must not kill the
    agent. Run in a process of its own, so that a failure kills that process only."""
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    program = textwrap.dedent(f"""
        import os, subprocess
        from pathlib import Path
        from jobfleet.agent import processes
        containment = processes.choose(processes.CGROUP, Path({str(tmp_path)!r}))
        containment.enter("t1")
        child = subprocess.Popen(["sleep", "60"])  # forked in the task's cgroup
        containment.kill("t1", None)
        print("agent alive", child.wait() == -9,
              os.getpid() not in processes.cgroup_pids(containment.path("t1")))
        containment.close()
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["agent", "alive", "True", "True"], (
        done.returncode, done.stdout, done.stderr)


@pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.11's own pidfd watcher is replaced only there",
)
async def test_a_child_exit_reaches_the_loop_without_its_self_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_child_watcher()
    wakes: list[int] = []
    write_to_self = loop._write_to_self  # type: ignore[attr-defined]

    def counted() -> None:
        wakes.append(1)
        write_to_self()

    monkeypatch.setattr(loop, "_write_to_self", counted)
    try:
        processes.reap_without_threads(loop)
        for code in (0, 3):
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", f"echo out; exit {code}", stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            assert (out, proc.returncode) == (b"out\n", code)
        # the exit is reaped on the loop's thread: no write to wake the loop
        assert wakes == []
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(previous)


@contextlib.contextmanager
def _watcher_restored() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = asyncio.get_child_watcher()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(previous)


@pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.11's own pidfd watcher is replaced only there",
)
async def test_a_second_agent_of_the_process_keeps_the_first_ones_children() -> None:
    loop = asyncio.get_running_loop()
    with _watcher_restored():
        processes.reap_without_threads(loop)
        proc = await asyncio.create_subprocess_exec("sh", "-c", "sleep 0.3; exit 5")
        processes.reap_without_threads(loop)  # the next agent of a swarm starts
        assert await asyncio.wait_for(proc.wait(), 10) == 5


@pytest.mark.skipif(
    sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"),
    reason="Python 3.11's own pidfd watcher is replaced only there",
)
def test_children_end_on_every_loop_of_the_process() -> None:
    async def run(code: int, *, agent: bool) -> int | None:
        if agent:
            processes.reap_without_threads(asyncio.get_running_loop())
        proc = await asyncio.create_subprocess_exec("sh", "-c", f"exit {code}")
        return await asyncio.wait_for(proc.wait(), 10)

    with _watcher_restored():
        assert asyncio.run(run(3, agent=True)) == 3
        # after the agent's loop: a loop of the same thread, then one on another thread
        # that starts processes of its own (a program that embedded an agent earlier)
        assert asyncio.run(run(4, agent=False)) == 4
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            assert pool.submit(asyncio.run, run(6, agent=False)).result(timeout=20) == 6


def test_a_task_cgroup_removed_while_the_agent_moves_in_is_made_again(
    work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    containment = processes.choose(processes.CGROUP, work_dir)
    assert isinstance(containment, processes.CgroupContainment)
    real_move = processes._move
    raced: list[Path] = []

    def move_while_removed(pid: int, cgroup: Path) -> None:
        if raced or cgroup == containment._home:
            real_move(pid, cgroup)
            return
        raced.append(cgroup)
        fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        try:
            # another agent, starting, removes it between the open and the write
            cgroup.rmdir()
            os.write(fd, b"%d" % pid)
        finally:
            os.close(fd)

    monkeypatch.setattr(processes, "_move", move_while_removed)
    try:
        containment.enter("a")
        try:
            assert raced and os.getpid() in processes.cgroup_pids(containment.path("a"))
        finally:
            containment.home()
        containment.release("a")
    finally:
        containment.close()


def test_a_starting_agent_spares_the_idle_cgroups_of_a_running_one(tmp_path: Path) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    running = processes.choose(processes.CGROUP, tmp_path / "running")
    assert isinstance(running, processes.CgroupContainment)
    try:
        running.enter("a")
        running.home()
        pool = running.path("a")
        running.release("a")
        # the running agent is in its home cgroup: its own holds only the empty pool
        assert pool.is_dir() and processes.cgroup_pids(running.base) == []
        starting = processes.choose(processes.CGROUP, tmp_path / "starting")
        try:
            assert pool.is_dir()
        finally:
            starting.close()
        running.enter("b")
        try:
            assert running.path("b") == pool
            assert os.getpid() in processes.cgroup_pids(pool)
        finally:
            running.home()
        running.release("b")
    finally:
        running.close()
    assert not running.base.exists()


def test_a_starting_agent_removes_the_idle_cgroups_of_a_dead_one(tmp_path: Path) -> None:
    if not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    # two agents in one process that dies: one's cgroups stay, the other's its
    # watchdog removes; each leaves the lock file it held
    program = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from jobfleet.agent import processes
        for name in ("dead", "watched"):
            containment = processes.choose(processes.CGROUP, Path({str(tmp_path)!r}) / name)
            containment.enter("a")
            containment.home()
            print(containment.path("a"), flush=True)
            containment.release("a")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    died = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert died.returncode == -signal.SIGKILL, (died.stdout, died.stderr)
    pool, watched = (Path(line) for line in died.stdout.split())
    locks = [liveness.RUN_DIR / f"{p.parent.name}.lock" for p in (pool, watched)]
    assert pool.is_dir() and all(lock.exists() for lock in locks)
    watched.rmdir()
    watched.parent.rmdir()
    starting = processes.choose(processes.CGROUP, tmp_path / "starting")
    try:
        assert not pool.exists() and not pool.parent.exists()
        assert not any(lock.exists() for lock in locks)
    finally:
        starting.close()
