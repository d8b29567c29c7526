"""Business topology, dynamic groups and the host whitelist through jobfleet's own API
(docs/topology.md), for both clients.

Like ``_api``, each method only names its request; the sync client answers with
data, the async one with awaitables of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from jobfleet.sdk._admin import AdminCalls
from jobfleet.sdk._transport import path_segment as _seg

D = TypeVar("D")
L = TypeVar("L")
S = TypeVar("S")

# a dynamic-group filter: a list of {field, op, value}, or {"any": [such lists]}
Filter = list[dict[str, Any]] | dict[str, Any]


class TopologyApi(AdminCalls[D, L, S]):
    """``biz`` names the business (default: the client's).

    Sets and modules come back as ``{id, node_type, name, bk_biz_id, ...}``: put them in
    a target's ``topo_node_list`` as ``{"id": …, "node_type": …}``; dynamic groups as
    ``{id, name, filter, ...}`` for ``dynamic_group_list``.
    """

    def _topo_biz(self, biz: int | str | None) -> dict[str, Any]:
        return {"bk_biz_id": self._named_biz(biz)}

    # sets and modules ------------------------------------------------------------------

    def get_topology(self, *, biz: int | str | None = None) -> D:
        """``{bk_biz_id, name, sets: [{…, modules: [{…, host_ids}]}], hosts, idle_host_ids}``."""
        return self._admin_dict("GET", "/topology", params=self._topo_biz(biz))

    def create_set(self, name: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict("POST", "/topology/sets", {"name": name, **self._topo_biz(biz)})

    def rename_set(self, set_id: int, name: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict(
            "PUT", f"/topology/sets/{int(set_id)}", {"name": name, **self._topo_biz(biz)}
        )

    def delete_set(self, set_id: int, *, biz: int | str | None = None) -> D:
        """Delete a set and its modules; refused while a host sits in one."""
        return self._admin_dict(
            "DELETE", f"/topology/sets/{int(set_id)}", params=self._topo_biz(biz)
        )

    def create_module(self, set_id: int, name: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict(
            "POST", "/topology/modules", {"set_id": set_id, "name": name, **self._topo_biz(biz)}
        )

    def rename_module(self, module_id: int, name: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict(
            "PUT", f"/topology/modules/{int(module_id)}", {"name": name, **self._topo_biz(biz)}
        )

    def delete_module(self, module_id: int, *, biz: int | str | None = None) -> D:
        """Refused while a host sits in the module."""
        return self._admin_dict(
            "DELETE", f"/topology/modules/{int(module_id)}", params=self._topo_biz(biz)
        )

    def move_hosts(
        self,
        host_ids: Sequence[int],
        module_ids: Sequence[int],
        *,
        increment: bool = False,
        biz: int | str | None = None,
    ) -> D:
        """Put hosts in these modules only, or with ``increment`` in these as well.

        No module (and no ``increment``) takes the hosts out of every module."""
        return self._admin_dict(
            "POST",
            "/topology/hosts/move",
            {
                "bk_host_ids": list(host_ids),
                "module_ids": list(module_ids),
                "is_increment": increment,
                **self._topo_biz(biz),
            },
        )

    # dynamic groups --------------------------------------------------------------------

    def list_dynamic_groups(self, *, biz: int | str | None = None) -> L:
        return self._admin_list("/dynamic-groups", self._topo_biz(biz))

    def create_dynamic_group(
        self,
        name: str,
        host_filter: Filter,
        *,
        description: str | None = None,
        group_id: str | None = None,
        biz: int | str | None = None,
    ) -> D:
        """A saved filter (docs/topology.md); its id is made up unless ``group_id`` is given."""
        return self._admin_dict(
            "POST",
            "/dynamic-groups",
            {
                "name": name,
                "filter": host_filter,
                "description": description,
                "id": group_id,
                **self._topo_biz(biz),
            },
        )

    def get_dynamic_group(self, group_id: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict(
            "GET", f"/dynamic-groups/{_seg(group_id)}", params=self._topo_biz(biz)
        )

    def update_dynamic_group(
        self,
        group_id: str,
        *,
        name: str | None = None,
        host_filter: Filter | None = None,
        description: str | None = None,
        biz: int | str | None = None,
    ) -> D:
        """Change what is given; the rest stays."""
        return self._admin_dict(
            "PUT",
            f"/dynamic-groups/{_seg(group_id)}",
            {
                "name": name,
                "filter": host_filter,
                "description": description,
                **self._topo_biz(biz),
            },
        )

    def delete_dynamic_group(self, group_id: str, *, biz: int | str | None = None) -> D:
        return self._admin_dict(
            "DELETE", f"/dynamic-groups/{_seg(group_id)}", params=self._topo_biz(biz)
        )

    def dynamic_group_hosts(self, group_id: str, *, biz: int | str | None = None) -> D:
        """``{bk_biz_id, total, hosts}``: the hosts the saved group matches now."""
        return self._admin_dict(
            "GET", f"/dynamic-groups/{_seg(group_id)}/hosts", params=self._topo_biz(biz)
        )

    def preview_dynamic_group(self, host_filter: Filter, *, biz: int | str | None = None) -> D:
        """``{bk_biz_id, total, hosts}``: what a filter would match, without saving it."""
        return self._admin_dict(
            "POST", "/dynamic-groups/preview", {"filter": host_filter, **self._topo_biz(biz)}
        )

    # host whitelist (administrators) ---------------------------------------------------

    def list_host_whitelist(self) -> L:
        return self._admin_list("/host-whitelist")

    def add_host_whitelist(
        self,
        biz_ids: Sequence[int],
        *,
        host_id: int | None = None,
        ip: str | None = None,
        bk_cloud_id: int = 0,
        action_scopes: Sequence[str] | None = None,
        remark: str | None = None,
    ) -> D:
        """Let businesses ``biz_ids`` use a host of another business, named by id or IP.

        ``action_scopes``: SCRIPT_EXECUTE and/or FILE_DISTRIBUTION (default both)."""
        return self._admin_dict(
            "POST",
            "/host-whitelist",
            {
                "bk_host_id": host_id,
                "ip": ip,
                "bk_cloud_id": bk_cloud_id if ip is not None else None,
                "biz_ids": list(biz_ids),
                "action_scopes": list(action_scopes) if action_scopes else None,
                "remark": remark,
            },
        )

    def delete_host_whitelist(self, entry_id: int) -> D:
        return self._admin_dict("DELETE", f"/host-whitelist/{int(entry_id)}")
