"""Apps, users, business grants, businesses, enrollment tokens and agent credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import BIZ_SET_IDS, ScopeType
from jobfleet.store.accounts import AccountStore
from jobfleet.store.database import Database, now_ms
from jobfleet.store.enrollments import Enrollment, EnrollmentWriter
from jobfleet.store.secrets import hash_secret, new_secret, secret_matches
from jobfleet.store.tables import (
    accounts,
    agents,
    apps,
    biz_sets,
    businesses,
    enroll_tokens,
    grants,
    hosts,
    users,
)


class AgentHost(NamedTuple):
    """The host a valid agent credential is bound to, and its ip as the inventory has it."""

    host_id: int
    ip: str


@dataclass
class User:
    username: str
    is_admin: bool
    scopes: set[tuple[str, str]] = field(default_factory=set)

    def holds(self, scope_type: str, scope_id: str) -> bool:
        return self.is_admin or (scope_type, scope_id) in self.scopes


@dataclass(frozen=True)
class App:
    """An authenticated app and what it may do; ``None`` lists mean any."""

    app_code: str
    is_admin: bool = False
    users: frozenset[str] | None = None
    biz: frozenset[int] | None = None

    def may_name(self, username: str) -> bool:
        return self.users is None or username in self.users

    def may_touch(self, biz_ids: Iterable[int]) -> bool:
        return self.biz is None or all(b in self.biz for b in biz_ids)

    def public(self) -> dict[str, Any]:
        return {
            "app_code": self.app_code,
            "is_admin": self.is_admin,
            "allowed_users": "any" if self.users is None else sorted(self.users),
            "allowed_biz": "any" if self.biz is None else sorted(self.biz),
        }


def _app_of(row: Any) -> App:
    return App(
        row.app_code,
        bool(row.is_admin),
        None if row.allowed_users is None else frozenset(str(u) for u in row.allowed_users),
        None if row.allowed_biz is None else frozenset(int(b) for b in row.allowed_biz),
    )


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # set when this node revokes a credential, so that its own connections go at
        # once; other nodes' revocations are found by polling ``revoked_since``
        self.revoked = asyncio.Event()
        self.enrollments = EnrollmentWriter(db)

    # apps -------------------------------------------------------------------
    async def create_app(
        self,
        app_code: str,
        description: str = "",
        secret: str | None = None,
        *,
        users: Iterable[str] | None = None,
        biz: Iterable[int] | None = None,
        is_admin: bool = False,
    ) -> str:
        secret = secret or new_secret()
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    insert(apps).values(
                        app_code=app_code,
                        secret_hash=hash_secret(secret),
                        description=description,
                        disabled=False,
                        create_time=now_ms(),
                        allowed_users=None if users is None else sorted(set(users)),
                        allowed_biz=None if biz is None else sorted(set(biz)),
                        is_admin=is_admin,
                    )
                )
        except IntegrityError:
            raise JobError(ErrorCode.CONFLICT, f"App {app_code!r} already exists") from None
        return secret

    async def check_app(self, app_code: str, secret: str) -> App | None:
        """The app if the secret is its own and it is enabled, else None."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(apps).where(apps.c.app_code == app_code))).first()
        if row is None or row.disabled or not secret_matches(secret, row.secret_hash):
            return None
        return _app_of(row)

    async def find_app(self, app_code: str) -> tuple[App, bool] | None:
        """The app of this code and whether it is disabled; None when there is none."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(apps).where(apps.c.app_code == app_code))).first()
        return None if row is None else (_app_of(row), bool(row.disabled))

    async def list_apps(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(select(apps).order_by(apps.c.app_code))
            return [
                {
                    **_app_of(r).public(),
                    "description": r.description,
                    "disabled": r.disabled,
                    "create_time": r.create_time,
                }
                for r in rows
            ]

    async def delete_app(self, app_code: str) -> None:
        async with self.db.begin() as conn:
            res = await conn.execute(delete(apps).where(apps.c.app_code == app_code))
        if not res.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"App {app_code!r} does not exist")

    # users and grants -------------------------------------------------------
    async def create_user(self, username: str) -> None:
        """A new user, not an administrator; one of that name already is a conflict."""
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    insert(users).values(username=username, is_admin=False, create_time=now_ms())
                )
        except IntegrityError:
            raise JobError(ErrorCode.CONFLICT, f"User {username!r} already exists") from None

    async def ensure_user(self, username: str, is_admin: bool | None = False) -> bool:
        """Create the user or set its ``is_admin``; None keeps an existing user's (a new
        one is not an administrator). Answers whether the user is an administrator."""
        async with self.db.begin() as conn:
            row = (
                await conn.execute(select(users.c.is_admin).where(users.c.username == username))
            ).first()
            if row is not None:
                if is_admin is None:
                    return bool(row.is_admin)
                await conn.execute(
                    update(users).where(users.c.username == username).values(is_admin=is_admin)
                )
            else:
                is_admin = bool(is_admin)
                await conn.execute(
                    insert(users).values(username=username, is_admin=is_admin, create_time=now_ms())
                )
            return is_admin

    async def known_user(self, username: str) -> bool:
        """Whether ``username`` is a user already: it has a row, or a grant (apps act for
        any name, so a grant needs no row)."""
        async with self.db.connect() as conn:
            for table in (users, grants):
                found = await conn.execute(
                    select(table.c.username).where(table.c.username == username).limit(1)
                )
                if found.first() is not None:
                    return True
        return False

    async def get_user(self, username: str) -> User:
        """A user unknown to jobfleet holds no scope at all."""
        async with self.db.connect() as conn:
            row = (
                await conn.execute(select(users.c.is_admin).where(users.c.username == username))
            ).first()
            scopes = await conn.execute(
                select(grants.c.scope_type, grants.c.scope_id).where(grants.c.username == username)
            )
            return User(
                username, bool(row and row.is_admin), {(s.scope_type, s.scope_id) for s in scopes}
            )

    async def list_users(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.username))).all()
            gs = (await conn.execute(select(grants))).all()
        by_user: dict[str, list[dict[str, str]]] = {}
        for g in gs:
            by_user.setdefault(g.username, []).append(
                {"scope_type": g.scope_type, "scope_id": g.scope_id}
            )
        admins = {r.username: r.is_admin for r in rows}
        # a grant needs no user row (apps act for any name): such a name is a user too
        return [
            {"username": name, "is_admin": admins.get(name, False), "scopes": by_user.get(name, [])}
            for name in sorted(admins.keys() | by_user.keys())
        ]

    async def grant(self, username: str, scope_type: str, scope_id: str) -> None:
        if scope_type not in ScopeType.ALL:
            raise JobError.invalid("scope_type")
        async with self.db.begin() as conn:
            found = (
                await conn.execute(
                    select(grants.c.id).where(
                        grants.c.username == username,
                        grants.c.scope_type == scope_type,
                        grants.c.scope_id == scope_id,
                    )
                )
            ).first()
            if not found:
                await conn.execute(
                    insert(grants).values(
                        username=username, scope_type=scope_type, scope_id=scope_id
                    )
                )

    async def revoke(self, username: str, scope_type: str, scope_id: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                delete(grants).where(
                    grants.c.username == username,
                    grants.c.scope_type == scope_type,
                    grants.c.scope_id == scope_id,
                )
            )

    # businesses -------------------------------------------------------------
    async def create_business(self, bk_biz_id: int, name: str) -> None:
        if bk_biz_id in BIZ_SET_IDS:
            raise JobError.invalid(
                "bk_biz_id",
                f"{BIZ_SET_IDS.start}-{BIZ_SET_IDS.stop - 1} are business set ids",
            )
        now = now_ms()
        async with self.db.begin() as conn:
            if (
                await conn.execute(
                    select(businesses.c.bk_biz_id).where(businesses.c.bk_biz_id == bk_biz_id)
                )
            ).first():
                raise JobError(ErrorCode.CONFLICT, f"Business {bk_biz_id} already exists")
            await conn.execute(
                insert(businesses).values(
                    bk_biz_id=bk_biz_id, name=name, timezone="UTC", create_time=now
                )
            )
            # every business can run as root out of the box, as bk-job deployments do
            await conn.execute(
                insert(accounts).values(
                    bk_biz_id=bk_biz_id,
                    account="root",
                    alias="root",
                    category=1,
                    type=1,
                    os="Linux",
                    description="",
                    creator="system",
                    create_time=now,
                    last_modify_user="system",
                    last_modify_time=now,
                )
            )

    async def list_businesses(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(businesses.c.bk_biz_id, businesses.c.name).order_by(businesses.c.bk_biz_id)
            )
            return [dict(r._mapping) for r in rows]

    async def business_ids(self) -> set[int]:
        async with self.db.connect() as conn:
            return set((await conn.execute(select(businesses.c.bk_biz_id))).scalars())

    async def biz_set_members(self, biz_set_id: int) -> list[int] | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(biz_sets.c.biz_ids).where(biz_sets.c.bk_biz_set_id == biz_set_id)
                )
            ).first()
        return None if row is None else [int(b) for b in row.biz_ids]

    async def create_biz_set(self, biz_set_id: int, name: str, biz_ids: list[int]) -> None:
        """A set of existing businesses; its id is in ``BIZ_SET_IDS``."""
        if biz_set_id not in BIZ_SET_IDS:
            raise JobError.invalid(
                "bk_biz_set_id", f"must be in {BIZ_SET_IDS.start}-{BIZ_SET_IDS.stop - 1}"
            )
        members = sorted(set(biz_ids))
        if not members:
            raise JobError.invalid("bk_biz_ids", "a business set needs at least one business")
        async with self.db.begin() as conn:
            known = set(
                (
                    await conn.execute(
                        select(businesses.c.bk_biz_id).where(businesses.c.bk_biz_id.in_(members))
                    )
                ).scalars()
            )
            missing = [b for b in members if b not in known]
            if missing:
                raise JobError(
                    ErrorCode.BIZ_NOT_EXIST,
                    f"Business {', '.join(map(str, missing))} does not exist",
                )
            if (
                await conn.execute(
                    select(biz_sets.c.bk_biz_set_id).where(biz_sets.c.bk_biz_set_id == biz_set_id)
                )
            ).first():
                raise JobError(ErrorCode.CONFLICT, f"Business set {biz_set_id} already exists")
            await conn.execute(
                insert(biz_sets).values(
                    bk_biz_set_id=biz_set_id, name=name, biz_ids=members, create_time=now_ms()
                )
            )

    async def list_biz_sets(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(biz_sets.c.bk_biz_set_id, biz_sets.c.name, biz_sets.c.biz_ids).order_by(
                    biz_sets.c.bk_biz_set_id
                )
            )
            return [
                {"bk_biz_set_id": r.bk_biz_set_id, "name": r.name,
                 "bk_biz_ids": [int(b) for b in r.biz_ids]}
                for r in rows
            ]

    # accounts ---------------------------------------------------------------
    async def create_account(
        self, bk_biz_id: int, account: str, alias: str | None = None, creator: str = "system"
    ) -> int:
        """A Linux system account with no password (what tests and the demo need)."""
        return await AccountStore(self.db).create(bk_biz_id, account, alias=alias, creator=creator)

    # enrollment -------------------------------------------------------------
    async def create_enroll_token(
        self,
        *,
        bk_biz_id: int | None = None,
        uses: int | None = None,
        ttl_seconds: float | None = None,
        note: str = "",
        token: str | None = None,
    ) -> str:
        token = token or new_secret()
        async with self.db.begin() as conn:
            await conn.execute(
                insert(enroll_tokens).values(
                    token_hash=hash_secret(token),
                    bk_biz_id=bk_biz_id,
                    uses_left=uses,
                    expires_at=time.time() + ttl_seconds if ttl_seconds else None,
                    note=note,
                    create_time=now_ms(),
                )
            )
        return token

    async def enroll(
        self,
        token: str,
        *,
        ip: str,
        bk_cloud_id: int,
        bk_biz_id: int,
        hostname: str,
        os_type: str,
        source_ip: str = "",
    ) -> tuple[str, str, int]:
        """Trade an enrollment token for a per-agent credential bound to one host, and
        audit it; concurrent enrollments share a transaction (``store/enrollments.py``)."""
        done = await self.enrollments.enroll(
            Enrollment(
                hash_secret(token),
                ip=ip,
                bk_cloud_id=bk_cloud_id,
                bk_biz_id=bk_biz_id,
                hostname=hostname,
                os_type=os_type,
                source_ip=source_ip,
            )
        )
        return done.agent_id, done.agent_secret, done.bk_host_id

    async def check_agent(self, agent_id: str, secret: str) -> int | None:
        """The host an agent credential is bound to, or None."""
        async with self.db.connect() as conn:
            row = (await conn.execute(select(agents).where(agents.c.agent_id == agent_id))).first()
        if row is None or row.revoked or not secret_matches(secret, row.secret_hash):
            return None
        return int(row.bk_host_id)

    async def check_agents(
        self, creds: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], AgentHost]:
        """The hosts of those of ``creds`` (agent id, secret) that are valid, in one query;
        a credential missing from the answer is unknown, revoked or wrong."""
        wanted = set(creds)
        if not wanted:
            return {}
        columns = (agents.c.agent_id, agents.c.secret_hash, agents.c.revoked, agents.c.bk_host_id,
                   hosts.c.ip)
        ids = {agent_id for agent_id, _ in wanted}
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(
                    select(*columns)
                    .select_from(agents.outerjoin(hosts, hosts.c.bk_host_id == agents.c.bk_host_id))
                    .where(agents.c.agent_id.in_(ids))
                )
            ).all()
        found = {str(r[0]): r for r in rows}
        valid: dict[tuple[str, str], AgentHost] = {}
        for agent_id, secret in wanted:
            row = found.get(agent_id)
            if row is not None and not row[2] and secret_matches(secret, row[1]):
                valid[agent_id, secret] = AgentHost(int(row[3]), str(row[4] or ""))
        return valid

    async def revoke_agent(self, agent_id: str) -> None:
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(agents)
                .where(agents.c.agent_id == agent_id)
                .values(revoked=True, revoked_at=func.coalesce(agents.c.revoked_at, now_ms()))
            )
        if not res.rowcount:
            raise JobError(ErrorCode.NOT_FOUND, f"Agent {agent_id!r} does not exist")
        self.revoked.set()

    async def revoked_since(self, since_ms: int) -> list[str]:
        """Agents revoked at or after ``since_ms`` (epoch ms), by any node."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(agents.c.agent_id).where(agents.c.revoked_at >= since_ms)
            )
            return [str(r.agent_id) for r in rows]
