"""Whether a cron firing or a heal decision may still act: each acts for the user that
made (or last changed) it, through the app it was made with, and either may since have
lost the scope."""

from __future__ import annotations

from collections.abc import Iterable

from jobfleet.domain.callers import RESERVED_APP_CODES
from jobfleet.store.identity import IdentityStore

# jobfleet's own callers, which have no row among the apps; each acts in its user's scopes
OWN_APPS = RESERVED_APP_CODES | {""}


async def refusal(
    identity: IdentityStore,
    username: str,
    app_code: str | None,
    scope_type: str,
    scope_id: str,
    biz_ids: Iterable[int],
) -> str | None:
    """Why the user, through the app, may no longer act in the scope; None if they may."""
    if not (await identity.get_user(username)).holds(scope_type, scope_id):
        return f"User {username!r} no longer holds {scope_type} {scope_id}"
    code = app_code or ""
    found = await identity.find_app(code)
    if found is None:
        return None if code in OWN_APPS else f"App {code!r} no longer exists"
    app, disabled = found
    if disabled:
        return f"App {code!r} is disabled"
    if not app.may_name(username):
        return f"App {code!r} may no longer act for user {username!r}"
    if not app.may_touch(biz_ids):
        return f"App {code!r} may no longer act in {scope_type} {scope_id}"
    return None
