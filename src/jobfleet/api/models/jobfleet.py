"""Request models of jobfleet's own routes under /api/jobfleet/v1 (docs/rest-api.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from jobfleet.api.models.bkjob import CheckScript
from jobfleet.api.models.common import (
    INT32_MAX,
    INT64_MAX,
    Account,
    GlobalVar,
    HostAddress,
    Paged,
    Request,
    Scoped,
    Server,
    StepRef,
)


class Empty(Request):
    """No parameters besides the credentials."""


class Pathed(Request):
    """Parameters taken from the path only."""


class CreateApp(Request):
    app_code: str = Field(max_length=128, description="the new app's code")
    description: str | None = None


class CreateUser(Request):
    username: str = Field(max_length=128)
    is_admin: bool = False


class SetPassword(Request):
    password: str = Field(min_length=8, max_length=1024, description="the console password")


class CreateToken(Request):
    expires_in: int | None = Field(
        None, ge=60, le=365 * 24 * 3600, description="seconds until it expires (30 days)"
    )
    note: str | None = Field(None, max_length=255)


class Grant(Request):
    scope_type: Literal["biz", "biz_set"] = Field(description="kind of scope granted")
    scope_id: str = Field(description="business or business-set id")


class CreateBusiness(Request):
    bk_biz_id: int = Field(ge=1, le=INT64_MAX)
    name: str = Field(max_length=255)


class CreateBusinessSet(Request):
    """A business set reaches its member businesses' hosts; users are granted it as a
    ``biz_set`` scope."""

    bk_biz_set_id: int = Field(ge=8_000_000, le=9_999_999)
    name: str = Field(max_length=255)
    bk_biz_ids: list[int] = Field(min_length=1, description="existing businesses")


class ListHosts(Scoped):
    """Without a scope: the hosts of every business the caller sees."""

    alive: bool | None = Field(None, description="only hosts whose agent is (not) connected")


class AddHost(Request):
    bk_biz_id: int = Field(ge=1, le=INT64_MAX)
    ip: str = Field(description="IPv4 or IPv6 address")
    bk_cloud_id: int = Field(0, ge=0, le=INT64_MAX)
    hostname: str | None = Field(None, max_length=255)


class CreateEnrollToken(Request):
    bk_biz_id: int | None = Field(None, ge=1, le=INT64_MAX, description="business enrolled into")
    uses: int | None = Field(None, ge=1, le=INT32_MAX, description="hosts it may enroll")
    ttl_seconds: int | None = Field(None, ge=1, le=INT64_MAX, description="lifetime")
    note: str | None = Field(None, max_length=255)


class Enroll(Request):
    token: str = Field(description="enrollment token")
    ip: str = Field(description="the host's address")
    bk_cloud_id: int = Field(0, ge=0, le=INT64_MAX)
    bk_biz_id: int = Field(2, ge=1, le=INT64_MAX)
    hostname: str | None = Field(None, max_length=255)
    os_type: str | None = Field(None, max_length=32)


class AuditRecent(Request):
    limit: int = Field(100, ge=1, le=1000)


class AuditSearch(Paged):
    create_time_start: int | None = Field(None, ge=0, le=INT64_MAX, description="epoch ms")
    create_time_end: int | None = Field(None, ge=0, le=INT64_MAX, description="epoch ms")
    username: str | None = Field(None, max_length=128)
    app_code: str | None = Field(None, max_length=128)
    action: str | None = Field(None, max_length=64, description="exact, or a prefix ending in *")
    resource_type: str | None = Field(None, max_length=64)
    resource_id: str | None = Field(None, max_length=128)


class UploadFile(Scoped):
    name: str = Field(description="file name; the body is the file's bytes")


class UploadWithToken(Request):
    token: str = Field(description="from generate_local_file_upload_url")


class Fetch(Scoped):
    account_alias: str | None = None
    account_id: int | None = Field(None, ge=1, le=INT64_MAX)
    file_list: list[str] = Field(description="absolute paths on the hosts")
    target_server: Server
    timeout: int | None = Field(None, ge=1, le=259200)


class ScriptInfo(BaseModel):
    script_type: int = Field(1, ge=1, le=3, description="1 local, 2 business, 3 public script")
    script_content: str | None = Field(None, description="base64")
    script_id: str | None = None
    script_version_id: int | None = Field(None, ge=1, le=INT64_MAX)
    script_language: int | None = Field(None, ge=1, le=6)
    script_param: str | None = None
    script_timeout: int | None = Field(None, ge=1, le=259200)
    account: Account | None = None
    server: Server | None = None
    is_param_sensitive: int = Field(0, ge=0, le=1)
    is_ignore_error: int = Field(0, ge=0, le=1)


class TemplateFileSource(BaseModel):
    file_list: list[str]
    file_type: int = Field(1, ge=1, le=3)
    account: Account | None = None
    server: Server | None = None


class FileDestination(BaseModel):
    path: str
    account: Account | None = None
    server: Server | None = None


class FileInfo(BaseModel):
    file_source_list: list[TemplateFileSource]
    file_destination: FileDestination
    timeout: int | None = Field(None, ge=1, le=259200)
    transfer_mode: int = Field(2, ge=1, le=2)
    source_speed_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    destination_speed_limit: int | None = Field(None, ge=0, le=INT32_MAX)
    is_ignore_error: int = Field(0, ge=0, le=1)


class ApprovalUser(BaseModel):
    user_list: list[str] = []
    role_list: list[str] = []


class ApprovalInfo(BaseModel):
    approval_type: int | None = None
    approval_user: ApprovalUser | None = None
    approval_message: str | None = None
    notify_channel: list[str] | None = None


class TemplateStep(BaseModel):
    name: str
    type: int = Field(ge=1, le=3, description="1 script, 2 file, 3 manual confirmation")
    script_info: ScriptInfo | None = None
    file_info: FileInfo | None = None
    approval_info: ApprovalInfo | None = None


class TemplateVariable(BaseModel):
    name: str
    type: int = Field(ge=1, le=6, description="1 string, 2 namespace, 3 hosts, 4 password, …")
    value: str | None = None
    server: Server | None = None
    description: str | None = None
    required: int = Field(0, ge=0, le=1)


class TemplateBody(Scoped):
    name: str = Field(max_length=255)
    description: str | None = None
    step_list: list[TemplateStep] = Field(description="the steps, in order")
    global_var_list: list[TemplateVariable] | None = None


class TemplateList(Paged):
    creator: str | None = None
    name: str | None = None


class DeleteTemplate(Scoped):
    cascade: bool = Field(False, description="also delete the template's plans")


class ImportTemplate(Scoped):
    update: bool = Field(False, description="replace a template of the same name")
    name: str | None = Field(
        None, max_length=512, description="import under this name instead of the document's"
    )


class PlanBody(Scoped):
    name: str = Field(max_length=255)
    description: str | None = None
    global_var_list: list[GlobalVar] | None = None
    enabled_step_ids: list[int] | None = Field(None, description="the template steps it runs")


class NotifyConfig(Request):
    channel: Literal["webhook", "email"] = Field(description="how the notice is sent")
    target: Any = Field(description="webhook URL, or a list of email addresses")
    secret: str | None = Field(None, description="webhook signing secret")
    statuses: list[int] | None = Field(None, description="final job statuses that notify")
    enabled: bool = True


class NotifyConfigUpdate(Request):
    target: Any = None
    secret: str | None = None
    statuses: list[int] | None = None
    enabled: bool | None = None


class NotifyTest(Request):
    note: str | None = Field(None, max_length=500, description="a line the test message adds")


class Quota(Request):
    max_running_jobs: int | None = Field(
        None, ge=0, le=1_000_000, description="null lifts the limit"
    )


class TopoName(Scoped):
    name: str = Field(max_length=255)


class CreateModule(TopoName):
    set_id: int = Field(ge=1, le=INT64_MAX)


class MoveHosts(Scoped):
    bk_host_ids: list[int] = Field(description="hosts to move")
    module_ids: list[int] = Field([], description="modules they belong to afterwards")
    is_increment: bool = Field(False, description="add to the modules they are in")


class FilterCondition(BaseModel):
    field: str = Field(description="hostname, ip, ipv6, os_type, os_name, bk_cloud_id, labels.<k>")
    op: str = Field(description="equal, not_equal, contains, prefix, regex, in, not_in, exists")
    value: Any = None


class GroupBody(Scoped):
    id: str | None = Field(None, description="the group's id (default: made from the name)")
    name: str = Field(max_length=255)
    description: str | None = None
    filter: list[FilterCondition] | dict[str, Any] = Field(description="conditions a host meets")


class GroupUpdate(Scoped):
    name: str | None = Field(None, max_length=255)
    description: str | None = None
    filter: list[FilterCondition] | dict[str, Any] | None = None


class Preview(Scoped):
    filter: list[FilterCondition] | dict[str, Any]


class Whitelist(Request):
    bk_host_id: int | None = Field(None, ge=1, le=INT64_MAX)
    ip: str | None = None
    bk_cloud_id: int = Field(0, ge=0, le=INT64_MAX)
    biz_ids: list[int] = Field(description="businesses that may use the host")
    action_scopes: list[str] | None = Field(None, description="script_execute, file_distribution")
    remark: str | None = Field(None, max_length=1024)


class HealRuleUpdate(Request):
    name: str | None = Field(None, max_length=255)
    job_plan_id: int | None = Field(None, ge=1, le=INT64_MAX, description="the plan to start")
    secret: str | None = Field(
        None, min_length=16, max_length=1024, description="webhook bearer token / HMAC key"
    )
    match: dict[str, Any] | None = Field(None, description="alertname, severity, labels")
    variables: dict[str, str] | None = Field(None, description="plan variable: template")
    host_variable: str | None = Field(None, max_length=255)
    host_label: str | None = Field(None, max_length=255)
    host_kind: Literal["ip", "host_id"] | None = None
    max_hosts: int | None = Field(None, ge=1, le=1000)
    rate_limit: int | None = Field(None, ge=1, le=100_000)
    host_rate_limit: int | None = Field(None, ge=1, le=10_000)
    rate_window: int | None = Field(None, ge=1, le=30 * 86400)
    cooldown: int | None = Field(None, ge=0, le=7 * 86400)
    host_cooldown: int | None = Field(None, ge=0, le=7 * 86400)
    dry_run: bool | None = None
    enabled: bool | None = None


class HealRule(HealRuleUpdate):
    name: str = Field(max_length=255)
    job_plan_id: int = Field(ge=1, le=INT64_MAX, description="the plan to start")
    secret: str = Field(min_length=16, max_length=1024, description="bearer token / HMAC key")


class HealDecisions(Request):
    rule_id: int | None = Field(None, ge=1, le=INT64_MAX)
    decision: Literal["started", "converged", "skipped", "refused", "dry_run"] | None = None
    start: int = Field(0, ge=0)
    length: int = Field(20, ge=1, le=1000)


class Alerts(Request):
    """Alertmanager's webhook payload, or one plain alert (authenticated by the rule's
    secret: Authorization: Bearer, or X-Jobfleet-Signature: sha256=HMAC of the body)."""

    version: str | None = None
    status: Literal["firing", "resolved"] | None = None
    alerts: list[dict[str, Any]] | None = None
    alertname: str | None = None
    severity: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    fingerprint: str | None = None


T = "/templates"
NOTIFY = "/businesses/{bk_biz_id}/notify-configs"
HEAL = "/businesses/{bk_biz_id}/heal-rules"

class BatchHostLogs(StepRef):
    """bk-job's batch log query with room for 2,000 hosts (bk-job's route keeps 500)."""

    host_id_list: list[int] | None = Field(None, max_length=2000, description="wins over ip_list")
    ip_list: list[HostAddress] | None = Field(None, max_length=2000)


class BlobBundle(Request):
    """A target agent's request for many small files at once (bundles, ``domain.protocol``)."""

    blobs: list[str] = Field(min_length=1, max_length=512, description="file ids, distinct")


