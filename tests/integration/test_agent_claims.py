"""What an enrolled host says about itself in its hello never reaches past itself.

A hostile agent here enrolls for real and speaks the protocol itself; what it claims
(the tasks it holds, where it serves file pieces, its IPv6 address) must neither cost
the server without bound nor steer work meant for another host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from tests.integration.harness import Running, b64, eventually
from tests.integration.test_agent_messages import BAD_IP, GOOD_IP, done, raw_agent
from tests.integration.test_file_transfer import transfer_body
from tests.integration.test_peer_files import swarm_bytes
from tests.integration.test_self_healing import SECRET as HEAL_SECRET
from tests.integration.test_self_healing import alertmanager, make_plan, post

from jobfleet.agent.client import AgentSettings, Credential, enroll
from jobfleet.domain import protocol
from jobfleet.domain.protocol import PIECE_SIZE
from jobfleet.gateway.endpoint import MAX_KNOWN
from jobfleet.gateway.registry import AgentConnection
from jobfleet.sdk import AsyncJobClient

SOURCE = "127.0.0.6"
HONEST = ["127.0.0.4", "127.0.0.5"]
PEERS = {ip: {"peer_port": 0, "peer_listen": ip, "peer_address": ip} for ip in HONEST}
# a loopback address no host of the test has
TRAP_IP = "127.0.0.77"
# a host enrolled with an IPv6 ip (the only IPv6 loopback address, and so the only one
# an agent of these tests may report that spells no IPv4 address)
V6_OWNER = "::1"
LATE_IP = "127.0.0.8"


async def enrolled(running: Running, ip: str) -> Credential:
    settings = AgentSettings(server=running.url, state_dir=None, ip=ip,
                             enroll_token=running.boot["enroll_token"])
    channel, _ = await settings.channel()
    return await enroll(settings, channel=channel)


async def test_a_hello_keeps_only_a_bounded_set_of_the_hosts_own_tasks(
        running: Running) -> None:
    await running.start_agents([GOOD_IP])
    good = running.server.registry.for_host(
        next(h.bk_host_id for h in await running.server.inventory.list() if h.ip == GOOD_IP))
    assert good is not None
    other = protocol.task_id(1, 0, good.bk_host_id)
    # ~4 MB of names: short junk, another host's task, and more of its own than are kept
    junk = [str(n) for n in range(200_000)]
    cred = await enrolled(running, BAD_IP)
    own = [protocol.task_id(n, 0, cred.bk_host_id) for n in range(1, 2 * MAX_KNOWN)]
    async with raw_agent(running, BAD_IP, cred, known=[*junk, other, *own]) as bad:
        async def connected() -> AgentConnection | None:
            return running.server.registry.for_host(bad.host_id)
        conn = await eventually(connected)
        assert len(conn.known) == MAX_KNOWN
        assert conn.known <= set(own)
        assert other not in conn.known


async def test_an_agent_cannot_make_its_swarm_peers_dial_an_address_not_its_own(
        running: Running, tmp_path: Path) -> None:
    """The hostile host names a loopback service (here a listener of the test's) as the
    place it serves pieces: the honest targets of the same transfer must not dial it,
    and still share pieces with each other."""
    dialed: list[str] = []

    async def trap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialed.append(str(writer.get_extra_info("peername")))
        writer.close()

    service = await asyncio.start_server(trap, TRAP_IP, 0)
    port = service.sockets[0].getsockname()[1]
    try:
        await running.start_agents([SOURCE, *HONEST], settings_of=PEERS)
        async with raw_agent(running, BAD_IP, peer=f"{TRAP_IP}:{port}") as bad:
            source = tmp_path / "payload.bin"
            source.write_bytes(os.urandom(3 * PIECE_SIZE + 7))
            answer = await running.wire.v3("fast_transfer_file", transfer_body(
                [str(source)], [SOURCE], [*HONEST, BAD_IP], f"{tmp_path}/dest/"))
            assert answer["result"], answer
            job = answer["data"]["job_instance_id"]
            await asyncio.wait_for(bad.runs.get(), 30)

            async def honest_done() -> bool:
                status = await running.wire.status(job)
                hosts = status["step_instance_list"][0]["step_ip_result_list"]
                return {h["status"] for h in hosts if h["ip"] in HONEST} == {9}
            await eventually(honest_done, timeout=60)
        assert dialed == []
        _, from_peers = swarm_bytes(running, HONEST)
        assert from_peers > 0
    finally:
        service.close()
        await service.wait_closed()


async def _heal_rule(running: Running) -> int:
    plan_id = await make_plan(running.wire, 'echo "healing"')
    async with AsyncJobClient(running.url, running.boot["bk_app_code"],
                              running.boot["bk_app_secret"], "admin", biz=2) as client:
        rule = await client.create_heal_rule(
            "v6", plan_id, HEAL_SECRET, match={"alertname": ["HighDisk"]},
            host_variable="target", host_label="instance", host_cooldown=0, max_hosts=5)
    return int(rule["id"])


async def _healed(running: Running, rule_id: int, address: str) -> tuple[str, list[str]]:
    """The decision on an alert about ``address``, and the hosts (their ip) of the job
    it started."""
    answer = await post(running.url, rule_id, alertmanager("firing", address))
    assert answer["result"], answer
    [decision] = answer["data"]["decisions"]
    if decision["decision"] != "started":
        return decision["decision"], []
    # the raw agents run nothing: the job's hosts are read while it runs
    job = decision["job_instance_id"]
    result = await running.wire.status(job)
    hosts = sorted(h["ip"] for h in result["step_instance_list"][0]["step_ip_result_list"])
    return "started", hosts


def _reports(running: Running, ip: str, ipv6: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        hosts = {h.ip: h for h in await running.server.inventory.list()}
        return hosts[ip].ipv6 == ipv6 and bool(hosts[ip].alive)
    return check


async def test_an_ipv6_address_claimed_in_a_hello_takes_no_other_hosts_alerts(
        running: Running) -> None:
    """The hostile host reports as its IPv6 address one another host reports as its own,
    then one that is another host's ip: alerts about either never start work on it."""
    owner, reporter = V6_OWNER, "127.0.0.4"
    # no host has ::1 as its ip yet: the one host reporting it is named by it
    await running.start_agents([reporter], settings_of={reporter: {"ipv6": V6_OWNER}})
    await eventually(_reports(running, reporter, V6_OWNER))
    cred = await enrolled(running, BAD_IP)
    rule_id = await _heal_rule(running)
    assert await _healed(running, rule_id, V6_OWNER) == ("started", [reporter])
    async with raw_agent(running, BAD_IP, cred, ipv6=V6_OWNER):
        await eventually(_reports(running, BAD_IP, V6_OWNER))
        # once another claims it too, neither (another alert: the one above may still
        # be healing)
        assert await _healed(running, rule_id, f"{V6_OWNER},127.0.0.250") == ("skipped", [])
        ambiguous = await running.wire.v3("fast_execute_script", {
            "bk_scope_type": "biz", "bk_scope_id": "2", "script_content": b64("true"),
            "script_language": 1, "account_alias": "root",
            "target_server": {"ip_list": [{"ip": V6_OWNER, "bk_cloud_id": 0}]}})
        assert ambiguous["code"] == 1241010 and "host_id_list" in ambiguous["message"]
        async with raw_agent(running, owner):
            # the host whose ip it is, alone
            assert await _healed(running, rule_id, f"{V6_OWNER},127.0.0.251") == (
                "started", [owner])


async def test_an_ipv6_address_claimed_in_a_hello_does_not_answer_for_another_hosts_log(
        running: Running) -> None:
    """Two hostile hosts of a job, enrolled before and after the host whose ip is an IPv6
    address, both report that address as theirs: the log asked for by that address is
    the owner's, whether one host's or a batch's is asked for."""
    before = await enrolled(running, BAD_IP)
    owner_cred = await enrolled(running, V6_OWNER)
    after = await enrolled(running, LATE_IP)
    async with raw_agent(running, BAD_IP, before, ipv6=V6_OWNER) as bad, \
            raw_agent(running, V6_OWNER, owner_cred) as owner, \
            raw_agent(running, LATE_IP, after, ipv6=V6_OWNER) as late:
        await eventually(_reports(running, BAD_IP, V6_OWNER))
        await eventually(_reports(running, LATE_IP, V6_OWNER))
        job = await running.wire.run_script("true", [BAD_IP, V6_OWNER, LATE_IP])
        for agent, text in ((bad, "bad"), (owner, "owner"), (late, "late")):
            await agent.send(done(await agent.next_run(), 1, f"{text}\n", status=9))
        await running.wire.wait(job["job_instance_id"])
        step = job["step_instance_id"]
        one = await running.wire.v3("get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
            "step_instance_id": step, "bk_cloud_id": 0, "ip": V6_OWNER}, method="GET")
        assert one["result"], one
        assert (one["data"]["bk_host_id"], one["data"]["log_content"]) == (
            owner.host_id, "owner\n")
        logs = await running.wire.logs(job["job_instance_id"], step, [V6_OWNER, BAD_IP])
        assert logs == {V6_OWNER: "owner\n", BAD_IP: "bad\n"}


