"""Objects many requests share: scope, paging, targets, accounts, variables."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


class Request(BaseModel):
    """A request document. Parsing stays as lenient as bk-job's: these models only describe."""

    model_config = ConfigDict(extra="allow")


class Scoped(Request):
    bk_scope_type: Literal["biz", "biz_set"] | None = Field(
        None, description="`biz` or `biz_set`; with bk_scope_id names the scope"
    )
    bk_scope_id: str | None = Field(None, description="business id or business-set id")
    bk_biz_id: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="deprecated: used when the scope pair is absent; 8000000-9999999 is a set",
    )


class Paged(Scoped):
    start: int = Field(0, ge=0, le=INT32_MAX, description="offset of the first entry")
    length: int = Field(20, ge=1, le=1000, description="entries per page")


class HostAddress(BaseModel):
    bk_cloud_id: int = Field(0, ge=0, le=INT64_MAX, description="cloud area id")
    ip: str = Field(description="IPv4 or IPv6 address")


class IdRef(BaseModel):
    id: str = Field(description="dynamic group id")


class TopoNode(BaseModel):
    id: int = Field(ge=0, le=INT64_MAX, description="topology instance id")
    node_type: str = Field("module", description="`module`, `set`, …")


class Server(BaseModel):
    """Targets: at least one list non-empty; ip_list is ignored when host_id_list is given."""

    host_id_list: list[int] | None = Field(None, description="bk_host_id of each host")
    ip_list: list[HostAddress] | None = Field(None, description="hosts by cloud area and ip")
    dynamic_group_list: list[IdRef] | None = None
    topo_node_list: list[TopoNode] | None = None
    variable: str | None = Field(None, description="name of a host variable (plans)")


class Account(BaseModel):
    id: int | None = Field(None, ge=1, le=INT64_MAX, description="account id (wins over alias)")
    alias: str | None = Field(None, description="account alias")


class GlobalVar(BaseModel):
    id: int | None = Field(None, ge=1, le=INT64_MAX, description="variable id (wins over name)")
    name: str | None = None
    value: str | None = Field(None, description="string, password, array or namespace value")
    server: Server | None = Field(None, description="value of a host variable")


class RollingConfig(BaseModel):
    expression: str = Field(description="batches, e.g. `10% 30% 100%` or `1 2 +3`")
    mode: int = Field(1, ge=1, le=3, description="1 pause on failure, 2 ignore, 3 pause each batch")


class Execution(Scoped):
    """What every execution request may add."""

    task_name: str | None = Field(None, max_length=512, description="name of the job instance")
    timeout: int | None = Field(None, ge=1, le=259200, description="seconds (default 7200)")
    account_id: int | None = Field(None, ge=1, le=INT64_MAX, description="execution account id")
    account_alias: str | None = Field(None, description="execution account alias")
    target_server: Server | None = Field(None, description="where the step runs")
    callback_url: str | None = Field(
        None, max_length=1024, description="http(s) URL called when the job ends"
    )
    rolling_config: RollingConfig | None = None
    start_task: bool = Field(True, description="false: created waiting for operate_job_instance")


class JobRef(Scoped):
    job_instance_id: int = Field(ge=1, le=INT64_MAX, description="job instance id")


class StepRef(JobRef):
    step_instance_id: int = Field(ge=1, le=INT64_MAX, description="step instance id")
    execute_count: int | None = Field(
        None, ge=0, le=INT32_MAX, description="which run of the step (default: the latest)"
    )


class ById(Scoped):
    id: int = Field(ge=1, le=INT64_MAX, description="id of the resource")
