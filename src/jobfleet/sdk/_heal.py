"""Alert-driven self-healing through jobfleet's own API (docs/self-healing.md): the
rules of a business and the decisions taken on inbound alerts."""

from __future__ import annotations

from typing import Any, TypeVar

from jobfleet.sdk._notify import NotifyApi
from jobfleet.sdk._transport import path_segment as _seg

D = TypeVar("D")
L = TypeVar("L")
S = TypeVar("S")


class HealApi(NotifyApi[D, L, S]):
    """``biz`` names the business (default: the client's)."""

    def list_heal_rules(self, *, biz: int | str | None = None) -> L:
        """The business's rules; a secret shows only as ``has_secret``."""
        return self._admin_list(self._biz_path(biz) + "/heal-rules")

    def create_heal_rule(
        self,
        name: str,
        job_plan_id: int,
        secret: str,
        *,
        match: dict[str, Any] | None = None,
        variables: dict[str, str] | None = None,
        host_variable: str = "",
        host_label: str = "instance",
        host_kind: str = "ip",
        dry_run: bool = False,
        enabled: bool = True,
        biz: int | str | None = None,
        **limits: int,
    ) -> D:
        """A rule: alerts that ``match`` start plan ``job_plan_id`` with ``variables``
        rendered from the alert, on the hosts its ``host_label`` names. ``limits``:
        max_hosts, rate_limit, host_rate_limit, rate_window, cooldown, host_cooldown."""
        body = {
            "name": name,
            "job_plan_id": job_plan_id,
            "secret": secret,
            "match": match or {},
            "variables": variables or {},
            "host_variable": host_variable,
            "host_label": host_label,
            "host_kind": host_kind,
            "dry_run": dry_run,
            "enabled": enabled,
            **limits,
        }
        return self._admin_dict("POST", self._biz_path(biz) + "/heal-rules", body)

    def get_heal_rule(self, rule_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("GET", f"{self._biz_path(biz)}/heal-rules/{_seg(rule_id)}")

    def update_heal_rule(self, rule_id: int, *, biz: int | str | None = None, **changes: Any) -> D:
        """Change any field of the rule (``enabled=False`` is its off switch)."""
        return self._admin_dict("PUT", f"{self._biz_path(biz)}/heal-rules/{_seg(rule_id)}", changes)

    def delete_heal_rule(self, rule_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("DELETE", f"{self._biz_path(biz)}/heal-rules/{_seg(rule_id)}")

    def list_heal_decisions(
        self,
        *,
        rule_id: int | None = None,
        decision: str | None = None,
        start: int = 0,
        length: int = 20,
        biz: int | str | None = None,
    ) -> D:
        """``{start, length, total, data}``, newest first; each decision carries the job
        it started and that job's status."""
        params: dict[str, Any] = {"start": start, "length": length}
        if rule_id is not None:
            params["rule_id"] = rule_id
        if decision:
            params["decision"] = decision
        return self._admin_dict("GET", self._biz_path(biz) + "/heal-decisions", params=params)
