"""Launching execution plans: a plan's steps and variables turned into a job.

Everything that can be checked before the job exists is checked here (the plan,
its variables, hosts, accounts, scripts), so a launch either creates a job that
can run or fails with a clear error and creates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import with_values
from jobfleet.domain.scripts import read_script
from jobfleet.domain.status import (
    LaunchMode,
    RunStatus,
    ScriptLanguage,
    ScriptType,
    StepType,
    TaskType,
    VariableType,
)
from jobfleet.domain.targets import parse_target
from jobfleet.domain.variables import Variable, check_required, server_is_empty
from jobfleet.engine import variables as runtime
from jobfleet.engine.file_sources import ThirdPartyFiles
from jobfleet.engine.jobs import Jobs
from jobfleet.engine.sql_submit import resolve_db_account, sql_step_values
from jobfleet.engine.submit import Account, Scope, Submitter, host_rows
from jobfleet.store.blobs import BlobStore
from jobfleet.store.database import Database, now_ms
from jobfleet.store.inventory import Host
from jobfleet.store.jobs import NewJob, NewStep
from jobfleet.store.plans import PlanStore
from jobfleet.store.rules import RuleStore
from jobfleet.store.scripts import ScriptStore
from jobfleet.store.secrets import Cipher

MAX_FILE_TASKS = 100_000


@dataclass
class _Context:
    scope: Scope
    variables: list[Variable]
    hosts_of_var: dict[str, list[Host]]
    # the plan's business: the uploads its steps send are that business's, in any scope
    plan_biz_id: int


class PlanLauncher:
    def __init__(
        self,
        db: Database,
        engine: Jobs,
        submitter: Submitter,
        scripts: ScriptStore,
        plans: PlanStore,
        cipher: Cipher,
        blobs: BlobStore,
        rules: RuleStore,
        third_party: ThirdPartyFiles,
    ) -> None:
        self.db = db
        self.engine = engine
        self.submitter = submitter
        self.scripts = scripts
        self.plans = plans
        self.cipher = cipher
        self.blobs = blobs
        self.rules = rules
        self.third_party = third_party

    async def plan_in_scope(self, plan_id: int, scope: Scope, code: int) -> Row[Any]:
        plan = await self.plans.plan(plan_id)
        if plan is None or plan.bk_biz_id not in scope.biz_ids:
            raise JobError(code, f"Job plan {plan_id} does not exist")
        return plan

    async def launch(
        self,
        *,
        plan_id: int,
        scope: Scope,
        overrides: list[dict[str, Any]] | None,
        launch_mode: int,
        operator: str,
        app_code: str,
        cron_id: int | None = None,
        callback_url: str | None = None,
        start: bool = True,
        conn: AsyncConnection | None = None,
    ) -> tuple[int, str]:
        """Create (and unless ``conn`` is given, start) a job from a plan.

        With ``conn`` the job's rows join that transaction and the caller calls
        ``Jobs.resume_job`` once it has committed.
        """
        plan = await self.plan_in_scope(plan_id, scope, ErrorCode.JOB_PLAN_NOT_EXIST_EXECUTE)
        # bk-job's API path ignores values for variables the plan no longer has and
        # lets a required non-host variable go empty; a password sent back as shown
        # (MASK) is the plan's own
        api = launch_mode == LaunchMode.API
        variables = with_values(self.plans.variables(plan), overrides, lenient=api)
        check_required(variables, hosts_only=api)
        ctx = _Context(scope, variables, {}, plan.bk_biz_id)
        for var in variables:
            if var.type == VariableType.HOST_LIST and not server_is_empty(var.server):
                hosts = await self.submitter.resolve_hosts(
                    parse_target(var.server, f"global_var_list.{var.name}.server"), scope
                )
                ctx.hosts_of_var[var.name] = hosts
                var.value = ",".join(f"{h.bk_cloud_id}:{h.ip}" for h in hosts)
        steps = [s for s in self.plans.steps(plan) if s.get("enabled", True)]
        if not steps:
            raise JobError(
                ErrorCode.JOB_PLAN_ILLEGAL, f"Job plan {plan_id} has no enabled step to run"
            )
        new_steps = [await self._step(ctx, raw, operator) for raw in steps]
        job = NewJob(
            values={
                "bk_biz_id": scope.bk_biz_id,
                "scope_type": scope.scope_type,
                "scope_id": scope.scope_id,
                "name": plan.name,
                "type": int(TaskType.PLAN),
                "launch_mode": int(launch_mode),
                "operator": operator,
                "app_code": app_code,
                "plan_id": plan.id,
                "template_id": plan.template_id,
                "cron_id": cron_id,
                "callback_url": callback_url,
                "variables": runtime.seal(runtime.VariableState(variables), self.cipher),
            },
            steps=new_steps,
        )
        job_id, _ = await self.engine.submit(job, start, conn)
        return job_id, plan.name

    # steps ------------------------------------------------------------------
    async def _hosts(
        self,
        ctx: _Context,
        server: dict[str, Any] | None,
        field: str,
        action: str = "SCRIPT_EXECUTE",
    ) -> list[Host]:
        if server and server.get("variable"):
            name = str(server["variable"])
            var = next((v for v in ctx.variables if v.name == name), None)
            if var is None or var.type != VariableType.HOST_LIST:
                raise JobError(
                    ErrorCode.HOST_VARIABLE_MISSING, f"Host variable {name!r} does not exist"
                )
            hosts = ctx.hosts_of_var.get(name)
            if not hosts:
                raise JobError(
                    ErrorCode.HOST_VARIABLE_EMPTY, f"Host variable {name!r} has no hosts"
                )
            return hosts
        if server_is_empty(server):
            raise JobError(ErrorCode.STEP_TARGET_EMPTY, f"The target of {field} is empty")
        return await self.submitter.resolve_hosts(
            parse_target(server, field), ctx.scope, action=action
        )

    async def _account(self, ctx: _Context, raw: dict[str, Any] | None) -> Account:
        raw = raw or {}
        return await self.submitter.resolve_account(ctx.scope, raw.get("id"), raw.get("alias"))

    async def _step(self, ctx: _Context, raw: dict[str, Any], operator: str) -> NewStep:
        name = str(raw["name"])
        common: dict[str, Any] = {
            "status": int(RunStatus.BLANK),
            "execute_count": 0,
            "operator": operator,
            "create_time": now_ms(),
            "batch_count": 1,
            "current_batch": 0,
        }
        step_type = int(raw["type"])
        if step_type == StepType.SCRIPT:
            return await self._script_step(ctx, name, raw["script_info"], common)
        if step_type == StepType.FILE:
            return await self._file_step(ctx, name, raw["file_info"], common)
        info = raw.get("approval_info") or {}
        return NewStep(
            name=name,
            type=int(StepType.MANUAL_CONFIRM),
            values={
                **common,
                "ignore_error": False,
                "timeout": 0,
                "config": {"approval_info": info, "confirmed_by": []},
            },
        )

    async def _script_step(
        self, ctx: _Context, name: str, info: dict[str, Any], common: dict[str, Any]
    ) -> NewStep:
        script_type = int(info.get("script_type") or ScriptType.LOCAL)
        config: dict[str, Any] = {"script_type": script_type}
        if script_type == ScriptType.LOCAL:
            content = str(info["script_content"])
            language = int(info["script_language"])
        else:
            resolved = await self.scripts.resolve_version(
                bk_biz_ids=ctx.scope.biz_ids,
                script_id=info.get("script_id"),
                script_version_id=info.get("script_version_id"),
                public=script_type == ScriptType.PUBLIC_SCRIPT,
            )
            content, language = resolved.content, resolved.language
            config.update(script_id=resolved.script_id, script_version_id=resolved.version_id)
        # read once: the rules match these readings, and the job keeps the script from them
        script = read_script(content)
        await self.rules.enforce(script, language, where=f"step {name!r}")
        if language == ScriptLanguage.SQL:
            return await self._sql_step(ctx, name, info, common, content, config)
        account = await self._account(ctx, info.get("account"))
        hosts = await self._hosts(ctx, info.get("server"), f"step {name!r}")
        param = str(info.get("script_param") or "")
        sensitive = bool(info.get("is_param_sensitive"))
        if sensitive and param:
            param = self.cipher.encrypt(param)
        return NewStep(
            name=name,
            type=int(StepType.SCRIPT),
            values={
                **common,
                "ignore_error": bool(info.get("is_ignore_error")),
                "timeout": int(info.get("script_timeout") or 7200),
                "account_id": account.id,
                "account_alias": account.alias,
                "account_name": account.account,
                "script_language": language,
                "script_content": script,
                "script_param": param or None,
                "is_param_sensitive": sensitive,
                "config": config,
            },
            hosts=host_rows(hosts),
        )

    async def _sql_step(
        self,
        ctx: _Context,
        name: str,
        info: dict[str, Any],
        common: dict[str, Any],
        sql: str,
        config: dict[str, Any],
    ) -> NewStep:
        """A script step in SQL: run through its database account (bk-job step type 4)."""
        ref = info.get("account") or {}
        snapshot, system = await resolve_db_account(
            self.submitter, ctx.scope, ref.get("id"), ref.get("alias")
        )
        hosts = await self._hosts(ctx, info.get("server"), f"step {name!r}")
        values = sql_step_values(sql, snapshot)
        return NewStep(
            name=name,
            type=int(StepType.SQL),
            values={
                **common,
                "ignore_error": bool(info.get("is_ignore_error")),
                "timeout": int(info.get("script_timeout") or 7200),
                "account_id": system.id,
                "account_alias": system.alias,
                "account_name": system.account,
                **values,
                "config": {**config, **values["config"]},
            },
            hosts=host_rows(hosts),
        )

    async def _file_step(
        self, ctx: _Context, name: str, info: dict[str, Any], common: dict[str, Any]
    ) -> NewStep:
        sources: list[dict[str, Any]] = []
        file_count = 0
        for i, src in enumerate(info.get("file_source_list") or []):
            files = [str(f) for f in src.get("file_list") or []]
            if int(src.get("file_type") or 1) == 2:
                sources.extend(await self.blobs.uploaded_sources(files, {ctx.plan_biz_id}))
                file_count += len(files)
                continue
            if int(src.get("file_type") or 1) == 3:
                where = f"step {name!r} source {i + 1}"
                sources.append(await self.third_party.plan(ctx.scope, src, files, where))
                file_count += len(files)
                continue
            account = await self._account(ctx, src.get("account"))
            hosts = await self._hosts(
                ctx, src.get("server"), f"step {name!r} source {i + 1}", "FILE_DISTRIBUTION"
            )
            sources.append(
                {
                    "kind": "host",
                    "host_ids": [h.bk_host_id for h in hosts],
                    "files": files,
                    "account": account.account,
                }
            )
            file_count += len(files) * len(hosts)
        dest = info.get("file_destination") or {}
        account = await self._account(ctx, dest.get("account"))
        targets = await self._hosts(
            ctx, dest.get("server"), f"step {name!r} destination", "FILE_DISTRIBUTION"
        )
        if file_count * len(targets) > MAX_FILE_TASKS:
            raise JobError(
                ErrorCode.FILE_TASKS_EXCEED, f"File tasks exceed the limit of {MAX_FILE_TASKS}"
            )
        config = {
            "sources": sources,
            "target_path": str(dest.get("path") or ""),
            "target_name": None,
            "transfer_mode": int(info.get("transfer_mode") or 2),
            "upload_speed_limit": info.get("source_speed_limit"),
            "download_speed_limit": info.get("destination_speed_limit"),
        }
        return NewStep(
            name=name,
            type=int(StepType.FILE),
            values={
                **common,
                "ignore_error": bool(info.get("is_ignore_error")),
                "timeout": int(info.get("timeout") or 7200),
                "account_id": account.id,
                "account_alias": account.alias,
                "account_name": account.account,
                "config": config,
            },
            hosts=host_rows(targets),
        )
