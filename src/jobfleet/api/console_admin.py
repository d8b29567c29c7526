"""What the console's administration pages read through the API layer (hosts,
accounts, dangerous-statement rules, notification configs); web/ imports api and
domain only. The caller has already been checked to hold the business."""

from __future__ import annotations

from typing import Any

from jobfleet.api.auth import Caller
from jobfleet.api.scope import held_scopes
from jobfleet.api.services import Services
from jobfleet.domain.host_filters import parse_filter
from jobfleet.store.accounts import account_view
from jobfleet.store.audit import AuditQuery
from jobfleet.store.host_pages import STATES, HostPages, HostQuery
from jobfleet.store.notify import CHANNELS, NotifyStore, config_view
from jobfleet.store.topology import TopologyStore, group_view

__all__ = [
    "CHANNELS",
    "STATES",
    "HostPages",
    "HostQuery",
    "accounts_of",
    "audit_entries",
    "group_members",
    "groups_of",
    "host_pages",
    "notify_configs",
]

MAX_ACCOUNTS = 1000


def host_pages(services: Services) -> HostPages:
    return HostPages(services.db)


async def groups_of(services: Services, biz: int) -> list[dict[str, Any]]:
    return [group_view(r) for r in await TopologyStore(services.db).groups([biz])]


async def group_members(services: Services, biz: int, group_id: str) -> list[int] | None:
    """The ids of the hosts a dynamic group matches now (None: no such group)."""
    rows = [r for r in await TopologyStore(services.db).groups([biz]) if r.id == group_id]
    if not rows:
        return None
    matched = await services.inventory.matching([(biz, parse_filter(rows[0].filter))])
    return [h.bk_host_id for h in matched[0]]


async def accounts_of(services: Services, biz: int) -> list[dict[str, Any]]:
    """The business's accounts as the API shows them: never a password."""
    _total, rows = await services.accounts.list(biz, limit=MAX_ACCOUNTS)
    return [account_view(r) for r in rows]


async def notify_configs(
    services: Services, biz: int, *, whole_url: bool = False
) -> list[dict[str, Any]]:
    """``whole_url``: webhooks' URLs as they are (for administrators), not masked."""
    rows = await NotifyStore(services.db, services.engine.cipher).of_business(biz)
    return [config_view(r, whole_url=whole_url) for r in rows]


async def audit_entries(
    services: Services, caller: Caller, limit: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]] | None]:
    """The newest entries the caller may read, and the scopes they are limited to (None:
    every entry, an administrator's). Others read the scopes they hold, as
    ``GET /audit/entries`` (and ``jobfleet audit``) answers them."""
    if caller.is_admin:
        return await services.audit.recent(limit), None
    held = await held_scopes(services.identity, caller)
    _total, rows = await services.audit.query(AuditQuery(scopes=held), limit=limit)
    return rows, held
