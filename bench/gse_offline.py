"""GSE calls naming hosts whose agent is not connected: how long the caller waits.

A jobfleet server runs as its own process with the default agent-lost grace (10 s); a
swarm process enrolls N hosts and is stopped, so that every host is known and none is
connected (a fleet with hosts down). Then, over one kept-alive HTTP connection:

- ``get_agent_status`` on the N hosts: the floor, an inventory lookup and nothing else;
- ``get_proc_status_v2`` on the N hosts;
- ``dispatch_message`` to the N hosts;
- ``operate_proc_multi`` (a status operation) on the N hosts, until
  ``get_proc_operate_result_v2`` answers none as handling (polled every 50 ms).

    .venv/bin/python bench/gse_offline.py [--count 500]

Set ``PYTHONPATH`` to another tree's ``src`` to measure that tree with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import Children, ServerProc, start_server, start_swarm

V1 = "/api/c/compapi/v2/gse/"
V2 = "/api/bk-gse/prod/api/v2/"
META = {"namespace": "bench", "name": "daemon"}


async def offline(server: ServerProc, ips: list[str]) -> None:
    async with httpx.AsyncClient(base_url=server.url, transport=httpx.AsyncHTTPTransport(),
                                 headers=headers(server)) as http:
        while True:
            answer = (await http.post(V1 + "get_agent_status", json={
                "hosts": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]})).json()
            if not any(v["bk_agent_alive"] for v in answer["data"].values()):
                return
            await asyncio.sleep(0.2)


def headers(server: ServerProc) -> dict[str, str]:
    boot = server.boot
    return {"X-Bkapi-Authorization": json.dumps({
        "bk_app_code": boot["bk_app_code"], "bk_app_secret": boot["bk_app_secret"],
        "bk_username": boot["admin_user"]})}


async def measure(server: ServerProc, ips: list[str]) -> dict[str, float]:
    ids = [f"0:{ip}" for ip in ips]
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=server.url, transport=httpx.AsyncHTTPTransport(),
                                 timeout=3600, headers=headers(server)) as http:

        async def post(path: str, body: dict[str, Any]) -> Any:
            answer = (await http.post(path, json=body)).json()
            assert answer["result"], answer
            return answer["data"]

        async def timed(name: str, path: str, body: dict[str, Any]) -> Any:
            started = time.perf_counter()
            data = await post(path, body)
            out[name] = time.perf_counter() - started
            return data

        await timed("get_agent_status (floor)", V1 + "get_agent_status",
                    {"hosts": [{"ip": ip, "bk_cloud_id": 0} for ip in ips]})
        await timed("get_proc_status_v2", V2 + "proc/get_proc_status_v2",
                    {"meta": META, "agent_id_list": ids})
        await timed("dispatch_message", V2 + "cluster/dispatch_message",
                    {"message_id": "bench", "agent_id_list": ids[:1000], "content": "x",
                     "slot_id": 1})
        started = time.perf_counter()
        task = await post(V2 + "proc/operate_proc_multi", {"proc_operate_req": [
            {"meta": META, "op_type": 2, "agent_id_list": ids}]})
        while True:
            results = await post(V2 + "proc/get_proc_operate_result_v2", task)
            if all(r["error_code"] != 115 for r in results.values()):
                break
            await asyncio.sleep(0.05)
        out["operate_proc_multi until answered"] = time.perf_counter() - started
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jobfleet-gse-offline-"))
    children = Children(work)
    try:
        server = await start_server(children, work, "server")
        fleet = await start_swarm(children, server, args.count, "instant", 64, "swarm")
        for child in fleet.procs:
            await children.stop(child)
        await offline(server, fleet.ips)
        for name, seconds in (await measure(server, fleet.ips)).items():
            print(f"{name:40} {seconds:8.2f} s")
    finally:
        await children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
