"""The single-file agent: built from the tree, run by a Python that has nothing installed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.harness import Running, eventually
from tests.integration.test_agent_enrollment import new_token

from jobfleet import __version__
from jobfleet.domain.protocol import AGENT_CAPS, PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[2]
IP = "127.0.31.1"
IP_OO = "127.0.31.2"


async def host_alive(running: Running, ip: str) -> bool:
    return any(h.ip == ip and h.alive for h in await running.server.inventory.list())


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive, built from the tree once for the module's tests."""
    built = tmp_path_factory.mktemp("zipapp") / "jobfleet-agent.pyz"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build-agent-zipapp.py"), str(built)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120, check=False)
    assert done.returncode == 0, done.stdout.decode()
    return built


# -I -S: no site-packages at all, so everything the agent needs is in the archive; -OO as
# deploy/install-agent.sh starts it (no docstrings, no asserts). One backend: the archive
# and the agent it runs are the same whatever database the server keeps its job in, and
# the server's side of a job is tested on every backend elsewhere
@pytest.mark.one_backend
@pytest.mark.parametrize(("flags", "ip"), [(("-I", "-S"), IP), (("-I", "-S", "-OO"), IP_OO)],
                         ids=["plain", "installed"])
async def test_the_zipapp_agent_runs_a_job(
    running: Running, tmp_path: Path, pyz: Path, flags: tuple[str, ...], ip: str
) -> None:
    # what an operator who copied the file around asks it: its release and protocol
    shown = await asyncio.create_subprocess_exec(
        sys.executable, *flags, str(pyz), "--version",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(shown.communicate(), 60)
    assert shown.returncode == 0, out.decode()
    assert out.decode() == (f"jobfleet-agent.pyz {__version__} (protocol {PROTOCOL_VERSION}; "
                            f"capabilities: {' '.join(AGENT_CAPS)})\n")
    token_file = tmp_path / "token"
    token_file.write_text(await new_token(running.wire, uses=1) + "\n")
    token_file.chmod(0o600)
    agent = await asyncio.create_subprocess_exec(
        sys.executable, *flags, str(pyz), "--server", running.url,
        "--enroll-token-file", str(token_file), "--state-dir", str(tmp_path / "state"),
        "--ip", ip, "--log-level", "warning",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        await eventually(lambda: host_alive(running, ip), timeout=30)
        sub = await running.wire.run_script('echo "hello from $JOBFLEET_HOST_IP"; exit 0', [ip])
        data = await running.wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3, data
        step = data["step_instance_list"][0]["step_instance_id"]
        logs = await running.wire.logs(sub["job_instance_id"], step, [ip])
        assert logs[ip] == f"hello from {ip}\n"
        assert agent.returncode is None
    finally:
        agent.terminate()
        out, _ = await asyncio.wait_for(agent.communicate(), 30)
    assert b"Traceback" not in out, out.decode()