async def test_hellos_behind_one_address_cost_no_query_each(running: Running) -> None:
    """Agents behind a NAT or a proxy all connect from one address, so the address each
    names for its peers is never the one it came from: the host's own ip it is checked
    against comes with the credential's check, batched, not from a query per hello."""
    ips = [f"127.0.3.{n}" for n in range(1, 31)]
    creds = await asyncio.gather(*(enrolled(running, ip) for ip in ips))
    statements: list[str] = []
    engine = running.server.db.engine.sync_engine

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", executed)
    try:
        async with contextlib.AsyncExitStack() as stack:
            agents = await asyncio.gather(*(
                stack.enter_async_context(raw_agent(running, ip, cred, peer=f"{ip}:7000"))
                for ip, cred in zip(ips, creds, strict=True)))
            conns = await eventually(lambda: _all_connected(running, agents))
            # the connection came from 127.0.0.1; each host's own address is kept
            assert sorted(c.swarm for c in conns) == sorted(f"{ip}:7000" for ip in ips)
    finally:
        event.remove(engine, "before_cursor_execute", executed)
    host_reads = [s for s in statements if "FROM hosts" in s and "JOIN" not in s]
    assert len(host_reads) < len(ips) // 3, host_reads


async def _all_connected(running: Running, agents: list[Any]) -> list[AgentConnection] | None:
    conns = [running.server.registry.for_host(agent.host_id) for agent in agents]
    found = [c for c in conns if c is not None]
    return found if len(found) == len(agents) else None


