"""Where a business hears about finished jobs: webhook and email notification configs.

A webhook's HMAC key is stored encrypted with the server's cipher and never leaves
the server: views say only whether there is one. A webhook's URL often carries a token
of its own (Slack's ``/services/T/B/TOKEN``, a ``?key=``): it is stored encrypted too
(a URL stored before was not, and reads as it is), and views show it whole only when
asked to (to administrators), else to its scheme, host and port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row, delete, insert, select, update

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.database import Database, change_stamps, new_stamps, now_ms
from jobfleet.store.secrets import MASK, Cipher
from jobfleet.store.tables import notify_configs

WEBHOOK = "webhook"
EMAIL = "email"
CHANNELS = (WEBHOOK, EMAIL)


@dataclass(frozen=True)
class NotifyTarget:
    """An enabled config, ready to send through: ``secret`` is in clear text."""

    id: int
    channel: str
    target: Any
    secret: str | None


@dataclass(frozen=True)
class NotifyConfig:
    """A stored config, its webhook URL decrypted; ``secret`` stays encrypted."""

    id: int
    bk_biz_id: int
    channel: str
    target: Any
    secret: str | None
    statuses: list[int]
    enabled: bool
    creator: str
    create_time: int
    last_modify_user: str
    last_modify_time: int


def shown_url(url: str) -> str:
    """``url`` to its scheme, host and port, anything past them masked.

    Which part of a URL holds its token is the receiver's choice: a whole path
    (``/services/T/B/TOKEN``), a single segment (a chat bot's ``https://host/TOKEN``),
    a query value (``?key=``), a fragment, user info. So none of them is shown.
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if parts.path.strip("/") or parts.query or parts.fragment:
        return f"{parts.scheme}://{host}/{MASK}"
    return f"{parts.scheme}://{host}{parts.path}"


def shows(url: str, sent: str) -> bool:
    """``sent`` is ``url`` as this server shows it, or once showed it, to those who may
    not see it whole: the same scheme, host and port, then whole segments of its path
    (none now; the first, before), then the mask. Sent back from a page or a script,
    it means "keep the URL"."""
    try:
        given, stored = urlsplit(sent), urlsplit(url)
        place = (given.scheme.lower(), given.hostname, given.port)
        if place != (stored.scheme.lower(), stored.hostname, stored.port):
            return False
    except ValueError:
        return False
    head, _, last = given.path.rpartition("/")
    return (
        last == MASK
        and not (given.query or given.fragment)
        and given.netloc.rpartition("@")[0] in ("", stored.netloc.rpartition("@")[0])
        and (stored.path == head or stored.path.startswith(head + "/"))
    )


def shown_target(channel: str, target: Any) -> Any:
    return shown_url(target) if channel == WEBHOOK and isinstance(target, str) else target


def config_view(row: NotifyConfig, *, whole_url: bool = False) -> dict[str, Any]:
    """``whole_url``: a webhook's URL as it is, not as ``shown_url`` shows it."""
    return {
        "id": row.id,
        "bk_biz_id": row.bk_biz_id,
        "channel": row.channel,
        "target": row.target if whole_url else shown_target(row.channel, row.target),
        "statuses": row.statuses,
        "enabled": bool(row.enabled),
        "has_secret": bool(row.secret),
        **change_stamps(row),
    }


class NotifyStore:
    def __init__(self, db: Database, cipher: Cipher) -> None:
        self.db = db
        self.cipher = cipher

    def _sealed(self, channel: str, target: Any) -> Any:
        return self.cipher.encrypt(target) if channel == WEBHOOK else target

    def _opened(self, row: Row[Any]) -> NotifyConfig:
        target = row.target
        if row.channel == WEBHOOK and isinstance(target, str):
            target = self.cipher.decrypt(target)
        return NotifyConfig(**{**row._asdict(), "target": target})

    async def create(
        self,
        bk_biz_id: int,
        *,
        channel: str,
        target: Any,
        secret: str | None,
        statuses: list[int],
        enabled: bool,
        user: str,
    ) -> NotifyConfig:
        now = now_ms()
        async with self.db.begin() as conn:
            res = await conn.execute(
                insert(notify_configs).values(
                    bk_biz_id=bk_biz_id,
                    channel=channel,
                    target=self._sealed(channel, target),
                    secret=self.cipher.encrypt(secret) if secret else None,
                    statuses=statuses,
                    enabled=enabled,
                    **new_stamps(user, now),
                )
            )
            config_id = int(res.inserted_primary_key[0])  # type: ignore[index]
        return await self.get(bk_biz_id, config_id)

    async def of_business(self, bk_biz_id: int) -> list[NotifyConfig]:
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(notify_configs)
                .where(notify_configs.c.bk_biz_id == bk_biz_id)
                .order_by(notify_configs.c.id)
            )
            return [self._opened(r) for r in rows]

    async def get(self, bk_biz_id: int, config_id: int) -> NotifyConfig:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    select(notify_configs).where(
                        notify_configs.c.id == config_id,
                        notify_configs.c.bk_biz_id == bk_biz_id,
                    )
                )
            ).first()
        if row is None:
            raise JobError(
                ErrorCode.NOT_FOUND,
                f"Notification config {config_id} does not exist in business {bk_biz_id}",
            )
        return self._opened(row)

    async def update(
        self, bk_biz_id: int, config_id: int, *, user: str, **changes: Any
    ) -> NotifyConfig:
        """Change ``target``, ``secret``, ``statuses`` or ``enabled`` (the channel stays)."""
        current = await self.get(bk_biz_id, config_id)
        if "target" in changes:
            changes["target"] = self._sealed(current.channel, changes["target"])
        if "secret" in changes:
            secret = changes["secret"]
            changes["secret"] = self.cipher.encrypt(secret) if secret else None
        async with self.db.begin() as conn:
            await conn.execute(
                update(notify_configs)
                .where(notify_configs.c.id == config_id, notify_configs.c.bk_biz_id == bk_biz_id)
                .values(**changes, last_modify_user=user, last_modify_time=now_ms())
            )
        return await self.get(bk_biz_id, config_id)

    async def delete(self, bk_biz_id: int, config_id: int) -> NotifyConfig:
        row = await self.get(bk_biz_id, config_id)
        async with self.db.begin() as conn:
            await conn.execute(
                delete(notify_configs).where(
                    notify_configs.c.id == config_id, notify_configs.c.bk_biz_id == bk_biz_id
                )
            )
        return row

    async def matching(self, bk_biz_id: int, status: int) -> list[NotifyTarget]:
        """The enabled configs of a business that listen for ``status``."""
        return await self.enabled(bk_biz_id, status)

    async def enabled(self, bk_biz_id: int, status: int | None = None) -> list[NotifyTarget]:
        """The enabled configs of a business (those that listen for ``status`` if given)."""
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(notify_configs)
                .where(
                    notify_configs.c.bk_biz_id == bk_biz_id,
                    notify_configs.c.enabled.is_(True),
                )
                .order_by(notify_configs.c.id)
            )
            found = []
            for row in rows:
                # statuses is JSON: filtered here, the same way on every database
                if status is not None and status not in (row.statuses or []):
                    continue
                config = self._opened(row)
                secret = self.cipher.decrypt(row.secret) if row.secret else None
                found.append(NotifyTarget(row.id, row.channel, config.target, secret))
            return found
