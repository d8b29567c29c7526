"""Enrollment: token uses under concurrency, one live credential per host, business
scope, expiry, and every refusal audited with where it came from."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from tests.integration.harness import Running, Wire

from jobfleet.domain import enrollment
from jobfleet.domain.errors import ErrorCode
from jobfleet.store.tables import agents, enroll_tokens, hosts

ENROLL = "/api/jobfleet/v1/agents/enroll"


async def new_token(wire: Wire, **params: Any) -> str:
    resp = await wire.http.post("/api/jobfleet/v1/enroll-tokens", json=params,
                                headers=wire.headers())
    body = resp.json()
    assert body["result"], body
    return str(body["data"]["token"])


async def enroll(http: httpx.AsyncClient, token: str, ip: str, **extra: Any) -> httpx.Response:
    return await http.post(ENROLL, json={"token": token, "ip": ip, **extra})


async def audit(wire: Wire, action: str) -> list[dict[str, Any]]:
    resp = await wire.http.get("/api/jobfleet/v1/audit", params={"limit": 1000},
                               headers=wire.headers())
    return [e for e in resp.json()["data"] if e["action"] == action]


async def live_credentials(running: Running, ip: str | None = None) -> int:
    query = select(func.count()).select_from(agents.join(
        hosts, hosts.c.bk_host_id == agents.c.bk_host_id)).where(agents.c.revoked.is_(False))
    if ip is not None:
        query = query.where(hosts.c.ip == ip)
    async with running.server.db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_a_token_of_five_uses_enrolls_five_hosts_of_twenty_racing(
        running: Running) -> None:
    token = await new_token(running.wire, uses=5)
    async with running.agent_http() as http:
        answers = await asyncio.gather(*(enroll(http, token, f"127.0.8.{i}")
                                         for i in range(1, 21)))
    assert all(a.status_code in (200, 401) for a in answers), [a.text for a in answers]
    won = [a.json() for a in answers if a.status_code == 200]
    assert len(won) == 5, [a.text for a in answers]
    assert all(a.json()["code"] == ErrorCode.SERVICE_AUTH_FAIL
               for a in answers if a.status_code == 401)
    assert await live_credentials(running) == 5
    digest = enrollment.parse(token).secret
    async with running.server.db.connect() as conn:
        left = (await conn.execute(select(enroll_tokens.c.uses_left).where(
            enroll_tokens.c.token_hash == _hash(digest)))).scalar_one()
    assert left == 0


async def test_one_host_enrolled_at_once_by_many_gets_one_credential(running: Running) -> None:
    tokens = [await new_token(running.wire), await new_token(running.wire)]
    async with running.agent_http() as http:
        answers = await asyncio.gather(*(enroll(http, tokens[i % 2], "127.0.9.1")
                                         for i in range(12)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [409] * 11, [a.text for a in answers]
        refusals = [a.json() for a in answers if a.status_code == 409]
        assert all(r["result"] is False and r["code"] == ErrorCode.CONFLICT for r in refusals)
        assert "already has an enrolled agent" in refusals[0]["message"]
        assert await live_credentials(running, "127.0.9.1") == 1
        # a sequential second enrollment is refused the same way, until the revocation
        again = await enroll(http, tokens[0], "127.0.9.1")
        assert again.status_code == 409 and again.json()["code"] == ErrorCode.CONFLICT
        winner = next(a.json()["data"] for a in answers if a.status_code == 200)
        revoked = await running.wire.http.delete(
            f"/api/jobfleet/v1/agents/{winner['agent_id']}", headers=running.wire.headers())
        assert revoked.json()["result"], revoked.text
        renewed = await enroll(http, tokens[1], "127.0.9.1")
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["data"]["bk_host_id"] == winner["bk_host_id"]
    assert await live_credentials(running, "127.0.9.1") == 1


async def test_a_scoped_token_cannot_claim_a_host_of_another_business(
        running: Running) -> None:
    wire = running.wire
    made = await wire.http.post("/api/jobfleet/v1/businesses",
                                json={"bk_biz_id": 3, "name": "other"}, headers=wire.headers())
    assert made.json()["result"], made.text
    added = await wire.http.post("/api/jobfleet/v1/hosts",
                                 json={"bk_biz_id": 3, "ip": "127.0.10.1"},
                                 headers=wire.headers())
    assert added.json()["result"], added.text
    biz2 = await new_token(wire, bk_biz_id=2)
    async with running.agent_http() as http:
        refused = await enroll(http, biz2, "127.0.10.1", bk_biz_id=3)
        assert refused.status_code == 403, refused.text
        body = refused.json()
        assert body["result"] is False and body["code"] == ErrorCode.PERMISSION_DENIED
        assert "business 3" in body["message"]
        # the refusal gave the use back: the same token still enrolls a host of its own
        assert (await enroll(http, biz2, "127.0.10.2", bk_biz_id=3)).status_code == 200
        biz3 = await new_token(wire, bk_biz_id=3)
        assert (await enroll(http, biz3, "127.0.10.1")).status_code == 200
    listed = await wire.http.get("/api/jobfleet/v1/hosts", headers=wire.headers())
    by_ip = {h["ip"]: h["bk_biz_id"] for h in listed.json()["data"]}
    # a scoped token puts new hosts in its business, whatever the agent asks for
    assert by_ip["127.0.10.1"] == 3 and by_ip["127.0.10.2"] == 2
    entries = await audit(wire, "agent_enroll_refused")
    assert any(e["detail"]["ip"] == "127.0.10.1" and e["source_ip"] == "127.0.0.1"
               and e["detail"]["code"] == ErrorCode.PERMISSION_DENIED for e in entries), entries
    assert all(biz2 not in str(e) and enrollment.parse(biz2).secret not in str(e)
               for e in entries)


async def test_tokens_expire(running: Running, tmp_path: Path) -> None:
    short = await new_token(running.wire, ttl_seconds=1)
    await asyncio.sleep(1.3)
    async with running.agent_http() as http:
        late = await enroll(http, short, "127.0.11.1")
        bogus = await enroll(http, "not-a-token", "127.0.11.2")
        malformed = await enroll(http, "a.b", "127.0.11.3")
    for answer in (late, bogus, malformed):
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == ErrorCode.SERVICE_AUTH_FAIL
    entries = await audit(running.wire, "agent_enroll_refused")
    assert {"127.0.11.1", "127.0.11.2", "127.0.11.3"} <= {e["detail"]["ip"] for e in entries}
    # the first-start token expires after a day by default
    expires = running.boot["enroll_token_expires_at"]
    assert abs(expires - (time.time() + 24 * 3600)) < 600
    secret = enrollment.parse(running.boot["enroll_token"]).secret
    async with running.server.db.connect() as conn:
        stored = (await conn.execute(select(enroll_tokens.c.expires_at).where(
            enroll_tokens.c.token_hash == _hash(secret)))).scalar_one()
    assert stored is not None and abs(stored - expires) < 5


def _hash(secret: str) -> str:
    from jobfleet.store.secrets import hash_secret
    return hash_secret(secret)


async def test_bad_enrollment_requests_get_the_envelope(running: Running) -> None:
    token = await new_token(running.wire, uses=1)
    async with running.agent_http() as http:
        answers = [
            await enroll(http, token, "127.0.12.1", bk_cloud_id=2**70),
            await enroll(http, token, "127.0.12.1", bk_biz_id=-1),
            await enroll(http, token, "not-an-ip"),
            await enroll(http, "x" * 5000, "127.0.12.1"),
            await http.post(ENROLL, json={"ip": "127.0.12.1"}),
            await http.post(ENROLL, content=b"{not json", headers={
                "content-type": "application/json"}),
        ]
        for answer in answers:
            assert 400 <= answer.status_code < 500 or answer.status_code == 200, answer.text
            body = answer.json()
            assert body["result"] is False and body["code"] != 0, body
        # none of them spent the token's one use
        assert (await enroll(http, token, "127.0.12.1")).status_code == 200
    assert len(await audit(running.wire, "agent_enroll_refused")) >= len(answers)


async def test_the_agent_port_does_not_take_a_forwarded_address(running: Running) -> None:
    # agents reach the agent port straight (its TLS is pinned, so no proxy can sit in
    # between): a forwarded address is a client's claim, and it would pick the address
    # that failures are counted and audited under
    async with running.agent_http() as http:
        answer = await http.post(ENROLL, json={"token": "not-a-token", "ip": "127.0.12.1"},
                                 headers={"X-Forwarded-For": "127.66.6.6"})
    assert answer.status_code == 401, answer.text
    [entry] = [e for e in await audit(running.wire, "agent_enroll_refused")
               if e["detail"]["ip"] == "127.0.12.1"]
    assert entry["source_ip"] == "127.0.0.1", entry


async def test_names_given_at_enrollment_or_by_hand_keep_no_control_characters(
    running: Running,
) -> None:
    # the inventory keeps what a hello says without control characters; enrollment and
    # the admin route write the same column
    wire = running.wire
    added = await wire.http.post(
        "/api/jobfleet/v1/hosts",
        json={"bk_biz_id": 2, "ip": "127.0.13.1", "hostname": "db\x1b]0;owned\x07\x1b[2J1"},
        headers=wire.headers())
    assert added.json()["data"]["hostname"] == "db]0;owned[2J1", added.text
    too_long = await wire.http.post(
        "/api/jobfleet/v1/hosts", json={"bk_biz_id": 2, "ip": "127.0.13.3", "hostname": "h" * 256},
        headers=wire.headers())
    assert too_long.json()["code"] == ErrorCode.INVALID_PARAM_WITH_REASON, too_long.text
    async with running.agent_http() as http:
        answer = await enroll(http, running.boot["enroll_token"], "127.0.13.2",
                              hostname="web\x1b[31m2\x7f", os_type="Linux\x9b")
    assert answer.json()["result"], answer.text
    listed = await wire.http.get("/api/jobfleet/v1/hosts", headers=wire.headers())
    by_ip = {h["ip"]: h for h in listed.json()["data"]}
    assert by_ip["127.0.13.1"]["hostname"] == "db]0;owned[2J1"
    enrolled = by_ip["127.0.13.2"]
    assert (enrolled["hostname"], enrolled["os_type"]) == ("web[31m2", "Linux")