async def test_an_agent_cannot_stand_for_another_hosts_ipv4_address_in_ipv6_form(
        running: Running) -> None:
    """A real agent reports ``::ffff:<another host's IPv4>`` as its IPv6 address. That
    form is the other host's address: no host holds it as its ip, so the one claimant
    would have been the host a job, a log query or an alert naming it meant. Its claim
    is refused, and the form names the host whose IPv4 address it spells."""
    home, claimant = "127.0.0.31", "127.0.0.32"
    mapped, compatible = f"::ffff:{home}", f"::{home}"
    await running.start_agents([home, claimant], settings_of={claimant: {"ipv6": mapped}})
    wire = running.wire
    for named in ([mapped], [compatible], [mapped, compatible, home]):
        job = await wire.run_script('echo "ran on $JOBFLEET_HOST_IP"', named)
        status = await wire.wait(job["job_instance_id"])
        hosts = status["step_instance_list"][0]["step_ip_result_list"]
        assert [(h["ip"], h["status"]) for h in hosts] == [(home, 9)], (named, hosts)
    home_id = hosts[0]["bk_host_id"]
    one = await wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
        "step_instance_id": job["step_instance_id"], "bk_cloud_id": 0, "ip": mapped},
        method="GET")
    assert one["result"], one
    assert (one["data"]["bk_host_id"], one["data"]["log_content"]) == (
        home_id, f"ran on {home}\n"), one
    # the claimant is still named by its own address
    job = await wire.run_script('echo "ran on $JOBFLEET_HOST_IP"', [f"::ffff:{claimant}"])
    await wire.wait(job["job_instance_id"])
    logs = await wire.logs(job["job_instance_id"], job["step_instance_id"], [claimant])
    assert logs == {claimant: f"ran on {claimant}\n"}, logs
    # what it reported is not kept as its IPv6 address
    await eventually(_reports(running, claimant, ""))
