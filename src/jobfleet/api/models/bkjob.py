"""Request models of the bk-job v3 operations and the v2 job queries (the GSE ones are in
``gse.py``); ``BKJOB`` names them all.

Field names, types and rules follow the bk-job v3 reference; the handlers stay the judges
of what they accept (as lenient as bk-job), these models document it in /openapi.json.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from jobfleet.api.models.common import (
    INT32_MAX,
    INT64_MAX,
    Account,
    ById,
    Execution,
    GlobalVar,
    HostAddress,
    JobRef,
    Paged,
    Request,
    Scoped,
    Server,
    StepRef,
)
from jobfleet.api.models.gse import (
    DispatchMessage,
    GseHosts,
    ListAgentState,
    OperateProcMulti,
    ProcOperation,
    ProcSession,
    ProcTargets,
    ProcTask,
)

CRON_SECONDS_MAX = INT64_MAX // 1000 - 1
LANGUAGE = "1 shell, 2 bat, 3 perl, 4 python, 5 powershell, 6 sql"


# execution ---------------------------------------------------------------------------


class FastExecuteScript(Execution):
    script_version_id: int | None = Field(
        None, ge=1, le=INT64_MAX, description="wins over the rest"
    )
    script_id: str | None = Field(None, description="a script whose online version runs")
    script_content: str | None = Field(None, description="base64 of the script")
    script_language: int | None = Field(None, ge=1, le=6, description=LANGUAGE)
    script_param: str | None = Field(None, description="base64 of the parameter string")
    is_param_sensitive: int = Field(0, ge=0, le=1, description="1 hides the parameters")
    windows_interpreter: str | None = Field(None, max_length=260)


class FastExecuteSql(Scoped):
    task_name: str | None = Field(None, max_length=512, description="name of the job instance")
    timeout: int | None = Field(None, ge=1, le=259200, description="seconds (default 7200)")
    db_account_id: int = Field(ge=1, le=INT64_MAX, description="a database account (category 2)")
    script_version_id: int | None = Field(
        None, ge=1, le=INT64_MAX, description="a stored SQL script version; wins over the rest"
    )
    script_id: str | None = Field(None, description="a stored SQL script whose online version runs")
    script_content: str | None = Field(None, description="base64 of the SQL")
    target_server: Server | None = Field(None, description="the hosts whose client runs it")
    callback_url: str | None = Field(
        None, max_length=1024, description="http(s) URL called when the job ends"
    )
    start_task: bool = Field(True, description="false: created waiting for operate_job_instance")


class FileSource(BaseModel):
    file_list: list[str] = Field(description="absolute paths on the source hosts")
    file_type: int = Field(1, ge=1, le=3, description="1 server, 2 local upload, 3 file source")
    account: Account | None = Field(None, description="account reading the files")
    server: Server | None = Field(None, description="source hosts")
    file_source_id: int | None = Field(None, ge=1, le=INT64_MAX)
    file_source_code: str | None = None


class FastTransferFile(Execution):
    file_source_list: list[FileSource] = Field(description="what to copy, from where")
    file_target_path: str = Field(description="absolute target directory")
    file_target_name: str | None = Field(None, description="rename a single file")
    transfer_mode: int = Field(2, ge=1, le=2, description="1 strict, 2 force (create dirs)")
    upload_speed_limit: int | None = Field(None, ge=0, le=INT32_MAX, description="MB/s")
    download_speed_limit: int | None = Field(None, ge=0, le=INT32_MAX, description="MB/s")


class ConfigFile(BaseModel):
    file_name: str = Field(description="name of the file in the target directory")
    content: str = Field(description="base64 of the file")


class PushConfigFile(Execution):
    file_target_path: str = Field(description="absolute target directory")
    file_list: list[ConfigFile] = Field(description="small text files")


class ExecuteJobPlan(Scoped):
    job_plan_id: int = Field(ge=1, le=INT64_MAX, description="the plan to run")
    global_var_list: list[GlobalVar] | None = Field(None, description="values over the plan's")
    callback_url: str | None = Field(
        None, max_length=1024, description="http(s) URL called when the job ends"
    )
    start_task: bool = True


class OperateJobInstance(JobRef):
    operation_code: int = Field(ge=1, le=2, description="1 terminate, 2 start")


class OperateStepInstance(StepRef):
    operation_code: int = Field(
        ge=2,
        le=13,
        description="2 retry failed, 3 ignore error, 6 confirm, 8 retry all, "
        "9 stop confirmation, 10 re-confirm, 11 next step, 12 skip, 13 next batch",
    )
    confirm_reason: str | None = None


# queries ---------------------------------------------------------------------------


class GetJobInstanceStatus(JobRef):
    return_ip_result: bool = Field(False, description="include each host's result")


class GetStepInstanceStatus(StepRef):
    batch: int | None = Field(None, ge=0, le=INT32_MAX, description="rolling batch (default all)")
    max_host_num_per_group: int | None = Field(None, ge=1, le=INT32_MAX)
    keyword: str | None = Field(None, description="search the logs (script steps)")
    search_ip: str | None = None
    status: int | None = Field(None, ge=0, le=INT32_MAX, description="host status filter")
    tag: str | None = None


class GetStepInstanceDetail(JobRef):
    step_instance_id: int = Field(ge=1, le=INT64_MAX)


class GetJobInstanceIpLog(StepRef):
    bk_host_id: int | None = Field(None, ge=1, le=INT64_MAX, description="wins over ip")
    bk_cloud_id: int = Field(0, ge=0, le=INT64_MAX)
    ip: str | None = None


class BatchGetJobInstanceIpLog(StepRef):
    host_id_list: list[int] | None = Field(None, max_length=500, description="wins over ip_list")
    ip_list: list[HostAddress] | None = Field(None, max_length=500)


class GetJobInstanceList(Paged):
    create_time_start: int = Field(ge=0, le=INT64_MAX, description="epoch ms")
    create_time_end: int = Field(ge=0, le=INT64_MAX, description="epoch ms, within 30 days")
    job_instance_id: int | None = Field(None, ge=1, le=INT64_MAX, description="wins over filters")
    job_cron_id: int | None = Field(None, ge=1, le=INT64_MAX)
    operator: str | None = None
    name: str | None = Field(None, description="part of the name")
    launch_mode: int | None = Field(None, ge=1, le=3, description="1 page, 2 API, 3 cron")
    type: int | None = Field(None, ge=0, le=INT32_MAX)
    status: int | None = Field(None, ge=0, le=INT32_MAX)
    ip: str | None = None


class GetJobInstanceGlobalVarValue(JobRef):
    pass


class LegacyJobRef(Request):
    bk_biz_id: int = Field(ge=1, le=INT64_MAX)
    job_instance_id: int = Field(ge=1, le=INT64_MAX)


# plans, templates ----------------------------------------------------------------------


class ChangeFilters(Paged):
    creator: str | None = None
    name: str | None = Field(None, description="part of the name")
    create_time_start: int | None = Field(None, ge=0, le=INT64_MAX, description="epoch ms")
    create_time_end: int | None = Field(None, ge=0, le=INT64_MAX)
    last_modify_user: str | None = None
    last_modify_time_start: int | None = Field(None, ge=0, le=INT64_MAX)
    last_modify_time_end: int | None = Field(None, ge=0, le=INT64_MAX)


class GetJobTemplateList(ChangeFilters):
    pass


class GetJobPlanList(ChangeFilters):
    job_template_id: int | None = Field(None, ge=1, le=INT64_MAX)


class GetJobPlanDetail(Scoped):
    job_plan_id: int = Field(ge=1, le=INT64_MAX)


# scripts -------------------------------------------------------------------------------


class GetScriptList(Paged):
    name: str | None = Field(None, description="part of the name")
    script_language: int = Field(0, ge=0, le=6, description="0 all; " + LANGUAGE)
    tag: str | None = Field(
        None, max_length=32, description="jobfleet's own: the scripts with this tag"
    )


class ScriptRef(Scoped):
    script_id: str = Field(description="script id")


class GetScriptVersionList(Paged):
    script_id: str
    return_script_content: bool = False


class GetScriptVersionDetail(Scoped):
    id: int | None = Field(None, ge=1, le=INT64_MAX, description="version id")
    script_id: str | None = None
    version: str | None = Field(None, description="with script_id, instead of id")


class CreateScript(Scoped):
    name: str = Field(max_length=60)
    script_language: int = Field(ge=1, le=6, description=LANGUAGE)
    content: str = Field(description="base64 of the script")
    version: str = Field(max_length=60)
    description: str | None = None
    version_desc: str | None = None
    tags: list[str] | None = Field(
        None, max_length=10, description="jobfleet's own: up to 10 labels, no comma"
    )


class CreateScriptVersion(ScriptRef):
    content: str = Field(description="base64 of the script")
    version: str = Field(max_length=60)
    version_desc: str | None = None


class VersionRef(ScriptRef):
    script_version_id: int = Field(ge=1, le=INT64_MAX)


class UpdateScriptVersion(VersionRef):
    content: str | None = Field(None, description="base64 of the script")
    version_desc: str | None = None


class UpdateScriptBasic(ScriptRef):
    name: str | None = Field(None, max_length=60)
    description: str | None = None
    tags: list[str] | None = Field(
        None, max_length=10, description="jobfleet's own: up to 10 labels, no comma"
    )


# accounts --------------------------------------------------------------------------------


class GetAccountList(Paged):
    category: int | None = Field(None, ge=1, le=2, description="1 system, 2 database")
    account: str | None = None
    alias: str | None = None


class CreateAccount(Scoped):
    account: str = Field(description="OS user name, or the database user")
    type: int = Field(
        ge=1, le=12, description="1 Linux, 2 Windows; 9 MySQL, 10 Oracle, 11 DB2, 12 PostgreSQL"
    )
    category: int = Field(1, ge=1, le=2, description="1 system, 2 database")
    password: str | None = Field(
        None, max_length=117, description="Windows accounts; a database account's password"
    )
    alias: str | None = Field(None, description="default: the account")
    description: str | None = None
    db_password: str | None = Field(None, max_length=117, description="database accounts")
    db_host: str | None = Field(None, description="database host as the targets see it")
    db_port: int | None = Field(
        None, ge=1, le=65535, description="default 3306 / 1521 / 50000 / 5432"
    )
    db_name: str | None = Field(None, description="database to connect to")
    db_system_account_id: int | None = Field(
        None, ge=1, le=INT64_MAX, description="the system account a database client runs as"
    )


class Credential(Scoped):
    name: str | None = Field(None, max_length=255)
    type: str | None = Field(
        None, description="APP_ID_SECRET_KEY, PASSWORD, USERNAME_PASSWORD or SECRET_KEY"
    )
    description: str | None = None
    credential_access_key: str | None = None
    credential_secret_key: str | None = None
    credential_username: str | None = None
    credential_password: str | None = None


class UpdateCredential(Credential):
    id: str = Field(description="the credential's id")


class CredentialRef(Scoped):
    id: str = Field(description="the credential's id")


class FileSourceRef(Scoped):
    code: str = Field(description="the file source's code")


class SaveFileSource(FileSourceRef):
    alias: str = Field(max_length=255)
    type: str = Field(description="S3, HTTP, TENCENT_CLOUD_COS or BLUEKING_ARTIFACTORY")
    access_params: dict[str, str] = Field(
        default_factory=dict,
        description="S3: endpoint_url, region; TENCENT_CLOUD_COS: region, endpoint_url; "
        "HTTP, BLUEKING_ARTIFACTORY: base_url",
    )
    credential_id: str = Field(description="the credential that opens the source")
    file_prefix: str | None = Field(None, description="put before every file named")


class UpdateAccount(ById):
    password: str | None = None
    alias: str | None = None
    description: str | None = None
    type: int | None = Field(
        None, ge=9, le=12, description="database accounts: 9 MySQL, 10 Oracle, 11 DB2, 12 PG"
    )
    db_password: str | None = Field(None, max_length=117, description="database accounts")
    db_host: str | None = Field(None, description="database accounts: host")
    db_port: int | None = Field(None, ge=1, le=65535, description="database accounts: port")
    db_name: str | None = Field(None, description="database accounts: database")
    db_system_account_id: int | None = Field(
        None, ge=1, le=INT64_MAX, description="database accounts: the client's system account"
    )


# dangerous-statement rules ------------------------------------------------------------------


class GetDangerousRuleList(Request):
    expression: str | None = None
    script_language_list: list[int] | None = None
    description: str | None = None
    action: int | None = Field(None, ge=1, le=2, description="1 scan, 2 intercept")


class CreateDangerousRule(Request):
    expression: str = Field(description="regular expression")
    script_language_list: list[int] = Field(description=LANGUAGE)
    action: int = Field(ge=1, le=2, description="1 scan, 2 intercept")
    description: str | None = None
    status: int = Field(1, ge=0, le=1, description="0 off, 1 on")


class UpdateDangerousRule(CreateDangerousRule):
    id: int = Field(ge=1, le=INT64_MAX)


class RuleRef(Request):
    id: int = Field(ge=1, le=INT64_MAX)


class CheckScript(Request):
    script_language: int = Field(ge=1, le=6, description=LANGUAGE)
    content: str = Field(description="base64 of the script")


# cron ------------------------------------------------------------------------------------


class SaveCron(Scoped):
    job_plan_id: int = Field(ge=1, le=INT64_MAX)
    id: int | None = Field(None, ge=1, le=INT64_MAX, description="present: update that cron")
    name: str | None = Field(None, max_length=60, description="required on create")
    expression: str | None = Field(None, description="`min hour day month week`")
    execute_time: int | None = Field(None, ge=0, le=INT64_MAX, description="epoch s, one shot")
    execute_time_zone: str | None = Field(None, description="IANA zone")
    global_var_list: list[GlobalVar] | None = None


class GetCronList(Paged):
    id: int | None = Field(None, ge=1, le=INT64_MAX, description="wins over filters")
    name: str | None = None
    status: int | None = Field(None, ge=1, le=2, description="1 running, 2 paused")
    creator: str | None = None
    last_modify_user: str | None = None
    create_time_start: int | None = Field(None, ge=0, le=CRON_SECONDS_MAX, description="epoch s")
    create_time_end: int | None = Field(None, ge=0, le=CRON_SECONDS_MAX, description="epoch s")
    last_modify_time_start: int | None = Field(None, ge=0, le=CRON_SECONDS_MAX)
    last_modify_time_end: int | None = Field(None, ge=0, le=CRON_SECONDS_MAX)


class UpdateCronStatus(ById):
    status: int = Field(ge=1, le=2, description="1 start, 2 pause")


# files, GSE ------------------------------------------------------------------------------


class GenerateLocalFileUploadUrl(Scoped):
    file_name_list: list[str] = Field(description="names of the files to upload")


BKJOB: dict[str, type[BaseModel]] = {
    "fast_execute_script": FastExecuteScript,
    "fast_execute_sql": FastExecuteSql,
    "fast_transfer_file": FastTransferFile,
    "push_config_file": PushConfigFile,
    "execute_job_plan": ExecuteJobPlan,
    "operate_job_instance": OperateJobInstance,
    "operate_step_instance": OperateStepInstance,
    "get_job_instance_status": GetJobInstanceStatus,
    "get_step_instance_status": GetStepInstanceStatus,
    "get_step_instance_detail": GetStepInstanceDetail,
    "get_job_instance_ip_log": GetJobInstanceIpLog,
    "batch_get_job_instance_ip_log": BatchGetJobInstanceIpLog,
    "get_job_instance_list": GetJobInstanceList,
    "get_job_instance_global_var_value": GetJobInstanceGlobalVarValue,
    "get_job_instance_log": LegacyJobRef,
    "get_job_template_list": GetJobTemplateList,
    "get_job_plan_list": GetJobPlanList,
    "get_job_plan_detail": GetJobPlanDetail,
    "get_script_list": GetScriptList,
    "get_public_script_list": GetScriptList,
    "get_script_version_list": GetScriptVersionList,
    "get_public_script_version_list": GetScriptVersionList,
    "get_script_version_detail": GetScriptVersionDetail,
    "get_public_script_version_detail": GetScriptVersionDetail,
    "create_script": CreateScript,
    "create_public_script": CreateScript,
    "create_script_version": CreateScriptVersion,
    "create_public_script_version": CreateScriptVersion,
    "update_script_version": UpdateScriptVersion,
    "update_public_script_version": UpdateScriptVersion,
    "update_script_basic": UpdateScriptBasic,
    "update_public_script_basic": UpdateScriptBasic,
    "publish_script_version": VersionRef,
    "publish_public_script_version": VersionRef,
    "disable_script_version": VersionRef,
    "disable_public_script_version": VersionRef,
    "delete_script": ScriptRef,
    "delete_public_script": ScriptRef,
    "delete_script_version": VersionRef,
    "delete_public_script_version": VersionRef,
    "get_account_list": GetAccountList,
    "create_account": CreateAccount,
    "update_account": UpdateAccount,
    "delete_account": ById,
    "create_credential": Credential,
    "update_credential": UpdateCredential,
    "get_credential_detail": CredentialRef,
    "create_file_source": SaveFileSource,
    "update_file_source": SaveFileSource,
    "get_file_source_detail": FileSourceRef,
    "get_dangerous_rule_list": GetDangerousRuleList,
    "create_dangerous_rule": CreateDangerousRule,
    "update_dangerous_rule": UpdateDangerousRule,
    "delete_dangerous_rule": RuleRef,
    "enable_dangerous_rule": RuleRef,
    "disable_dangerous_rule": RuleRef,
    "check_script": CheckScript,
    "save_cron": SaveCron,
    "get_cron_list": GetCronList,
    "get_cron_detail": ById,
    "update_cron_status": UpdateCronStatus,
    "delete_cron": ById,
    "generate_local_file_upload_url": GenerateLocalFileUploadUrl,
    "get_agent_status": GseHosts,
    "get_agent_info": GseHosts,
    "list_agent_state": ListAgentState,
    "list_agent_info": ListAgentState,
    "dispatch_message": DispatchMessage,
    "operate_proc_multi": OperateProcMulti,
    "operate_proc": ProcOperation,
    "operate_proc_v2": ProcOperation,
    "proc_run_command": ProcOperation,
    "proc_create_session": ProcSession,
    "get_proc_operate_result_v2": ProcTask,
    "get_proc_operate_result": ProcTask,
    "proc_get_task_result_by_id": ProcTask,
    "get_proc_status_v2": ProcTargets,
    "get_proc_status": ProcTargets,
}
