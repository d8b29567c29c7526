"""Guard rails through jobfleet's own API (docs/notifications.md), for both clients:
job-end notification configs, running-job quotas and the audit log search.

Like ``_api``, each method only names its request; the sync client answers with
data, the async one with awaitables of it.
"""

from __future__ import annotations

from typing import TypeVar

from jobfleet.sdk._admin import AdminCalls
from jobfleet.sdk._transport import path_segment as _seg

D = TypeVar("D")
L = TypeVar("L")
S = TypeVar("S")


class NotifyApi(AdminCalls[D, L, S]):
    """``biz`` names the business (default: the client's)."""

    def _biz_path(self, biz: int | str | None) -> str:
        return f"/businesses/{_seg(self._named_biz(biz))}"

    # notification configs ------------------------------------------------------------

    def list_notify_configs(self, *, biz: int | str | None = None) -> L:
        """The business's configs; a webhook's secret shows only as ``has_secret``."""
        return self._admin_list(self._biz_path(biz) + "/notify-configs")

    def create_notify_config(
        self,
        channel: str,
        target: str | list[str],
        statuses: list[int | str],
        *,
        secret: str | None = None,
        enabled: bool = True,
        biz: int | str | None = None,
    ) -> D:
        """``channel`` "webhook" (``target`` a URL, ``secret`` its HMAC key) or "email"
        (``target`` addresses); ``statuses`` the final job statuses that trigger it."""
        body = {
            "channel": channel,
            "target": target,
            "statuses": statuses,
            "secret": secret,
            "enabled": enabled,
        }
        return self._admin_dict("POST", self._biz_path(biz) + "/notify-configs", body)

    def get_notify_config(self, config_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("GET", f"{self._biz_path(biz)}/notify-configs/{_seg(config_id)}")

    def update_notify_config(
        self,
        config_id: int,
        *,
        target: str | list[str] | None = None,
        statuses: list[int | str] | None = None,
        enabled: bool | None = None,
        secret: str | None = None,
        biz: int | str | None = None,
    ) -> D:
        body = {"target": target, "statuses": statuses, "enabled": enabled, "secret": secret}
        return self._admin_dict(
            "PUT", f"{self._biz_path(biz)}/notify-configs/{_seg(config_id)}", body
        )

    def delete_notify_config(self, config_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("DELETE", f"{self._biz_path(biz)}/notify-configs/{_seg(config_id)}")

    # quotas ----------------------------------------------------------------------------

    def get_business_quota(self, *, biz: int | str | None = None) -> D:
        """``{bk_biz_id, max_running_jobs, running_jobs}``."""
        return self._admin_dict("GET", self._biz_path(biz) + "/quota")

    def set_business_quota(
        self, max_running_jobs: int | None, *, biz: int | str | None = None
    ) -> D:
        """At most this many jobs of the business run at once; None lifts the limit."""
        path = self._biz_path(biz) + "/quota"
        if max_running_jobs is None:
            return self._admin_dict("DELETE", path)
        return self._admin_dict("PUT", path, {"max_running_jobs": max_running_jobs})

    def get_app_quota(self, app_code: str) -> D:
        return self._admin_dict("GET", f"/apps/{_seg(app_code)}/quota")

    def set_app_quota(self, app_code: str, max_running_jobs: int | None) -> D:
        """At most this many jobs started by the app run at once (admins only)."""
        path = f"/apps/{_seg(app_code)}/quota"
        if max_running_jobs is None:
            return self._admin_dict("DELETE", path)
        return self._admin_dict("PUT", path, {"max_running_jobs": max_running_jobs})

    # audit -----------------------------------------------------------------------------

    def search_audit(
        self,
        *,
        create_time_start: int | None = None,
        create_time_end: int | None = None,
        username: str | None = None,
        app_code: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        bk_biz_id: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | None = None,
        start: int = 0,
        length: int = 20,
    ) -> D:
        """One page ``{start, length, total, data}`` of audit entries, newest first.

        Times are epoch ms; ``action`` ending in ``*`` matches a prefix. Admins may
        leave the scope out; other users see only the scopes they hold."""
        params = {k: v for k, v in locals().items() if k != "self"}
        return self._admin_dict("GET", "/audit/entries", None, params)
