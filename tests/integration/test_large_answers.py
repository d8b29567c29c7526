"""Large answers: gzip for clients that accept it, and batch logs of many hosts
(bk-job's routes keep bk-job's 500-host limit; jobfleet's own route takes 2,000)."""

from __future__ import annotations

import gzip
import json

import pytest
from tests.integration.harness import Running

from jobfleet.api import legacy

IPS = ["127.0.0.2", "127.0.0.3"]
# inventory hosts without an agent: they end at once
ABSENT = [f"127.9.{i // 250}.{i % 250 + 1}" for i in range(600)]
V3 = "/api/c/compapi/v2/jobv3"
OWN = "/api/jobfleet/v1"


async def _job(running: Running) -> tuple[dict[str, object], dict[str, int]]:
    await running.start_agents(IPS)
    for ip in ABSENT:
        await running.server.inventory.add(2, ip)
    sub = await running.wire.run_script("echo $JOBFLEET_HOST_IP", [*IPS, *ABSENT])
    await running.wire.wait(sub["job_instance_id"])
    ids = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}
    return sub, ids


async def test_large_answers_gzip_and_many_host_logs(running: Running) -> None:
    sub, ids = await _job(running)
    wire = running.wire
    status = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
              "return_ip_result": True}
    plain = await wire.http.post(f"{V3}/get_job_instance_status", json=status,
                                 headers={**wire.headers(), "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    packed = await wire.http.post(f"{V3}/get_job_instance_status", json=status,
                                  headers={**wire.headers(), "Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    # what crossed the wire is gzip of the same answer, and much smaller
    assert packed.num_bytes_downloaded * 5 < plain.num_bytes_downloaded
    unpacked = json.loads(gzip.decompress(await _raw(wire, status)))
    assert unpacked["data"] == plain.json()["data"]
    assert len(plain.json()["data"]["step_instance_list"][0]["step_ip_result_list"]) == 602
    # a small answer goes as it is
    small = await wire.http.post(f"{V3}/get_job_instance_status",
                                 json={**status, "return_ip_result": False},
                                 headers={**wire.headers(), "Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json()["result"] is True

    hosts = [ids[ip] for ip in [*IPS, *ABSENT]]
    base = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
            "step_instance_id": sub["step_instance_id"]}
    over = await wire.post(f"{V3}/batch_get_job_instance_ip_log",
                           {**base, "host_id_list": hosts[:501]})
    assert over["result"] is False and over["code"] == 1241007
    assert "At most 500 hosts" in over["message"]
    # 500 is within bk-job's bound (bk-log asks in chunks of 500): one item per host
    most = await wire.post(f"{V3}/batch_get_job_instance_ip_log",
                           {**base, "host_id_list": hosts[:500], "ip_list": []})
    assert most["result"] is True, most
    assert {i["bk_host_id"] for i in most["data"]["script_task_logs"]} == set(hosts[:500])
    own = await wire.post(f"{OWN}/batch_get_job_instance_ip_log",
                          {**base, "host_id_list": hosts[2:],
                           "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]})
    assert own["result"] is True, own
    logs = {i["ip"]: i["log_content"] for i in own["data"]["script_task_logs"]}
    assert set(logs) == {*IPS, *ABSENT}
    assert all(logs[ip] == ip + "\n" for ip in IPS)
    too_many = await wire.post(f"{OWN}/batch_get_job_instance_ip_log",
                               {**base, "host_id_list": list(range(1, 2002))})
    assert too_many["result"] is False and "At most 2000 hosts" in too_many["message"]
    # hosts that are not targets of the step come back empty, as in bk-job
    stranger = await wire.post(f"{OWN}/batch_get_job_instance_ip_log",
                               {**base, "host_id_list": [987654],
                                "ip_list": [{"ip": IPS[0], "bk_cloud_id": 3}]})
    items = stranger["data"]["script_task_logs"]
    assert [(i["bk_host_id"], i["ip"], i["log_content"]) for i in items] == [
        (987654, None, ""), (None, IPS[0], "")]


async def _raw(wire: object, body: dict[str, object]) -> bytes:
    """The body as it crossed the wire (not decoded)."""
    http = wire.http  # type: ignore[attr-defined]
    headers = {**wire.headers(), "Accept-Encoding": "gzip"}  # type: ignore[attr-defined]
    async with http.stream("POST", f"{V3}/get_job_instance_status", json=body,
                           headers=headers) as resp:
        return b"".join([chunk async for chunk in resp.aiter_raw()])


async def test_v2_job_log_answer_is_bounded(running: Running,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """bk-job v2's get_job_instance_log holds at most 16 MiB and 500 hosts of log
    content: a host past either cap keeps its place and result in the answer, its log
    replaced by a line that says so and where to read it."""
    ips = ["127.0.0.5", "127.0.0.6", "127.0.0.7"]
    await running.start_agents(ips)
    size = 7 * 1024 * 1024
    sub = await running.wire.run_script(f"head -c {size} /dev/zero | tr '\\0' x", ips)
    done = await running.wire.wait(sub["job_instance_id"], timeout=120)
    assert done["job_instance"]["status"] == 3, done
    query = {"bk_biz_id": 2, "job_instance_id": sub["job_instance_id"]}

    async def logs() -> dict[str, str]:
        answer = await running.wire.get("/api/c/compapi/v2/job/get_job_instance_log/", query)
        assert answer["result"] is True, {k: v for k, v in answer.items() if k != "data"}
        [step] = answer["data"]
        assert step["step_instance_id"] == sub["step_instance_id"]
        [group] = step["step_results"]
        assert group["ip_status"] == 9
        return {i["ip"]: i["log_content"] for i in group["ip_logs"]}

    # three hosts of 7 MiB: the third would pass 16 MiB
    got = await logs()
    assert [len(got[ip]) for ip in ips[:2]] == [size, size]
    assert got[ips[2]].startswith("[jobfleet: log left out of this answer"), got[ips[2]][:200]
    assert "16 MiB" in got[ips[2]] and "get_job_instance_ip_log" in got[ips[2]]
    # the host cap, made small here, cuts the same way
    monkeypatch.setattr(legacy, "MAX_LOG_HOSTS", 1)
    got = await logs()
    assert len(got[ips[0]]) == size
    assert all(got[ip].startswith("[jobfleet: log left out") and "1 host" in got[ip]
               for ip in ips[1:]), [got[ip][:200] for ip in ips[1:]]
