"""One method per bk-job v3 API, shared by both clients (jobfleet's own calls: ``_admin``).

Each method only names its parameters and hands them to ``_bk`` / ``_admin_*``; the
sync client answers those with data, the async one with awaitables of it. The
return type is a type parameter so both clients keep exact types without writing
every API twice.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from jobfleet.sdk._errors import JobApiError

D = TypeVar("D")

_SCOPE_KEYS = ("bk_scope_type", "bk_scope_id", "bk_biz_id")


def biz_scope(biz: int | str | None) -> dict[str, Any]:
    """The scope pair for a business id, or nothing when there is none."""
    if biz is None:
        return {}
    return {"bk_scope_type": "biz", "bk_scope_id": str(biz)}


def with_scope(params: dict[str, Any], default_biz: int | str | None) -> dict[str, Any]:
    """Fill the client's default business unless the caller named a scope."""
    if params.get("bk_scope_id") is not None:
        params["bk_scope_id"] = str(params["bk_scope_id"])
    if all(params.get(k) is None for k in _SCOPE_KEYS):
        params.update(biz_scope(default_biz))
    return params


def expect_dict(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise JobApiError(-1, f"{what}: expected an object, got {type(data).__name__}")
    return data


def expect_list(data: Any, what: str) -> list[dict[str, Any]]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise JobApiError(-1, f"{what}: expected a list, got {type(data).__name__}")
    return data


def _args(local_vars: dict[str, Any]) -> dict[str, Any]:
    # called first thing with locals(): exactly the method's arguments
    args = {k: v for k, v in local_vars.items() if k not in ("self", "extra")}
    args.update(local_vars.get("extra") or {})
    return args


class BkApi(Generic[D]):
    """The bk-job v3 APIs by their bk-job names; each returns the envelope's ``data``.

    Every method takes the scope as ``bk_scope_type`` + ``bk_scope_id`` or the
    deprecated ``bk_biz_id``; with none of them the client's ``biz`` is used.
    Parameters bk-job adds later pass through ``**extra``.
    """

    def _bk(self, name: str, params: dict[str, Any]) -> D:
        raise NotImplementedError

    # --- execution (§3) ---------------------------------------------------------

    def fast_execute_script(
        self,
        *,
        script_content: str | None = None,
        script_language: int | None = None,
        script_id: str | None = None,
        script_version_id: int | None = None,
        script_param: str | None = None,
        is_param_sensitive: int | None = None,
        timeout: int | None = None,
        account_id: int | None = None,
        account_alias: str | None = None,
        target_server: dict[str, Any] | None = None,
        task_name: str | None = None,
        callback_url: str | None = None,
        rolling_config: dict[str, Any] | None = None,
        start_task: bool | None = None,
        host_password_list: list[dict[str, Any]] | None = None,
        windows_interpreter: str | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """Run a script on hosts; ``script_content``/``script_param`` are base64."""
        return self._bk("fast_execute_script", _args(locals()))

    def fast_execute_sql(
        self,
        *,
        db_account_id: int | None = None,
        script_content: str | None = None,
        script_id: str | None = None,
        script_version_id: int | None = None,
        timeout: int | None = None,
        target_server: dict[str, Any] | None = None,
        task_name: str | None = None,
        callback_url: str | None = None,
        start_task: bool | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("fast_execute_sql", _args(locals()))

    def fast_transfer_file(
        self,
        *,
        file_source_list: list[dict[str, Any]] | None = None,
        file_target_path: str | None = None,
        file_target_name: str | None = None,
        account_id: int | None = None,
        account_alias: str | None = None,
        target_server: dict[str, Any] | None = None,
        transfer_mode: int | None = None,
        upload_speed_limit: int | None = None,
        download_speed_limit: int | None = None,
        timeout: int | None = None,
        task_name: str | None = None,
        callback_url: str | None = None,
        rolling_config: dict[str, Any] | None = None,
        start_task: bool | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("fast_transfer_file", _args(locals()))

    def push_config_file(
        self,
        *,
        file_list: list[dict[str, Any]] | None = None,
        file_target_path: str | None = None,
        account_alias: str | None = None,
        account_id: int | None = None,
        target_server: dict[str, Any] | None = None,
        task_name: str | None = None,
        callback_url: str | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """Write small text files; each ``file_list`` entry is ``{file_name, content(base64)}``."""
        return self._bk("push_config_file", _args(locals()))

    def execute_job_plan(
        self,
        job_plan_id: int,
        *,
        global_var_list: list[dict[str, Any]] | None = None,
        callback_url: str | None = None,
        start_task: bool | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("execute_job_plan", _args(locals()))

    def operate_job_instance(
        self,
        job_instance_id: int,
        operation_code: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """``operation_code`` 1 terminates the job, 2 starts one created with start_task=false."""
        return self._bk("operate_job_instance", _args(locals()))

    def operate_step_instance(
        self,
        job_instance_id: int,
        step_instance_id: int,
        operation_code: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("operate_step_instance", _args(locals()))

    # --- queries (§4) -----------------------------------------------------------

    def get_job_instance_status(
        self,
        job_instance_id: int,
        *,
        return_ip_result: bool | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_instance_status", _args(locals()))

    def get_step_instance_status(
        self,
        job_instance_id: int,
        step_instance_id: int,
        *,
        execute_count: int | None = None,
        batch: int | None = None,
        max_host_num_per_group: int | None = None,
        keyword: str | None = None,
        search_ip: str | None = None,
        status: int | None = None,
        tag: str | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_step_instance_status", _args(locals()))

    def get_step_instance_detail(
        self,
        job_instance_id: int,
        step_instance_id: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_step_instance_detail", _args(locals()))

    def get_job_instance_ip_log(
        self,
        job_instance_id: int,
        step_instance_id: int,
        *,
        bk_host_id: int | None = None,
        bk_cloud_id: int | None = None,
        ip: str | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_instance_ip_log", _args(locals()))

    def batch_get_job_instance_ip_log(
        self,
        job_instance_id: int,
        step_instance_id: int,
        *,
        host_id_list: list[int] | None = None,
        ip_list: list[dict[str, Any]] | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """Logs of up to 500 hosts of one step."""
        return self._bk("batch_get_job_instance_ip_log", _args(locals()))

    def get_job_instance_list(
        self,
        *,
        create_time_start: int | None = None,
        create_time_end: int | None = None,
        job_instance_id: int | None = None,
        job_cron_id: int | None = None,
        operator: str | None = None,
        name: str | None = None,
        launch_mode: int | None = None,
        type: int | None = None,
        status: int | None = None,
        ip: str | None = None,
        start: int | None = None,
        length: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """Job instances created in ``[create_time_start, create_time_end]`` (epoch ms)."""
        return self._bk("get_job_instance_list", _args(locals()))

    def get_job_instance_global_var_value(
        self,
        job_instance_id: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_instance_global_var_value", _args(locals()))

    # --- cron (§9) -------------------------------------------------------------

    def save_cron(
        self,
        *,
        job_plan_id: int,
        id: int | None = None,
        name: str | None = None,
        expression: str | None = None,
        execute_time: int | None = None,
        execute_time_zone: str | None = None,
        global_var_list: list[dict[str, Any]] | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """Create (no ``id``) or change a cron; new crons start paused."""
        return self._bk("save_cron", _args(locals()))

    def get_cron_list(
        self,
        *,
        id: int | None = None,
        name: str | None = None,
        status: int | None = None,
        start: int | None = None,
        length: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_cron_list", _args(locals()))

    def get_cron_detail(
        self,
        id: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_cron_detail", _args(locals()))

    def update_cron_status(
        self,
        id: int,
        status: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        """1 start, 2 pause."""
        return self._bk("update_cron_status", _args(locals()))

    def delete_cron(
        self,
        id: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("delete_cron", _args(locals()))

    # --- plans and accounts (§5, §7) --------------------------------------------

    def get_job_plan_list(
        self,
        *,
        job_template_id: int | None = None,
        creator: str | None = None,
        name: str | None = None,
        create_time_start: int | None = None,
        create_time_end: int | None = None,
        last_modify_user: str | None = None,
        last_modify_time_start: int | None = None,
        last_modify_time_end: int | None = None,
        start: int | None = None,
        length: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_plan_list", _args(locals()))

    def get_job_template_list(
        self,
        *,
        creator: str | None = None,
        name: str | None = None,
        create_time_start: int | None = None,
        create_time_end: int | None = None,
        last_modify_user: str | None = None,
        last_modify_time_start: int | None = None,
        last_modify_time_end: int | None = None,
        start: int | None = None,
        length: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_template_list", _args(locals()))

    def get_job_plan_detail(
        self,
        job_plan_id: int,
        *,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_job_plan_detail", _args(locals()))

    def get_account_list(
        self,
        *,
        category: int | None = None,
        account: str | None = None,
        alias: str | None = None,
        start: int | None = None,
        length: int | None = None,
        bk_scope_type: str | None = None,
        bk_scope_id: str | int | None = None,
        bk_biz_id: int | None = None,
        **extra: Any,
    ) -> D:
        return self._bk("get_account_list", _args(locals()))
