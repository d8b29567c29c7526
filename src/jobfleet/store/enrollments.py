"""Enrollment: enrollment tokens traded for per-agent credentials, many in one transaction.

Thousands of hosts enroll at once when a fleet is rolled out. Each enrollment is a few
small writes (a use of the token, the host, the credential, the audit entry), so a
transaction each would spend the server's time on transactions; enrollments that
arrive together are written together instead (``group_commit``), in one transaction of
a few statements whatever their number.

Within a batch the enrollments are decided in arrival order, exactly as if each had
its own transaction: a token's uses go to the first comers, a host is claimed by the
first enrollment that names it and later ones are refused as "already enrolled", and a
refused enrollment takes no use of its token. The batch starts by writing the rows of
its tokens, which takes the write lock (SQLite) or the tokens' row locks (PostgreSQL,
in one order, so that nodes enrolling on the same tokens take turns instead of
deadlocking); two nodes racing for one host with different tokens are settled by the
unique indexes on hosts and on live credentials: the batch that loses is written
again one enrollment at a time, and only the enrollment of that host is refused.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.audit import entry
from jobfleet.store.database import Database, now_ms
from jobfleet.store.group_commit import GroupCommit
from jobfleet.store.secrets import hash_secret, new_secret
from jobfleet.store.tables import agents, audit_log, businesses, enroll_tokens, hosts

# enrollments written in one transaction at most
MAX_BATCH = 256
# how long a batch that is not full waits for more: far below an enrollment's own
# round trip (a TLS handshake and a request), long enough for a few more to arrive
# when thousands of hosts enroll at once
LINGER = 0.004


@dataclass(frozen=True)
class Enrollment:
    """One host asking for a credential with the token whose digest is ``token_digest``."""

    token_digest: str
    ip: str
    bk_cloud_id: int = 0
    bk_biz_id: int = 2
    hostname: str = ""
    os_type: str = ""
    # where the request came from, for the audit entry
    source_ip: str = ""


@dataclass(frozen=True)
class Enrolled:
    agent_id: str
    agent_secret: str
    bk_host_id: int


class EnrollmentWriter:
    """Writes enrollments in batches; each caller gets its credential or its refusal."""

    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH, linger: float = LINGER) -> None:
        self.db = db
        self.commits: GroupCommit[Enrollment, Enrolled] = GroupCommit(
            "enrollments", self._write, max_batch=max_batch, linger=linger
        )

    async def enroll(self, enrollment: Enrollment) -> Enrolled:
        """The new credential, or a ``JobError``: 401 for a bad, used up or expired
        token, ``BIZ_NOT_EXIST``, 403 for a host of another business than the token's,
        409 for a host that has a live credential."""
        return await self.commits.submit(enrollment)

    async def _write(self, batch: Sequence[Enrollment]) -> list[Enrolled | Exception]:
        try:
            return await self.db.run_write(lambda conn: _enroll_all(conn, batch))
        except IntegrityError:
            if len(batch) > 1:
                raise  # written again one at a time: only the loser is refused
            # another enrollment of the same host committed first
            return [already_enrolled(batch[0].bk_cloud_id, batch[0].ip)]


def already_enrolled(bk_cloud_id: int, ip: str) -> JobError:
    return JobError(
        ErrorCode.CONFLICT,
        f"Host {bk_cloud_id}:{ip} already has an enrolled agent; "
        "revoke its credential first (jobfleet admin agent revoke AGENT_ID)",
        http_status=409,
    )


def _bad_token() -> JobError:
    return JobError(
        ErrorCode.SERVICE_AUTH_FAIL,
        "Invalid, used up or expired enrollment token",
        http_status=401,
    )


@dataclass
class _Token:
    uses_left: int | None
    expires_at: float | None
    bk_biz_id: int | None
    taken: int = 0

    def usable(self, clock: float) -> bool:
        if self.expires_at is not None and self.expires_at <= clock:
            return False
        return self.uses_left is None or self.uses_left > self.taken


@dataclass
class _Host:
    bk_host_id: int
    bk_biz_id: int
    live: bool


@dataclass
class _Claim:
    """An enrollment that will be written: its credential and the host it binds."""

    index: int
    enrollment: Enrollment
    host: _Host
    agent_id: str
    secret: str


# the statements, built once (SQLAlchemy caches their compiled form by structure)
_TOK = enroll_tokens.c
_LOCK_TOKEN = (
    update(enroll_tokens)
    .where(_TOK.token_hash == bindparam("digest"))
    .values(uses_left=_TOK.uses_left)
    .returning(_TOK.uses_left, _TOK.expires_at, _TOK.bk_biz_id)
)
_SPEND_USES = (
    update(enroll_tokens)
    .where(_TOK.token_hash == bindparam("digest"))
    .values(uses_left=_TOK.uses_left - bindparam("taken"))
)
_BUSINESSES = select(businesses.c.bk_biz_id).where(
    businesses.c.bk_biz_id.in_(bindparam("ids", expanding=True))
)
_HOSTS = select(hosts.c.bk_host_id, hosts.c.bk_biz_id, hosts.c.bk_cloud_id, hosts.c.ip).where(
    hosts.c.bk_cloud_id.in_(bindparam("clouds", expanding=True)),
    hosts.c.ip.in_(bindparam("ips", expanding=True)),
)
_LIVE = select(agents.c.bk_host_id).where(
    agents.c.bk_host_id.in_(bindparam("ids", expanding=True)), agents.c.revoked.is_(False)
)
_TAKE_OVER = (
    update(hosts)
    .where(hosts.c.bk_host_id == bindparam("host"))
    .values(agent_id=bindparam("agent"), hostname=bindparam("name"), os_type=bindparam("os"))
)


def _enroll_all(conn: Connection, batch: Sequence[Enrollment]) -> list[Enrolled | Exception]:
    clock, now = time.time(), now_ms()
    tokens: dict[str, _Token] = {}
    for digest in sorted({e.token_digest for e in batch}):
        row = (conn.execute(_LOCK_TOKEN, {"digest": digest})).first()
        if row is not None:
            tokens[digest] = _Token(
                row.uses_left,
                row.expires_at,
                None if row.bk_biz_id is None else int(row.bk_biz_id),
            )
    wanted = {_biz_of(tokens[e.token_digest], e) for e in batch if e.token_digest in tokens}
    known_biz: set[int] = set()
    if wanted:
        found = conn.execute(_BUSINESSES, {"ids": sorted(wanted)})
        known_biz = {int(b) for b in found.scalars()}
    seen = _hosts_of(conn, batch)

    outcomes: list[Enrolled | Exception | None] = [None] * len(batch)
    claims: list[_Claim] = []
    new: dict[tuple[int, str], dict[str, Any]] = {}
    for index, e in enumerate(batch):
        token = tokens.get(e.token_digest)
        if token is None or not token.usable(clock):
            outcomes[index] = _bad_token()
            continue
        bk_biz_id = _biz_of(token, e)
        if bk_biz_id not in known_biz:
            outcomes[index] = JobError(
                ErrorCode.BIZ_NOT_EXIST, f"Business {bk_biz_id} does not exist"
            )
            continue
        agent_id = uuid.uuid4().hex
        key = (e.bk_cloud_id, e.ip)
        host = seen.get(key)
        if host is None:
            host = seen[key] = _Host(0, bk_biz_id, live=True)
            new[key] = _new_host(e, bk_biz_id, agent_id, now)
        elif token.bk_biz_id is not None and host.bk_biz_id != bk_biz_id:
            outcomes[index] = JobError(
                ErrorCode.PERMISSION_DENIED,
                f"Host {e.bk_cloud_id}:{e.ip} belongs to business {host.bk_biz_id}; "
                f"this enrollment token may only enroll hosts of business {bk_biz_id}",
                http_status=403,
            )
            continue
        elif host.live:
            outcomes[index] = already_enrolled(e.bk_cloud_id, e.ip)
            continue
        else:
            host.live = True
        token.taken += 1
        claims.append(_Claim(index, e, host, agent_id, new_secret(32)))

    if claims:
        _write_claims(conn, claims, new, tokens, now)
    for claim in claims:
        outcomes[claim.index] = Enrolled(claim.agent_id, claim.secret, claim.host.bk_host_id)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def _biz_of(token: _Token, e: Enrollment) -> int:
    """A scoped token puts its hosts in its business, whatever the agent asks for."""
    return e.bk_biz_id if token.bk_biz_id is None else token.bk_biz_id


def _hosts_of(conn: Connection, batch: Sequence[Enrollment]) -> dict[tuple[int, str], _Host]:
    """The hosts the batch names that exist, and whether each has a live credential."""
    rows = (
        conn.execute(
            _HOSTS,
            {
                "clouds": sorted({e.bk_cloud_id for e in batch}),
                "ips": sorted({e.ip for e in batch}),
            },
        )
    ).all()
    wanted = {(e.bk_cloud_id, e.ip) for e in batch}
    seen = {
        (int(r.bk_cloud_id), str(r.ip)): _Host(int(r.bk_host_id), int(r.bk_biz_id), live=False)
        for r in rows
        if (int(r.bk_cloud_id), str(r.ip)) in wanted
    }
    if seen:
        by_id = {h.bk_host_id: h for h in seen.values()}
        live = conn.execute(_LIVE, {"ids": sorted(by_id)})
        for bk_host_id in live.scalars():
            by_id[int(bk_host_id)].live = True
    return seen


def _new_host(e: Enrollment, bk_biz_id: int, agent_id: str, now: int) -> dict[str, Any]:
    return {
        "bk_biz_id": bk_biz_id,
        "bk_cloud_id": e.bk_cloud_id,
        "ip": e.ip,
        "ipv6": "",
        "agent_id": agent_id,
        "hostname": e.hostname,
        "os_type": e.os_type,
        "os_name": "",
        "agent_version": "",
        "labels": {},
        "alive": 0,
        "create_time": now,
    }


def _write_claims(
    conn: Connection,
    claims: list[_Claim],
    new: dict[tuple[int, str], dict[str, Any]],
    tokens: dict[str, _Token],
    now: int,
) -> None:
    """Hosts made or taken over, credentials, token uses and audit entries, in batches
    (rows in key order, so that concurrent writers lock them in one order)."""
    new_ids: dict[tuple[int, str], int] = {}
    if new:
        # an executemany, then their ids in one query: RETURNING in parameter order
        # would be a statement per row on SQLite
        conn.execute(insert(hosts), [new[k] for k in sorted(new)])
        made = conn.execute(
            _HOSTS,
            {"clouds": sorted({c for c, _ in new}), "ips": sorted({ip for _, ip in new})},
        )
        new_ids = {(int(r.bk_cloud_id), str(r.ip)): int(r.bk_host_id) for r in made}
    taken_over = []
    for claim in claims:
        key = (claim.enrollment.bk_cloud_id, claim.enrollment.ip)
        if key in new:
            claim.host.bk_host_id = new_ids[key]
        else:
            taken_over.append(claim)
    if taken_over:
        conn.execute(
            _TAKE_OVER,
            [
                {
                    "host": c.host.bk_host_id,
                    "agent": c.agent_id,
                    "name": c.enrollment.hostname,
                    "os": c.enrollment.os_type,
                }
                for c in sorted(taken_over, key=lambda c: c.host.bk_host_id)
            ],
        )
    conn.execute(
        insert(agents),
        [
            {
                "agent_id": c.agent_id,
                "secret_hash": hash_secret(c.secret),
                "bk_host_id": c.host.bk_host_id,
                "revoked": False,
                "create_time": now,
            }
            for c in sorted(claims, key=lambda c: c.host.bk_host_id)
        ],
    )
    spent = [
        {"digest": digest, "taken": t.taken}
        for digest, t in sorted(tokens.items())
        if t.uses_left is not None and t.taken
    ]
    if spent:
        conn.execute(_SPEND_USES, spent)
    conn.execute(
        insert(audit_log),
        [
            entry(
                app_code="",
                username="",
                action="agent_enroll",
                resource_type="host",
                resource_id=str(c.host.bk_host_id),
                detail={"ip": c.enrollment.ip, "agent_id": c.agent_id},
                source_ip=c.enrollment.source_ip,
                now=now,
            )
            for c in claims
        ],
    )
