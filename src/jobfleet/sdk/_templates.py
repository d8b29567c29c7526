"""Job templates and plans through jobfleet's own API (docs/templates.md), for both clients.

Like ``_api``, each method only names its request; the sync client answers with
data, the async one with awaitables of it. Export and import carry YAML text
instead of JSON, through ``_admin_text`` / ``_admin_send_text``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from jobfleet.sdk._admin import AdminCalls
from jobfleet.sdk._errors import JobApiError
from jobfleet.sdk._steps import Send
from jobfleet.sdk._transport import ADMIN_PREFIX, Method, drop_none, encode_query, parse_envelope

D = TypeVar("D")
L = TypeVar("L")
S = TypeVar("S")

YAML_TYPE = "application/yaml"


def text_request(
    method: Method,
    path: str,
    params: dict[str, Any] | None,
    text: str | None = None,
) -> Send:
    headers = {"Accept": f"{YAML_TYPE}, application/json"}
    if text is not None:
        headers["Content-Type"] = f"{YAML_TYPE}; charset=utf-8"
    return Send(
        method,
        ADMIN_PREFIX + path,
        params=tuple(encode_query(drop_none(params or {}))),
        content=None if text is None else text.encode(),
        headers=headers,
    )


def parse_text(response: httpx.Response) -> str:
    """The YAML a call answered, or the ``JobApiError`` of its error envelope."""
    kind = response.headers.get("content-type", "")
    if response.status_code == httpx.codes.OK and kind.startswith(YAML_TYPE):
        return response.text
    data = parse_envelope(response)
    if isinstance(data, str):
        return data
    raise JobApiError(-1, f"{response.request.url.path}: the answer is not YAML")


class TemplateApi(AdminCalls[D, L, S]):
    """Templates and plans: create, read, change, delete, sync, export and import.

    ``biz`` names the business (default: the client's). Steps and variables take
    the shapes of bk-job's ``get_job_plan_detail`` with scripts in plain text.
    """

    def _scope(self, biz: int | str | None) -> dict[str, Any]:
        chosen = self._biz_or_default(biz)
        return {} if chosen is None else {"bk_biz_id": chosen}

    # templates ----------------------------------------------------------------
    def create_template(
        self,
        name: str,
        step_list: list[dict[str, Any]],
        *,
        description: str | None = None,
        global_var_list: list[dict[str, Any]] | None = None,
        biz: int | str | None = None,
    ) -> D:
        """Returns the template with the ids given to its steps and variables."""
        body = {
            "name": name,
            "description": description,
            "step_list": step_list,
            "global_var_list": global_var_list,
        }
        return self._admin_dict("POST", "/templates", body, self._scope(biz))

    def list_templates(
        self,
        *,
        name: str | None = None,
        start: int | None = None,
        length: int | None = None,
        biz: int | str | None = None,
        **filters: Any,
    ) -> D:
        """A page ``{start, length, total, data}``; ``filters`` as in get_job_template_list."""
        params = {"name": name, "start": start, "length": length, **filters, **self._scope(biz)}
        return self._admin_dict("GET", "/templates", None, params)

    def get_template(self, template_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("GET", f"/templates/{int(template_id)}", None, self._scope(biz))

    def update_template(
        self,
        template_id: int,
        *,
        name: str,
        step_list: list[dict[str, Any]],
        description: str | None = None,
        global_var_list: list[dict[str, Any]] | None = None,
        biz: int | str | None = None,
    ) -> D:
        """Replace everything; steps and variables keep identity by id (or name)."""
        body = {
            "name": name,
            "description": description,
            "step_list": step_list,
            "global_var_list": global_var_list,
        }
        return self._admin_dict("PUT", f"/templates/{int(template_id)}", body, self._scope(biz))

    def delete_template(
        self, template_id: int, *, cascade: bool = False, biz: int | str | None = None
    ) -> D:
        """Refused while the template has plans, unless ``cascade`` deletes them too."""
        params = {"cascade": cascade or None, **self._scope(biz)}
        return self._admin_dict("DELETE", f"/templates/{int(template_id)}", None, params)

    def export_template(self, template_id: int, *, biz: int | str | None = None) -> S:
        """The template and its plans as a YAML document (no secrets in it)."""
        return self._admin_text(f"/templates/{int(template_id)}/export", self._scope(biz))

    def import_template(
        self, document: str, *, update: bool = False, biz: int | str | None = None
    ) -> D:
        """Create the template of a YAML document (or replace the one of the same name
        with ``update``); returns ``{created, template, plans}``."""
        params = {"update": update or None, **self._scope(biz)}
        return self._admin_send_text("/templates/import", document, params)

    # plans --------------------------------------------------------------------
    def create_plan(
        self,
        template_id: int,
        name: str,
        *,
        enabled_step_ids: list[int] | None = None,
        global_var_list: list[dict[str, Any]] | None = None,
        description: str | None = None,
        biz: int | str | None = None,
    ) -> D:
        """A plan of the template; all steps enabled unless ``enabled_step_ids`` names some."""
        body = {
            "name": name,
            "enabled_step_ids": enabled_step_ids,
            "global_var_list": global_var_list,
            "description": description,
        }
        return self._admin_dict(
            "POST", f"/templates/{int(template_id)}/plans", body, self._scope(biz)
        )

    def list_plans(
        self,
        template_id: int,
        *,
        start: int | None = None,
        length: int | None = None,
        biz: int | str | None = None,
    ) -> D:
        params = {"start": start, "length": length, **self._scope(biz)}
        return self._admin_dict("GET", f"/templates/{int(template_id)}/plans", None, params)

    def get_plan(self, plan_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("GET", f"/plans/{int(plan_id)}", None, self._scope(biz))

    def update_plan(
        self,
        plan_id: int,
        *,
        name: str | None = None,
        enabled_step_ids: list[int] | None = None,
        global_var_list: list[dict[str, Any]] | None = None,
        description: str | None = None,
        biz: int | str | None = None,
    ) -> D:
        """Change only what is given."""
        body = {
            "name": name,
            "enabled_step_ids": enabled_step_ids,
            "global_var_list": global_var_list,
            "description": description,
        }
        return self._admin_dict("PUT", f"/plans/{int(plan_id)}", body, self._scope(biz))

    def delete_plan(self, plan_id: int, *, biz: int | str | None = None) -> D:
        return self._admin_dict("DELETE", f"/plans/{int(plan_id)}", None, self._scope(biz))

    def sync_plan(self, plan_id: int, *, biz: int | str | None = None) -> D:
        """Re-copy the plan from its template (clears ``need_update``)."""
        return self._admin_dict("POST", f"/plans/{int(plan_id)}/sync", None, self._scope(biz))
