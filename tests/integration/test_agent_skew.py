"""Agents of an earlier release on this server, each written as its hello announces it:
an agent from before capabilities were announced sends no ``caps`` (``raw_agent``'s
default hello), and one of a later release announces a protocol and capabilities this
server does not know."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.harness import Running, eventually, run_server
from tests.integration.test_agent_messages import done, out, raw_agent, refused
from websockets.exceptions import ConnectionClosed

from jobfleet.domain import protocol

V2 = "/api/bk-gse/prod/api/v2"
IP = "127.0.0.2"


def proc_status_body(ip: str, setup: Path) -> dict[str, Any]:
    return {
        "meta": {"namespace": "nodeman", "name": "daemon", "labels": {"proc_name": "daemon"}},
        "agent_id_list": [f"0:{ip}"],
        "spec": {"identity": {"proc_name": "daemon.sh", "setup_path": str(setup),
                              "pid_path": str(setup / "daemon.pid"), "user": "root"}},
    }


async def sensitive_script(running: Running, ip: str) -> dict[str, Any]:
    return await running.wire.run_script(
        'echo "$1"', [ip], script_param=base64.b64encode(b"s3cr3t-value").decode(),
        is_param_sensitive=1)


async def test_a_sensitive_parameter_never_goes_to_an_agent_that_would_show_it(
        running: Running) -> None:
    """An agent from before puts a script's args on its command line, where every user of
    the host reads them in ps: the parameter is not sent to it, and its host fails with
    the reason."""
    async with raw_agent(running, IP) as agent:
        sub = await sensitive_script(running, IP)
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        host = data["step_instance_list"][0]["step_ip_result_list"][0]
        assert host["status"] == 399, host
        step = data["step_instance_list"][0]["step_instance_id"]
        log = (await running.wire.logs(sub["job_instance_id"], step, [IP]))[IP]
        assert "cannot keep a sensitive parameter off the script's command line" in log
        assert "upgrade it" in log
        sent = [m for frame in agent.frames for m in frame]
        assert not any(m["t"] == protocol.RUN for m in sent), sent
        assert b"s3cr3t" not in repr(sent).encode()
        # the agent is served as before otherwise
        sub = await running.wire.run_script("echo hi", [IP])
        task = await agent.next_run()
        await agent.send(done(task, 1, "hi\n"))
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["job_instance"]["status"] == 3, data


async def test_gse_requests_to_an_agent_from_before_are_answered_at_once(
        running: Running, tmp_path: Path) -> None:
    """An agent from before ignores ``proc`` and ``dispatch``: the server answers for it at
    once, with why, instead of waiting out its timeout and calling it unreachable."""
    async with raw_agent(running, IP) as agent:
        await eventually(lambda: _alive(running, IP), timeout=20)
        started = time.monotonic()
        answer = await running.wire.post(f"{V2}/proc/get_proc_status_v2",
                                         proc_status_body(IP, tmp_path))
        asked = time.monotonic() - started
        assert answer["result"], answer
        [info] = answer["data"]["proc_infos"]
        assert "cannot manage processes" in info["message"], info
        started = time.monotonic()
        answer = await running.wire.post(f"{V2}/cluster/dispatch_message", {
            "message_id": "m1", "agent_id_list": [f"0:{IP}"], "content": "x", "slot_id": 1})
        messaged = time.monotonic() - started
        assert answer["result"], answer
        [result] = answer["data"]["results"]
        assert "cannot hand messages to local plugins" in result["error_msg"], result
        assert asked < 3 and messaged < 3, (asked, messaged)
        sent = [m["t"] for frame in agent.frames for m in frame]
        assert protocol.PROC not in sent and protocol.DISPATCH not in sent, sent


async def test_an_agent_of_a_later_release_is_served(running: Running) -> None:
    """A protocol version and capabilities this server does not know: the agent is served
    with those both know (a sensitive run goes to it as such)."""
    async with raw_agent(running, IP, version="9.0.0", protocol=2,
                         caps=["sensitive", "teleport"]) as agent:
        sub = await sensitive_script(running, IP)
        message = await asyncio.wait_for(agent.runs.get(), 20)
        assert message.get("sensitive") is True and message["args"] == ["s3cr3t-value"]
        await agent.send(done(message["id"], 1, "s3cr3t-value\n"))
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["job_instance"]["status"] == 3, data
        await eventually(lambda: _alive(running, IP, "9.0.0"), timeout=20)


async def test_an_agent_from_before_may_send_its_backlog_in_one_large_frame(
        tmp_path: Path, database_url: str) -> None:
    """An agent from before sends all it held over a disconnection in one frame, up to
    the 64 MiB its servers read: a frame over today's limit from it is read, not refused
    (which closed the connection, and the agent sent the frame again after each
    reconnect, for ever)."""
    async with (run_server(tmp_path, database_url, server={"agent_plaintext": True}) as running,
                raw_agent(running, IP) as agent):
        sub = await running.wire.run_script("echo hi", [IP])
        task = await agent.next_run()
        chunk = "x" * 1000 + "\n"
        backlog = [out(task, seq, chunk * 60) for seq in range(1, 101)]
        frame = [*backlog, done(task, 101, "end\n")]
        await agent.send(frame)
        data = await running.wire.wait(sub["job_instance_id"], timeout=60)
        assert data["job_instance"]["status"] == 3, data
        await eventually(lambda: _acked(agent.acks, task, 101), timeout=20)
        step = data["step_instance_list"][0]["step_instance_id"]
        log = (await running.wire.logs(sub["job_instance_id"], step, [IP]))[IP]
        assert log.endswith("end\n") and log.count("x" * 1000) > 4000, len(log)


async def test_an_agent_from_before_may_send_a_burst_of_output_in_one_message(
        running: Running) -> None:
    """An agent from before sends what a script printed within 50 ms in one message,
    however much it is: output, and a result, longer than today's limit of a message
    are kept, not refused (and acknowledged, so the agent forgot them)."""
    async with raw_agent(running, IP) as agent:
        sub = await running.wire.run_script("echo hi", [IP])
        task = await agent.next_run()
        burst = ("y" * 99 + "\n") * 15_000  # 1.5 MB
        await agent.send([out(task, 1, "a" + burst), done(task, 2, "b" + burst + "end\n")])
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["job_instance"]["status"] == 3, data
        step = data["step_instance_list"][0]["step_instance_id"]
        log = (await running.wire.logs(sub["job_instance_id"], step, [IP]))[IP]
        assert log == "a" + burst + "b" + burst + "end\n", len(log)
        assert refused(running) == {}


async def test_a_large_frame_from_an_agent_without_caps_must_be_mostly_text(
        tmp_path: Path, database_url: str) -> None:
    """Any agent may leave its capabilities out: the larger frames it then gets are
    read only if they are what an earlier agent's backlog is, nearly all text. 5 MiB
    of empty JSON lists (some 2 million objects parsed), or of zeros (as many list
    slots), closes the connection, and another host's job runs on."""
    async with (run_server(tmp_path, database_url, server={"agent_plaintext": True}) as running,
                raw_agent(running, IP) as lists, raw_agent(running, "127.0.0.4") as numbers,
                raw_agent(running, "127.0.0.3") as honest):
        await lists.send([[]] * (5 * 1024 * 1024 // 3))
        await numbers.send([0] * (5 * 1024 * 1024 // 2))
        for hostile in (lists, numbers):
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(hostile.reader, 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        sub = await running.wire.run_script("echo hi", ["127.0.0.3"])
        task = await honest.next_run()
        await honest.send([done(task, 1, "hi\n")])
        data = await running.wire.wait(sub["job_instance_id"], timeout=30)
        assert data["job_instance"]["status"] == 3, data


async def test_a_hello_over_the_frame_limit_is_not_read(
        tmp_path: Path, database_url: str) -> None:
    """A hello is read before any capability is known, so the larger frames of earlier
    agents are not for it: one over today's limit closes the connection unread."""
    async with (run_server(tmp_path, database_url, server={"agent_plaintext": True}) as running,
                raw_agent(running, IP, known=["1:1:1"] * (5 * 1024 * 1024 // 8)) as agent):
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(agent.reader, 20)


async def test_an_agent_that_keeps_its_frames_small_is_held_to_the_limit(
        tmp_path: Path, database_url: str) -> None:
    """The larger frames are for agents from before only: one that announces it keeps
    its frames within the limit is cut off by a frame over it, as on the agent port."""
    async with (run_server(tmp_path, database_url, server={"agent_plaintext": True}) as running,
                raw_agent(running, IP, caps=list(protocol.AGENT_CAPS)) as agent):
        sub = await running.wire.run_script("echo hi", [IP])
        task = await agent.next_run()
        chunk = "x" * 1000 + "\n"
        await agent.send([out(task, seq, chunk * 60) for seq in range(1, 101)])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(agent.reader, 20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert sub["job_instance_id"]


async def _acked(acks: dict[str, int], task: str, seq: int) -> bool:
    return acks.get(task, -1) >= seq


async def _alive(running: Running, ip: str, version: str | None = None) -> bool:
    hosts = await running.wire.get("/api/jobfleet/v1/hosts", {"bk_biz_id": 2})
    return any(h["ip"] == ip and h["alive"] and version in (None, h["agent_version"])
               for h in hosts["data"])
