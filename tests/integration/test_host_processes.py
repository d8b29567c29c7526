"""A task's processes on a real agent: none outlives the task, and no secret is in ``ps``.

Containment tests run with a cgroup per task and with process tracking
(``JOBFLEET_AGENT_CONTAINMENT``), against in-process agents and, for an agent that
is SIGKILLed, an agent process started the way an operator starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest
from tests.agent.test_processes import ESCAPES, cgroups_available, escaping_tree, marked
from tests.integration.harness import Running, agent_proc, b64, eventually

from jobfleet.agent import processes

IPS = ["127.0.0.2", "127.0.0.3"]
# what is asserted is on the host (processes, command lines); the server's side of a
# timeout, a termination and a lost agent is tested on every backend elsewhere
pytestmark = pytest.mark.one_backend


@pytest.fixture(params=[processes.CGROUP, processes.PROC])
def containment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == processes.CGROUP and not cgroups_available():
        pytest.skip("no cgroup v2 this agent may write to (needs root)")
    monkeypatch.setenv(processes.CONTAINMENT_ENV, str(request.param))
    return str(request.param)


@pytest.fixture
def marker() -> str:
    return f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**9:09d}"


def command_lines_holding(secret: str) -> list[str]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                text = cmdline.read()
        except OSError:
            continue
        if secret.encode() in text:
            found.append(text.replace(b"\0", b" ").decode(errors="replace"))
    return found


async def wait_gone(marker: str, within: float = 15.0) -> list[int]:
    async def gone() -> bool:
        return not marked(marker)

    with contextlib.suppress(AssertionError):
        await eventually(gone, timeout=within, interval=0.1)
    return marked(marker)


async def log_of(running: Running, sub: dict[str, int], ip: str) -> str:
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"], [ip])
    return logs[ip]


@pytest.mark.parametrize(
    ("language", "script"),
    [
        (1, 'echo "got:$1:$2:$#"; sleep 3'),
        (
            4,
            "import os, shlex, time\n"
            "print('got:' + ':'.join(shlex.split(os.environ['JOBFLEET_SCRIPT_PARAMS'])), "
            "flush=True)\ntime.sleep(3)\n",
        ),
    ],
)
async def test_a_sensitive_parameter_is_not_on_any_command_line(
    running: Running, language: int, script: str
) -> None:
    await running.start_agents(IPS[:1])
    secret = f"s3cret-{uuid.uuid4().hex}"
    sub = await running.wire.run_script(
        script,
        IPS[:1],
        script_language=language,
        script_param=b64(f"{secret} 'two words'"),
        is_param_sensitive=1,
    )

    async def started() -> bool:
        return "got:" in await log_of(running, sub, IPS[0])

    await eventually(started, timeout=30)
    assert command_lines_holding(secret) == []
    data = await running.wire.wait(sub["job_instance_id"], timeout=30)
    assert data["job_instance"]["status"] == 3
    expected = f"got:{secret}:two words:2\n" if language == 1 else f"got:{secret}:two words\n"
    assert await log_of(running, sub, IPS[0]) == expected


async def test_an_ordinary_parameter_still_comes_as_arguments(running: Running) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script(
        'echo "$1|$2|${JOBFLEET_SCRIPT_PARAMS-unset}"', IPS[:1], script_param=b64("a 'b c'")
    )
    await running.wire.wait(sub["job_instance_id"], timeout=30)
    assert await log_of(running, sub, IPS[0]) == "a|b c|unset\n"


async def test_timeout_leaves_nothing_of_the_task(
    running: Running, containment: str, marker: str
) -> None:
    await running.start_agents(IPS[:1])
    sub = await running.wire.run_script(escaping_tree(marker), IPS[:1], timeout=3)
    data = await running.wire.wait(sub["job_instance_id"], timeout=30)
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 102
    assert await wait_gone(marker) == []


async def test_terminate_leaves_nothing_of_the_task(
    running: Running, containment: str, marker: str
) -> None:
    await running.start_agents(IPS)
    sub = await running.wire.run_script(escaping_tree(marker), IPS)

    async def all_started() -> bool:
        return len(marked(marker)) >= ESCAPES * len(IPS)

    await eventually(all_started, timeout=30)
    answer = await running.wire.v3(
        "operate_job_instance",
        {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"], "operation_code": 1},
    )
    assert answer["result"], answer
    data = await running.wire.wait(sub["job_instance_id"], timeout=30)
    assert {r["status"] for r in data["step_instance_list"][0]["step_ip_result_list"]} == {403}
    assert await wait_gone(marker) == []


async def test_a_sigkilled_agent_leaves_nothing_running(
    running: Running, containment: str, marker: str, tmp_path: Path
) -> None:
    ip = "127.0.0.9"
    agent = agent_proc(running.url, running.boot["enroll_token"], tmp_path / "agent", ip)
    agent.env[processes.CONTAINMENT_ENV] = containment
    await agent.start()
    try:

        async def online() -> bool:
            hosts = await running.server.inventory.list()
            return any(h.ip == ip and h.alive for h in hosts)

        await eventually(online, timeout=30)
        sub = await running.wire.run_script(escaping_tree(marker), [ip])

        async def all_started() -> bool:
            return len(marked(marker)) >= ESCAPES

        await eventually(all_started, timeout=30)
        agent.kill()
        assert agent.proc is not None
        await agent.proc.wait()
        assert await wait_gone(marker) == []
        data = await running.wire.wait(sub["job_instance_id"], timeout=60)
        assert data["job_instance"]["status"] != 3
    finally:
        await agent.stop()
        for pid in marked(marker):
            os.kill(pid, 9)
        await asyncio.sleep(0)


def _state(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent, or None once it is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return fields[0].decode(), int(fields[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_an_agent_stopped_while_a_script_runs_ends_it_and_reaps_it(
    running: Running, containment: str, marker: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """The way a service manager stops an agent (SIGTERM; SIGINT at a terminal): the
    script it runs ends with it, and is reaped by it, not left a zombie or an orphan
    for whatever inherits it."""
    ip = "127.0.0.10"
    pid_file = tmp_path / "script.pid"
    agent = agent_proc(running.url, running.boot["enroll_token"], tmp_path / "agent", ip)
    agent.env[processes.CONTAINMENT_ENV] = containment
    await agent.start()
    assert agent.proc is not None
    try:

        async def online() -> bool:
            hosts = await running.server.inventory.list()
            return any(h.ip == ip and h.alive for h in hosts)

        await eventually(online, timeout=30)
        await running.wire.run_script(f"echo $$ > {pid_file}\nsleep {marker}\n", [ip])

        async def started() -> bool:
            return pid_file.exists() and pid_file.read_text().strip() != "" and bool(
                marked(marker))

        await eventually(started, timeout=30)
        script = int(pid_file.read_text())
        state = _state(script)
        assert state is not None and state[1] == agent.proc.pid, state  # the agent's child
        agent.proc.send_signal(sig)
        code = await asyncio.wait_for(agent.proc.wait(), 30)
        assert await wait_gone(marker) == []
        # a killed child the agent did not wait for is a zombie, of the agent while it
        # lives and then of whatever inherits it
        assert _state(script) is None, (_state(script), code)
        assert code == 0, code
    finally:
        await agent.stop()
        for pid in marked(marker):
            os.kill(pid, 9)
