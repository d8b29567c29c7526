"""The agent channel is TLS to the server's own CA, pinned by the token, by default."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import httpx
import pytest
import websockets
from tests.integration.harness import Running, agent_proc, eventually, run_server
from tests.integration.test_agent_enrollment import audit, enroll, new_token
from tests.integration.test_tls import self_signed

from jobfleet.agent.channel import ChannelError
from jobfleet.agent.client import Agent, AgentSettings
from jobfleet.domain import enrollment
from jobfleet.domain.errors import ErrorCode

BOOTSTRAP = "/api/jobfleet/v1/agent-bootstrap"


async def host_alive(running: Running, ip: str) -> bool:
    return any(h.ip == ip and h.alive for h in await running.server.inventory.list())


async def test_the_readme_agent_command_reaches_the_encrypted_channel(
        running: Running, tmp_path: Path) -> None:
    """``--server URL`` and the token from a file or the environment, nothing else."""
    token = await new_token(running.wire, uses=2)
    secret = enrollment.parse(token).secret
    by_file = agent_proc(running.url, token, tmp_path / "a1", "127.0.13.1",
                         token_file=tmp_path / "token")
    by_env = agent_proc(running.url, token, tmp_path / "a2", "127.0.13.2")
    await by_file.start()
    await by_env.start()
    try:
        await eventually(lambda: host_alive(running, "127.0.13.1"), timeout=30)
        await eventually(lambda: host_alive(running, "127.0.13.2"), timeout=30)
        for proc in (by_file, by_env):
            assert proc.proc is not None
            cmdline = Path(f"/proc/{proc.proc.pid}/cmdline").read_bytes().decode()
            assert secret not in cmdline and "--enroll-token\0" not in cmdline
        doc = (await running.wire.http.get(BOOTSTRAP)).json()["data"]
        tls_dir = running.data_dir / "server" / "tls"
        for key in ("ca.key", "agent-key.pem"):
            assert (tls_dir / key).stat().st_mode & 0o077 == 0
        for state in ("a1", "a2"):
            assert (tmp_path / state / "server-ca.pem").read_text() == doc["ca_pem"]
            assert (tmp_path / state / "server-ca.pem").stat().st_mode & 0o077 == 0
        sub = await running.wire.run_script("echo over the pinned channel",
                                            ["127.0.13.1", "127.0.13.2"])
        data = await running.wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3
        # the agents' requests came to the agent port: the API port refuses plain text
        entries = await audit(running.wire, "agent_enroll")
        assert {e["detail"]["ip"] for e in entries} >= {"127.0.13.1", "127.0.13.2"}
    finally:
        await by_file.stop()
        await by_env.stop()


async def test_a_token_on_the_command_line_is_refused(running: Running, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobfleet", "agent", "--server", running.url, "--enroll-token",
        running.boot["enroll_token"], "--state-dir", str(tmp_path / "a"), "--ip", "127.0.13.9",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "--enroll-token-file" in out.decode() and "JOBFLEET_ENROLL_TOKEN" in out.decode()
    assert not await audit(running.wire, "agent_enroll")


async def test_an_agent_refuses_a_server_whose_ca_is_not_the_tokens(
        running: Running, tmp_path: Path) -> None:
    token = await new_token(running.wire, uses=1)
    secret = enrollment.parse(token).secret
    wrong = enrollment.compose(secret, "0" * 64)
    agent = Agent(AgentSettings(server=running.url, state_dir=tmp_path / "a", ip="127.0.14.1",
                                enroll_token=wrong))
    with pytest.raises(ChannelError, match="refusing to enroll"):
        await agent.run_forever()
    assert not (tmp_path / "a" / "server-ca.pem").exists()
    # nothing reached the enroll route: every attempt there is audited, taken or refused
    assert not await audit(running.wire, "agent_enroll")
    assert not await audit(running.wire, "agent_enroll_refused")
    # and the token's only use is still there for the right server
    async with running.agent_http() as http:
        assert (await enroll(http, token, "127.0.14.1")).status_code == 200


async def test_plain_text_agent_connections_are_refused_by_default(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents(["127.0.15.1"])
    agent, _ = running.agents["127.0.15.1"]
    cred = agent.credential
    assert cred is not None
    token = await new_token(running.wire, uses=1)
    plain = httpx.AsyncClient(base_url=running.url, trust_env=False, timeout=30)
    async with plain:
        refused = await enroll(plain, token, "127.0.15.2")
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == ErrorCode.PERMISSION_DENIED
        assert "encrypted agent port" in refused.json()["message"]
        blob = await plain.get("/api/jobfleet/v1/agents/blobs/x", headers={
            "Authorization": f"Agent {cred.agent_id}:{cred.agent_secret}"})
        assert blob.status_code == 403 and blob.json()["result"] is False
    ws_url = running.url.replace("http://", "ws://") + "/api/jobfleet/v1/agents/connect"
    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
        async with websockets.connect(ws_url, additional_headers={
                "Authorization": f"Agent {cred.agent_id}:{cred.agent_secret}"}):
            pass
    assert caught.value.response.status_code == 403
    entries = await audit(running.wire, "agent_enroll_refused")
    assert any(e["detail"].get("reason") == "plain-text connection"
               and e["source_ip"] == "127.0.0.1" for e in entries), entries
    # a token stripped of its fingerprint makes the agent try plain text: refused too
    bare = Agent(AgentSettings(server=running.url, state_dir=tmp_path / "bare",
                               ip="127.0.15.3", enroll_token=enrollment.parse(token).secret))
    with pytest.raises(RuntimeError, match="encrypted agent port"):
        await bare.run_forever()
    # the refusals took no use of the token
    async with running.agent_http() as http:
        assert (await enroll(http, token, "127.0.15.2")).status_code == 200
        # and the agent port serves agents only
        other = await http.get("/api/jobfleet/v1/hosts")
        assert other.status_code == 404 and other.json()["result"] is False


async def test_the_operator_may_let_agents_talk_plain_text(
        tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, server={"agent_plaintext": True}) as run:
        assert enrollment.parse(run.boot["enroll_token"]).ca_fingerprint is None
        doc = (await run.wire.http.get(BOOTSTRAP)).json()["data"]
        assert doc["plaintext"] is True and doc["agent_port"] is None
        await run.start_agents(["127.0.16.1"])
        assert run.agents["127.0.16.1"][0].channel is not None
        assert run.agents["127.0.16.1"][0].channel.base == run.url
        sub = await run.wire.run_script("echo plain", ["127.0.16.1"])
        data = await run.wire.wait(sub["job_instance_id"])
        assert data["job_instance"]["status"] == 3


async def test_the_operator_may_give_the_agent_certificate(
        tmp_path: Path, database_url: str) -> None:
    cert, key = self_signed(tmp_path)
    tls_dir = tmp_path / "server" / "tls"
    tls_dir.mkdir(parents=True)
    shutil.copy(cert, tls_dir / "ca.pem")
    shutil.copy(cert, tls_dir / "agent-cert.pem")
    shutil.copy(key, tls_dir / "agent-key.pem")
    async with run_server(tmp_path, database_url) as run:
        assert not (tls_dir / "ca.key").exists()
        fingerprint = enrollment.parse(run.boot["enroll_token"]).ca_fingerprint
        assert fingerprint == enrollment.ca_fingerprint(cert.read_text())
        await run.start_agents(["127.0.16.2"])
        sub = await run.wire.run_script("echo given", ["127.0.16.2"])
        assert (await run.wire.wait(sub["job_instance_id"]))["job_instance"]["status"] == 3
