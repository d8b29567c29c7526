"""Who may confirm a manual confirmation step."""

from __future__ import annotations

from typing import Any

from jobfleet.domain.plans import ROLE_LAUNCHER


def approvers(operator: str, config: dict[str, Any] | None) -> list[str]:
    """The users who may confirm a step (its ``config``): its user list, and the
    launcher for bk-job's launcher role (other roles name no one jobfleet knows)."""
    info = (config or {}).get("approval_info") or {}
    users = info.get("approval_user") or {}
    found = [str(u) for u in users.get("user_list") or []]
    if ROLE_LAUNCHER in (users.get("role_list") or []):
        found.append(operator)
    return list(dict.fromkeys(found))
