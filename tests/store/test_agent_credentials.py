"""Agent credentials checked many at a time in the identity store."""

from __future__ import annotations

from jobfleet.store.database import Database
from jobfleet.store.identity import IdentityStore


async def test_check_agents_answers_only_the_valid_ones(db: Database) -> None:
    identity = IdentityStore(db)
    await identity.create_business(2, "Default business")
    token = await identity.create_enroll_token()
    enrolled = [
        await identity.enroll(
            token, ip=f"127.0.0.{i}", bk_cloud_id=0, bk_biz_id=2, hostname=f"h{i}", os_type="Linux"
        )
        for i in range(1, 4)
    ]
    (a, sa, ha), (b, sb, _hb), (c, sc, hc) = enrolled
    await identity.revoke_agent(b)
    answer = await identity.check_agents(
        [(a, sa), (b, sb), (c, sc), (c, "wrong"), ("nobody", "x"), (a, sa)]
    )
    # each with its host and the host's ip, for the check of the address it serves peers on
    assert answer == {(a, sa): (ha, "127.0.0.1"), (c, sc): (hc, "127.0.0.3")}
    # the same answers as one at a time
    assert [await identity.check_agent(x, s) for x, s in [(a, sa), (b, sb), (c, "wrong")]] == [
        ha,
        None,
        None,
    ]
    assert await identity.check_agents([]) == {}
