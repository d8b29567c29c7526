"""Self-healing on a cluster: two server nodes on PostgreSQL and Redis decide on alerts
as one. The same Alertmanager payload posted to both nodes at once starts one job, and
a rule's rate limit and a host's cool-down count the jobs every node started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.integration.cluster import Cluster, agents_of, cluster, needs_cluster
from tests.integration.test_cluster_bus import hosts_by_node
from tests.integration.test_self_healing import OWN, SECRET, alertmanager, make_plan, post

LONG_HEAL = 'echo "healing: $alarm"; sleep 20'


async def rule(c: Cluster, name: str, plan_id: int, **limits: int) -> int:
    made = await c.wires[1].post(f"{OWN}/businesses/2/heal-rules", {
        "name": name, "job_plan_id": plan_id, "secret": SECRET, "host_variable": "target",
        "variables": {"alarm": "{{alertname}}"}, **limits})
    assert made["result"], made
    return int(made["data"]["id"])


async def on_both(c: Cluster, rule_id: int, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each payload posted at the same time, to the two nodes in turn; the decisions."""
    answers = await asyncio.gather(*(
        post(c.urls[i % 2], rule_id, p) for i, p in enumerate(payloads)))
    assert all(a["result"] for a in answers), answers
    return [a["data"]["decisions"][0] for a in answers]


async def test_one_alert_posted_to_two_nodes_at_once_starts_one_job(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=2) as c, agents_of(c, tmp_path, 1, on=[0]):
        _ids, ips = await hosts_by_node(c.wires[1])
        [ip] = ips.values()
        plan_id = await make_plan(c.wires[0], LONG_HEAL)

        # one fingerprint, six posts over two nodes: one job, five converged into it
        same = await rule(c, "same", plan_id, host_cooldown=0)
        decisions = await on_both(c, same, [alertmanager("firing", f"{ip}:9100")] * 6)
        assert sorted(d["decision"] for d in decisions) == ["converged"] * 5 + ["started"]
        assert len({d["job_instance_id"] for d in decisions}) == 1, decisions

        # four alerts (four fingerprints) at once under a rate limit of one job
        limited = await rule(c, "limited", plan_id, rate_limit=1, host_cooldown=0)
        names = [alertmanager("firing", ip, f"Alert{i}") for i in range(4)]
        for i, payload in enumerate(names):
            payload["alerts"][0]["fingerprint"] = f"fp{i}"
        decisions = await on_both(c, limited, names)
        assert sorted(d["decision"] for d in decisions) == ["skipped"] * 3 + ["started"]
        assert all("rate limit" in d["reason"] for d in decisions
                   if d["decision"] == "skipped"), decisions

        # and under a host's cool-down
        cooling = await rule(c, "cooling", plan_id, host_cooldown=600)
        decisions = await on_both(c, cooling, names)
        assert sorted(d["decision"] for d in decisions) == ["converged"] * 3 + ["started"]
        assert all("cooling down" in d["reason"] for d in decisions
                   if d["decision"] == "converged"), decisions

        # either node reads every decision
        for wire in c.wires:
            page = await wire.get(f"{OWN}/businesses/2/heal-decisions",
                                  {"rule_id": same, "length": 100})
            assert page["result"] and page["data"]["total"] == 6, page