class CountTargets(Scoped):
    """How many hosts a target selection resolves to, and how many have an agent alive."""

    target_server: Server


JOBFLEET: dict[tuple[str, str], type[BaseModel]] = {
    ("GET", "/whoami"): Empty,
    ("POST", "/apps"): CreateApp,
    ("GET", "/apps"): Empty,
    ("DELETE", "/apps/{app_code}"): Pathed,
    ("POST", "/users"): CreateUser,
    ("GET", "/users"): Empty,
    ("POST", "/users/{username}/grants"): Grant,
    ("POST", "/users/{username}/password"): SetPassword,
    ("POST", "/tokens"): CreateToken,
    ("GET", "/tokens"): Empty,
    ("DELETE", "/tokens/{id}"): Pathed,
    ("GET", "/users/{username}/tokens"): Pathed,
    ("DELETE", "/users/{username}/tokens/{id}"): Pathed,
    ("DELETE", "/users/{username}/tokens"): Pathed,
    ("DELETE", "/users/{username}/grants/{scope_type}/{scope_id}"): Pathed,
    ("POST", "/businesses"): CreateBusiness,
    ("GET", "/businesses"): Empty,
    ("POST", "/business-sets"): CreateBusinessSet,
    ("GET", "/business-sets"): Empty,
    ("GET", "/hosts"): ListHosts,
    ("POST", "/hosts"): AddHost,
    ("POST", "/enroll-tokens"): CreateEnrollToken,
    ("GET", "/agent-bootstrap"): Empty,
    ("POST", "/agents/enroll"): Enroll,
    ("DELETE", "/agents/{agent_id}"): Pathed,
    ("GET", "/audit"): AuditRecent,
    ("GET", "/audit/entries"): AuditSearch,
    ("POST", "/files"): UploadFile,
    ("PUT", "/files/upload/{blob_id}"): UploadWithToken,
    ("POST", "/files/upload/{blob_id}"): UploadWithToken,
    ("GET", "/files/{file_id}"): Pathed,
    ("POST", "/fetch"): Fetch,
    ("GET", "/fetch/{job_instance_id}"): Scoped,
    ("GET", "/fetch/{job_instance_id}/{host_dir}/{path}"): Pathed,
    ("GET", "/agents/blobs/{blob_id}"): Pathed,
    ("PUT", "/agents/blobs/{blob_id}"): Pathed,
    ("POST", "/agents/blobs/bundle"): BlobBundle,
    ("PUT", "/agents/blobs/bundle"): Pathed,
    ("GET", T): TemplateList,
    ("POST", T): TemplateBody,
    ("POST", T + "/import"): ImportTemplate,
    ("GET", T + "/{id}"): Scoped,
    ("PUT", T + "/{id}"): TemplateBody,
    ("DELETE", T + "/{id}"): DeleteTemplate,
    ("GET", T + "/{id}/export"): Scoped,
    ("GET", T + "/{id}/plans"): Scoped,
    ("POST", T + "/{id}/plans"): PlanBody,
    ("GET", "/plans/{id}"): Scoped,
    ("PUT", "/plans/{id}"): PlanBody,
    ("DELETE", "/plans/{id}"): Scoped,
    ("POST", "/plans/{id}/sync"): Scoped,
    ("GET", "/crons/{id}/firings"): Paged,
    ("GET", "/batch_get_job_instance_ip_log"): BatchHostLogs,
    ("POST", "/batch_get_job_instance_ip_log"): BatchHostLogs,
    ("POST", "/targets/count"): CountTargets,
    ("GET", NOTIFY): Pathed,
    ("POST", NOTIFY): NotifyConfig,
    ("GET", NOTIFY + "/{id}"): Pathed,
    ("PUT", NOTIFY + "/{id}"): NotifyConfigUpdate,
    ("DELETE", NOTIFY + "/{id}"): Pathed,
    ("POST", NOTIFY + "/{id}/tests"): NotifyTest,
    ("GET", NOTIFY + "/{id}/tests/{delivery_id}"): Pathed,
    ("POST", "/dangerous-rules/check"): CheckScript,
    ("GET", HEAL): Pathed,
    ("POST", HEAL): HealRule,
    ("GET", HEAL + "/{id}"): Pathed,
    ("PUT", HEAL + "/{id}"): HealRuleUpdate,
    ("DELETE", HEAL + "/{id}"): Pathed,
    ("GET", "/businesses/{bk_biz_id}/heal-decisions"): HealDecisions,
    ("POST", "/heal/hooks/{rule_id}"): Alerts,
    ("GET", "/businesses/{bk_biz_id}/quota"): Pathed,
    ("PUT", "/businesses/{bk_biz_id}/quota"): Quota,
    ("DELETE", "/businesses/{bk_biz_id}/quota"): Pathed,
    ("GET", "/apps/{app_code}/quota"): Pathed,
    ("PUT", "/apps/{app_code}/quota"): Quota,
    ("DELETE", "/apps/{app_code}/quota"): Pathed,
    ("GET", "/topology"): Scoped,
    ("POST", "/topology/sets"): TopoName,
    ("PUT", "/topology/sets/{id}"): TopoName,
    ("DELETE", "/topology/sets/{id}"): Scoped,
    ("POST", "/topology/modules"): CreateModule,
    ("PUT", "/topology/modules/{id}"): TopoName,
    ("DELETE", "/topology/modules/{id}"): Scoped,
    ("POST", "/topology/hosts/move"): MoveHosts,
    ("GET", "/dynamic-groups"): Scoped,
    ("POST", "/dynamic-groups"): GroupBody,
    ("POST", "/dynamic-groups/preview"): Preview,
    ("GET", "/dynamic-groups/{id}"): Scoped,
    ("PUT", "/dynamic-groups/{id}"): GroupUpdate,
    ("DELETE", "/dynamic-groups/{id}"): Scoped,
    ("GET", "/dynamic-groups/{id}/hosts"): Scoped,
    ("GET", "/host-whitelist"): Empty,
    ("POST", "/host-whitelist"): Whitelist,
    ("DELETE", "/host-whitelist/{id}"): Empty,
}
