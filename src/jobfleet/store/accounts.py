"""Execution accounts of a business: the OS users scripts and file steps run as."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import AccountCategory, AccountType
from jobfleet.store.database import Database, change_stamps, now_ms
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import accounts

OS_OF_TYPE = {AccountType.LINUX: "Linux", AccountType.WINDOWS: "Windows"}


def account_view(row: Row[Any]) -> dict[str, Any]:
    """An account as the API shows it: never its password."""
    return {
        "id": row.id,
        "account": row.account,
        "alias": row.alias,
        "category": row.category,
        "type": row.type,
        "os": row.os,
        "description": row.description,
        **change_stamps(row),
        "bk_biz_id": row.bk_biz_id,
    }


class AccountStore:
    def __init__(self, db: Database, cipher: Cipher | None = None) -> None:
        self.db = db
        self.cipher = cipher

    async def list(
        self,
        bk_biz_id: int,
        *,
        category: int | None = None,
        account: str | None = None,
        alias: str | None = None,
        offset: int = 0,
        limit: int = 20,
    ) -> tuple[int, list[Row[Any]]]:
        cond = [accounts.c.bk_biz_id == bk_biz_id]
        if category is not None:
            cond.append(accounts.c.category == category)
        if account:
            cond.append(accounts.c.account == account)
        if alias:
            cond.append(accounts.c.alias == alias)
        async with self.db.connect() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(accounts).where(*cond))
            ).scalar_one()
            rows = await conn.execute(
                select(accounts).where(*cond).order_by(accounts.c.id).offset(offset).limit(limit)
            )
            return int(total), list(rows.all())

    async def get(self, bk_biz_id: int, account_id: int) -> Row[Any]:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(accounts).where(
                        accounts.c.id == account_id, accounts.c.bk_biz_id == bk_biz_id
                    )
                )
            ).first()
        if row is None:
            raise JobError(ErrorCode.ACCOUNT_NOT_EXIST, f"Account {account_id} does not exist")
        return row

    async def find_system(
        self,
        biz_ids: Collection[int],
        *,
        account_id: int | None,
        alias: str | None,
        conn: AsyncConnection | None = None,
    ) -> Row[Any] | None:
        """The system account of these businesses with ``account_id`` (or, without one,
        ``alias``), read in ``conn``'s transaction when given."""
        query = select(accounts).where(
            accounts.c.bk_biz_id.in_(list(biz_ids)),
            accounts.c.category == int(AccountCategory.SYSTEM),
        )
        if account_id is not None:
            query = query.where(accounts.c.id == account_id)
        else:
            query = query.where(accounts.c.alias == alias)
        if conn is not None:
            return (await conn.execute(query)).first()
        async with self.db.connect() as own:
            return (await own.execute(query)).first()

    async def by_ids(self, ids: Collection[int]) -> dict[int, Row[Any]]:
        """The accounts with these ids (those that exist), by id, whatever their business."""
        if not ids:
            return {}
        async with self.db.connect() as conn:
            rows = await conn.execute(select(accounts).where(accounts.c.id.in_(list(ids))))
            return {int(r.id): r for r in rows}

    async def create(
        self,
        bk_biz_id: int,
        account: str,
        *,
        alias: str | None = None,
        type_: int = AccountType.LINUX,
        password: str | None = None,
        description: str = "",
        creator: str = "system",
    ) -> int:
        if type_ not in OS_OF_TYPE:
            raise JobError.invalid("type", "system accounts are 1 (Linux) or 2 (Windows)")
        if type_ == AccountType.WINDOWS and not password:
            raise JobError.missing("password")
        now = now_ms()
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(accounts).values(
                        bk_biz_id=bk_biz_id,
                        account=account,
                        alias=alias or account,
                        category=int(AccountCategory.SYSTEM),
                        type=int(type_),
                        os=OS_OF_TYPE[AccountType(type_)],
                        password=self._seal(password),
                        description=description,
                        creator=creator,
                        create_time=now,
                        last_modify_user=creator,
                        last_modify_time=now,
                    )
                )
        except IntegrityError:
            raise JobError.invalid(
                "alias", f"{alias or account!r} is taken in this business"
            ) from None
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    async def update(
        self,
        bk_biz_id: int,
        account_id: int,
        *,
        user: str,
        alias: str | None = None,
        password: str | None = None,
        description: str | None = None,
    ) -> Row[Any]:
        await self.get(bk_biz_id, account_id)
        values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        if alias:
            values["alias"] = alias
        if password:
            values["password"] = self._seal(password)
        if description is not None:
            values["description"] = description
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    update(accounts).where(accounts.c.id == account_id).values(**values)
                )
        except IntegrityError:
            raise JobError.invalid("alias", f"{alias!r} is taken in this business") from None
        return await self.get(bk_biz_id, account_id)

    async def delete(self, bk_biz_id: int, account_id: int) -> Row[Any]:
        row = await self.get(bk_biz_id, account_id)
        async with self.db.begin() as conn:
            await conn.execute(delete(accounts).where(accounts.c.id == account_id))
        return row

    def _seal(self, password: str | None) -> str | None:
        if not password:
            return None
        if self.cipher is None:
            raise RuntimeError("passwords need a cipher")
        return self.cipher.encrypt(password)
