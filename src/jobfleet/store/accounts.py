"""Execution accounts of a business: the OS users scripts and file steps run as."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.db_connect import check_connect
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import AccountCategory, AccountType
from jobfleet.store.database import Database, change_stamps, new_stamps, now_ms
from jobfleet.store.inventory import chunks
from jobfleet.store.secrets import Cipher
from jobfleet.store.tables import accounts

OS_OF_TYPE = {AccountType.LINUX: "Linux", AccountType.WINDOWS: "Windows"}
DB_TYPES = frozenset(
    {AccountType.MYSQL, AccountType.ORACLE, AccountType.DB2, AccountType.POSTGRESQL}
)
# businesses asked at once by ``holders``
HOLDERS_CHUNK = 500
DB_TYPES_TEXT = "database accounts are 9 (MySQL), 10 (Oracle), 11 (DB2) or 12 (PostgreSQL)"
DB_DEFAULT_PORT = {
    AccountType.MYSQL: 3306,
    AccountType.ORACLE: 1521,
    AccountType.DB2: 50000,
    AccountType.POSTGRESQL: 5432,
}


@dataclass(frozen=True)
class DbChange:
    """What an update changes of a database account's connection (None: kept)."""

    host: str | None = None
    port: int | None = None
    name: str | None = None
    system_account_id: int | None = None
    type: int | None = None


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
        **_db_view(row),
    }


def _db_view(row: Row[Any]) -> dict[str, Any]:
    if row.category != AccountCategory.DB:
        return {}
    return {
        "db_system_account_id": row.db_system_account_id,
        "db_host": row.db_host,
        "db_port": row.db_port,
        "db_name": row.db_name,
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

    async def holders(self, account: str, biz_ids: Collection[int], category: int) -> set[int]:
        """Which of these businesses hold an account named ``account`` of ``category``
        (the name compared as ``list`` compares it), a chunk of businesses at a time."""
        found: set[int] = set()
        async with self.db.connect() as conn:
            for part in chunks(sorted(biz_ids), HOLDERS_CHUNK):
                rows = await conn.execute(
                    select(accounts.c.bk_biz_id)
                    .where(
                        accounts.c.bk_biz_id.in_(part),
                        accounts.c.category == category,
                        accounts.c.account == account,
                    )
                    .distinct()
                )
                found.update(int(biz) for (biz,) in rows)
        return found

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
        return await self.find(
            biz_ids, AccountCategory.SYSTEM, account_id=account_id, alias=alias, conn=conn
        )

    async def find(
        self,
        biz_ids: Collection[int],
        category: int,
        *,
        account_id: int | None,
        alias: str | None,
        conn: AsyncConnection | None = None,
    ) -> Row[Any] | None:
        """The account of ``category`` (system or database) of these businesses with
        ``account_id`` (or, without one, ``alias``)."""
        query = select(accounts).where(
            accounts.c.bk_biz_id.in_(list(biz_ids)),
            accounts.c.category == int(category),
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
        os_name = OS_OF_TYPE[AccountType(type_)]
        kind = {"category": int(AccountCategory.SYSTEM), "type": int(type_), "os": os_name}
        return await self._insert(bk_biz_id, account, alias, password, description, creator, kind)

    async def create_db(
        self,
        bk_biz_id: int,
        account: str,
        *,
        type_: int,
        password: str,
        system_account_id: int,
        host: str,
        port: int | None,
        name: str | None,
        alias: str | None = None,
        description: str = "",
        creator: str = "system",
    ) -> int:
        """A database account: a user of the database at ``host:port``, whose client runs
        on the target host as the system account ``system_account_id``."""
        if type_ not in DB_TYPES:
            raise JobError.invalid("type", DB_TYPES_TEXT)
        check_connect(type_, user=account, password=password, name=name, host=host)
        if await self.find_system([bk_biz_id], account_id=system_account_id, alias=None) is None:
            raise JobError(
                ErrorCode.ACCOUNT_NOT_EXIST,
                f"System account {system_account_id} does not exist in business {bk_biz_id}",
            )
        kind = {
            "category": int(AccountCategory.DB),
            "type": int(type_),
            "os": "Database",
            "db_host": host,
            "db_port": port or DB_DEFAULT_PORT.get(AccountType(type_)),
            "db_name": name or None,
            "db_system_account_id": system_account_id,
        }
        return await self._insert(bk_biz_id, account, alias, password, description, creator, kind)

    async def _insert(
        self,
        bk_biz_id: int,
        account: str,
        alias: str | None,
        password: str | None,
        description: str,
        creator: str,
        kind: dict[str, Any],
    ) -> int:
        """A new account of ``bk_biz_id`` (``kind``: the columns of its category); an
        alias the business has already is refused."""
        try:
            async with self.db.begin() as conn:
                res = await conn.execute(
                    insert(accounts).values(
                        bk_biz_id=bk_biz_id,
                        account=account,
                        alias=alias or account,
                        password=self._seal(password),
                        description=description,
                        **kind,
                        **new_stamps(creator, now_ms()),
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
        db: DbChange | None = None,
    ) -> Row[Any]:
        current = await self.get(bk_biz_id, account_id)
        values: dict[str, Any] = {"last_modify_user": user, "last_modify_time": now_ms()}
        if db is not None and current.category == AccountCategory.DB:
            values.update(await self._db_values(bk_biz_id, db))
            self._check_db_change(current, values, password)
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

    async def _db_values(self, bk_biz_id: int, db: DbChange) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if db.type is not None:
            if db.type not in DB_TYPES:
                raise JobError.invalid("type", DB_TYPES_TEXT)
            values["type"] = db.type
        if db.host:
            values["db_host"] = db.host
        if db.port is not None:
            values["db_port"] = db.port
        if db.name is not None:
            values["db_name"] = db.name or None
        if db.system_account_id is not None:
            found = await self.find_system(
                [bk_biz_id], account_id=db.system_account_id, alias=None
            )
            if found is None:
                raise JobError(
                    ErrorCode.ACCOUNT_NOT_EXIST,
                    f"System account {db.system_account_id} does not exist in business "
                    f"{bk_biz_id}",
                )
            values["db_system_account_id"] = db.system_account_id
        return values

    def _check_db_change(
        self, current: Row[Any], values: dict[str, Any], password: str | None
    ) -> None:
        """The account as it will be after the change, checked as ``create_db`` checks."""
        if password is None and current.password and self.cipher is not None:
            password = self.cipher.decrypt(current.password)
        check_connect(
            int(values.get("type", current.type)),
            user=current.account,
            password=password,
            name=values.get("db_name", current.db_name),
            host=values.get("db_host", current.db_host),
        )

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
