"""Request models of the GSE calls: agent queries, messages to plugins, processes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from jobfleet.api.models.common import HostAddress, Request


class GseHosts(Request):
    bk_supplier_account: str | None = None
    hosts: list[HostAddress] = Field(description="hosts by cloud area and ip (at most 5,000)")


class ListAgentState(Request):
    agent_id_list: list[str] = Field(description="agent ids")


class DispatchMessage(Request):
    message_id: str = Field(max_length=64, description="the message's id")
    agent_id_list: list[str] = Field(description="agents to deliver to (at least one)")
    content: str = Field(description="what the plugins of the slot read")
    slot_id: int = Field(ge=0, description="the slot the plugin listens on")
    token: str | None = None


class ProcMeta(BaseModel):
    namespace: str = Field(max_length=255)
    name: str = Field(max_length=255)
    labels: dict[str, str] | None = None


class ProcTargets(Request):
    meta: ProcMeta
    agent_id_list: list[str] | None = Field(None, description="agents, or use hosts")
    hosts: list[HostAddress] | None = Field(None, description="hosts by cloud area and ip")


class ProcOperation(ProcTargets):
    op_type: int = Field(
        description="0 start, 1 stop, 2 status, 3 delegate, 4 undelegate, 7 restart, "
        "8 reload, 9 kill"
    )
    spec: dict[str, Any] | None = Field(
        None,
        description="identity {proc_name, setup_path, pid_path, user}, control "
        "{start_cmd, stop_cmd, restart_cmd, reload_cmd, kill_cmd}, alive_monitor_policy "
        "{start_check_secs}",
    )


class OperateProcMulti(Request):
    proc_operate_req: list[ProcOperation] = Field(
        description="operations (up to 5000 host operations in all)"
    )


class ProcSession(Request):
    bk_biz_id: int | None = Field(None, description="accepted; sessions hold nothing")


class ProcTask(Request):
    task_id: str = Field(max_length=64, description="what operate_proc_multi answered")
