"""Enrollments written together: each decided as if alone and in arrival order, one
refused or broken enrollment never failing another, and nodes racing for hosts
leaving one host row and one live credential per host."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import func, select

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database
from jobfleet.store.enrollments import Enrolled, Enrollment, EnrollmentWriter
from jobfleet.store.identity import IdentityStore
from jobfleet.store.secrets import hash_secret, secret_matches
from jobfleet.store.tables import agents, audit_log, enroll_tokens, hosts


async def _token(identity: IdentityStore, **kwargs: object) -> str:
    return hash_secret(await identity.create_enroll_token(**kwargs))  # type: ignore[arg-type]


async def _all(
    writer: EnrollmentWriter, enrollments: list[Enrollment]
) -> list[Enrolled | BaseException]:
    return await asyncio.gather(*(writer.enroll(e) for e in enrollments), return_exceptions=True)


def _code(outcome: Enrolled | BaseException) -> int:
    return outcome.code if isinstance(outcome, JobError) else 0


async def _count(db: Database, query: object) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(query)).scalar_one())  # type: ignore[call-overload]


async def _live(db: Database, ip: str) -> int:
    return await _count(
        db,
        select(func.count())
        .select_from(agents.join(hosts, hosts.c.bk_host_id == agents.c.bk_host_id))
        .where(hosts.c.ip == ip, agents.c.revoked.is_(False)),
    )


@pytest.fixture
async def identity(db: Database) -> IdentityStore:
    store = IdentityStore(db)
    await store.create_business(2, "two")
    await store.create_business(3, "three")
    return store


async def test_enrollments_that_come_together_share_a_transaction(
    db: Database, identity: IdentityStore
) -> None:
    writer = EnrollmentWriter(db)
    digest = await _token(identity)
    batch = [
        Enrollment(digest, f"127.1.0.{i}", hostname=f"h{i}", os_type="Linux", source_ip="127.9.9.9")
        for i in range(1, 41)
    ]
    done = await _all(writer, batch)
    assert all(isinstance(d, Enrolled) for d in done), done
    assert writer.commits.batches < 5
    assert len({d.agent_id for d in done if isinstance(d, Enrolled)}) == 40
    async with db.connect() as conn:
        rows = {r.ip: r for r in await conn.execute(select(hosts))}
        creds = {r.agent_id: r for r in await conn.execute(select(agents))}
        audits = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "agent_enroll"))
        ).all()
    for e, d in zip(batch, done, strict=True):
        assert isinstance(d, Enrolled)
        host = rows[e.ip]
        assert (host.bk_host_id, host.agent_id, host.hostname, host.os_type, host.bk_biz_id) == (
            d.bk_host_id,
            d.agent_id,
            e.hostname,
            "Linux",
            2,
        )
        assert creds[d.agent_id].bk_host_id == d.bk_host_id
        assert secret_matches(d.agent_secret, creds[d.agent_id].secret_hash)
    assert len(audits) == 40
    assert {(a.resource_id, a.detail["ip"], a.source_ip) for a in audits} == {
        (str(d.bk_host_id), e.ip, "127.9.9.9")
        for e, d in zip(batch, done, strict=True)
        if isinstance(d, Enrolled)
    }
    # nothing secret in the audit
    assert all(d.agent_secret not in str(a.detail) for a in audits for d in done)  # type: ignore[union-attr]


async def test_a_tokens_uses_go_to_the_first_comers_and_refusals_take_none(
    db: Database, identity: IdentityStore
) -> None:
    writer = EnrollmentWriter(db)
    digest = await _token(identity, uses=3)
    ips = ["127.2.0.1", "127.2.0.1", "127.2.0.2", "127.2.0.3", "127.2.0.4", "127.2.0.5"]
    done = await _all(writer, [Enrollment(digest, ip) for ip in ips])
    # the second enrollment of 127.2.0.1 is refused and takes no use: 127.2.0.3 has it
    assert [_code(d) for d in done] == [
        0,
        ErrorCode.CONFLICT,
        0,
        0,
        ErrorCode.SERVICE_AUTH_FAIL,
        ErrorCode.SERVICE_AUTH_FAIL,
    ]
    assert writer.commits.batches == 1
    assert (
        await _count(
            db, select(enroll_tokens.c.uses_left).where(enroll_tokens.c.token_hash == digest)
        )
        == 0
    )
    assert await _count(db, select(func.count()).select_from(hosts)) == 3


async def test_every_refusal_is_the_one_the_enrollment_would_get_alone(
    db: Database, identity: IdentityStore
) -> None:
    writer = EnrollmentWriter(db)
    free = await _token(identity, uses=10)
    scoped = await _token(identity, bk_biz_id=3, uses=10)
    expired = await _token(identity, ttl_seconds=1)
    async with db.begin() as conn:
        await conn.execute(
            enroll_tokens.update()
            .where(enroll_tokens.c.token_hash == expired)
            .values(expires_at=time.time() - 5)
        )
    await writer.enroll(Enrollment(free, "127.3.0.1", bk_biz_id=2))
    # 127.3.0.1 exists in business 2, without a live credential
    await identity.revoke_agent(await _agent_of(db, "127.3.0.1"))
    done = await _all(
        writer,
        [
            Enrollment(scoped, "127.3.0.1"),  # a host of business 2: not for this token
            Enrollment(free, "127.3.0.2", bk_biz_id=99),  # no such business
            Enrollment(expired, "127.3.0.3"),
            Enrollment(hash_secret("not a token"), "127.3.0.4"),
            Enrollment(scoped, "127.3.0.5", bk_biz_id=2),  # a new host goes to business 3
            Enrollment(free, "127.3.0.1", hostname="again"),  # taken over by its business
        ],
    )
    assert [_code(d) for d in done] == [
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.BIZ_NOT_EXIST,
        ErrorCode.SERVICE_AUTH_FAIL,
        ErrorCode.SERVICE_AUTH_FAIL,
        0,
        0,
    ]
    assert isinstance(done[0], JobError) and done[0].http_status == 403
    assert "business 2" in done[0].message
    async with db.connect() as conn:
        by_ip = {r.ip: r for r in await conn.execute(select(hosts))}
        rows = await conn.execute(select(enroll_tokens.c.token_hash, enroll_tokens.c.uses_left))
        left = {r.token_hash: r.uses_left for r in rows}
    assert by_ip["127.3.0.5"].bk_biz_id == 3
    assert by_ip["127.3.0.1"].hostname == "again" and by_ip["127.3.0.1"].bk_biz_id == 2
    retaken = done[5]
    assert isinstance(retaken, Enrolled) and retaken.bk_host_id == by_ip["127.3.0.1"].bk_host_id
    assert by_ip["127.3.0.1"].agent_id == retaken.agent_id
    # the scoped token spent one use (127.3.0.5), the free one two (127.3.0.1 twice)
    assert (left[scoped], left[free]) == (9, 8)
    assert await _live(db, "127.3.0.1") == 1


async def _agent_of(db: Database, ip: str) -> str:
    async with db.connect() as conn:
        return str(
            (
                await conn.execute(
                    select(agents.c.agent_id)
                    .join(hosts, hosts.c.bk_host_id == agents.c.bk_host_id)
                    .where(hosts.c.ip == ip, agents.c.revoked.is_(False))
                )
            ).scalar_one()
        )


async def test_an_enrollment_the_database_refuses_fails_alone(
    db: Database, identity: IdentityStore
) -> None:
    writer = EnrollmentWriter(db)
    digest = await _token(identity)
    done = await _all(
        writer,
        [
            Enrollment(digest, "127.4.0.1"),
            # out of every integer column's range: the database refuses the statement
            Enrollment(digest, "127.4.0.2", bk_cloud_id=2**70),
            Enrollment(digest, "127.4.0.3"),
        ],
    )
    assert isinstance(done[0], Enrolled) and isinstance(done[2], Enrolled)
    assert isinstance(done[1], Exception) and not isinstance(done[1], JobError)
    assert await _count(db, select(func.count()).select_from(hosts)) == 2
    assert await _live(db, "127.4.0.1") == 1 and await _live(db, "127.4.0.3") == 1


async def test_nodes_racing_for_the_same_hosts_leave_one_credential_each(
    database_url: str, db: Database, identity: IdentityStore
) -> None:
    other = Database(database_url)  # a second node on the same database
    try:
        writers = [EnrollmentWriter(db), EnrollmentWriter(other)]
        tokens = [await _token(identity), await _token(identity)]
        ips = [f"127.5.0.{i}" for i in range(1, 31)]
        enrollments = [
            (writers[n], Enrollment(tokens[n], ip, hostname=f"node{n}"))
            for ip in ips
            for n in (0, 1)
        ]
        done = await asyncio.gather(*(w.enroll(e) for w, e in enrollments), return_exceptions=True)
    finally:
        await other.close()
    codes = [_code(d) for d in done]
    assert set(codes) <= {0, ErrorCode.CONFLICT}, done
    assert codes.count(0) == len(ips)
    assert await _count(db, select(func.count()).select_from(hosts)) == len(ips)
    for ip in ips:
        assert await _live(db, ip) == 1


async def test_a_host_another_node_makes_meanwhile_is_refused_alone(
    database_url: str, db: Database, identity: IdentityStore
) -> None:
    """Another node makes 127.6.0.2 and its credential while the batch runs: on
    PostgreSQL the batch's insert collides with it and the batch is written again one
    enrollment at a time; on SQLite the batch waits for the write lock and finds it."""
    writer = EnrollmentWriter(db)
    digest = await _token(identity)
    other = Database(database_url)
    try:
        async with other.begin() as conn:
            made = await conn.execute(
                hosts.insert().values(
                    bk_biz_id=2,
                    bk_cloud_id=0,
                    ip="127.6.0.2",
                    agent_id="elsewhere",
                    labels={},
                    create_time=1,
                )
            )
            await conn.execute(
                agents.insert().values(
                    agent_id="elsewhere",
                    secret_hash="x",
                    revoked=False,
                    create_time=1,
                    bk_host_id=made.inserted_primary_key[0],  # type: ignore[index]
                )
            )
            racing = asyncio.ensure_future(
                _all(writer, [Enrollment(digest, f"127.6.0.{i}") for i in (1, 2, 3)])
            )
            await asyncio.sleep(0.5)
            assert not racing.done()
        done = await racing
    finally:
        await other.close()
    assert [_code(d) for d in done] == [0, ErrorCode.CONFLICT, 0]
    assert await _count(db, select(func.count()).select_from(hosts)) == 3
    assert await _live(db, "127.6.0.2") == 1
