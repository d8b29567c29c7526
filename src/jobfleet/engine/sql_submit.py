"""Submitting SQL steps: the database account's snapshot and the system account its
client runs as (the message each host gets is built by ``engine.sql``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from jobfleet.domain.db_connect import check_connect
from jobfleet.domain.status import AccountCategory, ScriptLanguage, StepType, TaskType
from jobfleet.engine.submit import Account, Scope, Submitter, default_name, one_step_job
from jobfleet.store.inventory import Host


def db_snapshot(row: Row[Any]) -> dict[str, Any]:
    """What a step keeps of its database account; the password stays encrypted."""
    return {
        "db_account_id": row.id,
        "alias": row.alias,
        "type": row.type,
        "host": row.db_host or "127.0.0.1",
        "port": row.db_port,
        "name": row.db_name or "",
        "user": row.account,
        "password": row.password or "",
    }


async def resolve_db_account(
    submitter: Submitter, scope: Scope, db_account_id: int | None, alias: str | None = None
) -> tuple[dict[str, Any], Account]:
    """The database account's snapshot and the system account its client runs as."""
    row = await submitter.scope_account(
        scope,
        AccountCategory.DB,
        account_id=db_account_id,
        alias=alias,
        missing="db_account_id",
        kind="Database account",
    )
    snapshot = db_snapshot(row)
    # an account made before its values were checked (the password is checked, unsealed,
    # when the host's script is built)
    check_connect(
        int(row.type),
        user=snapshot["user"],
        password=None,
        name=snapshot["name"],
        host=snapshot["host"],
    )
    system = await submitter.resolve_account(scope, row.db_system_account_id, None)
    return snapshot, system


async def fast_sql(
    submitter: Submitter,
    scope: Scope,
    *,
    name: str | None,
    sql: str,
    db_account_id: int,
    timeout: int,
    hosts: list[Host],
    callback_url: str | None,
    start: bool,
    operator: str,
    app_code: str,
) -> tuple[int, str, int]:
    snapshot, system = await resolve_db_account(submitter, scope, db_account_id)
    name = name or default_name("SQL Execution")
    job = one_step_job(
        scope,
        name,
        TaskType.FAST_SCRIPT,
        StepType.SQL,
        system,
        hosts,
        timeout=timeout,
        operator=operator,
        app_code=app_code,
        callback_url=callback_url,
        step_values=sql_step_values(sql, snapshot),
    )
    job_id, step_ids = await submitter.engine.submit(job, start)
    return job_id, name, step_ids[0]


def sql_step_values(sql: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    return {
        "script_language": int(ScriptLanguage.SQL),
        "script_content": sql,
        "config": {"db": snapshot},
    }
