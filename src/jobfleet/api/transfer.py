"""File calls: fast_transfer_file, push_config_file, jobfleet's fetch, and file logs."""

from __future__ import annotations

import posixpath
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Row
from starlette.requests import Request
from starlette.responses import Response

from jobfleet.api.auditing import as_caller, audit
from jobfleet.api.auth import Caller
from jobfleet.api.execute import check_callback_url, job_in_scope
from jobfleet.api.files import BlobResponse
from jobfleet.api.params import get_bool, get_int, get_list, get_str, need_int
from jobfleet.api.routing import OWN_PREFIX, Call, add_api, make_endpoint, services_of
from jobfleet.api.scope import holds_scope
from jobfleet.api.services import Services
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.paths import MAX_NAME, MAX_PATH, source_label
from jobfleet.domain.plans import MAX_SPEED_LIMIT
from jobfleet.domain.rolling import parse_rolling
from jobfleet.domain.scripts import MAX_TASK_NAME, check_timeout, decode_base64_bytes
from jobfleet.domain.status import ScopeType, TaskType
from jobfleet.domain.targets import parse_target
from jobfleet.engine.submit import Account, FileRequest, Scope, submit_file
from jobfleet.store.blobs import COMPLETE, Blob
from jobfleet.store.filelogs import DOWNLOAD, UPLOAD

MAX_FILE_TASKS = 100_000
MAX_CONFIG_FILE = 5 * 1024 * 1024


def _account(call: Call, scope: Scope, raw: Any, name: str) -> Any:
    if isinstance(raw, str) and raw:
        return call.services.submitter.resolve_account(scope, None, raw)
    if isinstance(raw, dict) and (raw.get("id") or raw.get("alias")):
        account_id = get_int(raw, "id", minimum=1)
        return call.services.submitter.resolve_account(scope, account_id, get_str(raw, "alias"))
    raise JobError.missing(name)


def _absolute(path: Any, name: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise JobError.missing(name)
    text = path.strip()
    if not text.startswith("/"):
        raise JobError.invalid(name, f"{text!r} is not an absolute path")
    if len(text) > MAX_PATH:
        raise JobError.invalid(name, f"longer than {MAX_PATH} characters")
    return text


async def _targets(call: Call, scope: Scope) -> tuple[Account, list[Any]]:
    p = call.params
    account = await call.services.submitter.resolve_account(
        scope, get_int(p, "account_id"), get_str(p, "account_alias")
    )
    hosts = await call.services.submitter.resolve_hosts(
        parse_target(p.get("target_server")), scope, action="FILE_DISTRIBUTION"
    )
    return account, hosts


def _common(
    call: Call,
    default: str,
    task_type: TaskType,
    config: dict[str, Any],
    account: Account,
    hosts: list[Any],
) -> FileRequest:
    p = call.params
    rolling = None
    if task_type == TaskType.FAST_FILE:
        rolling = parse_rolling(p.get("rolling_config"), len(hosts))
    return FileRequest(
        rolling=rolling,
        name=get_str(p, "task_name", max_length=MAX_TASK_NAME),
        default_name=default,
        task_type=int(task_type),
        config=config,
        timeout=check_timeout(get_int(p, "timeout"), call.services.engine.settings.max_timeout),
        account=account,
        hosts=hosts,
        callback_url=check_callback_url(get_str(p, "callback_url")),
        start=get_bool(p, "start_task", True),
        operator=call.caller.username,
        app_code=call.caller.app_code,
    )


async def fast_transfer_file(call: Call) -> dict[str, Any]:
    p = call.params
    scope = await call.scope("quick_transfer_file")
    target_path = _absolute(p.get("file_target_path"), "file_target_path")
    target_name = get_str(p, "file_target_name", max_length=MAX_NAME)
    if target_name and ("/" in target_name or target_name in (".", "..")):
        raise JobError.invalid("file_target_name", "must be a plain file name")
    mode = get_int(p, "transfer_mode", default=2)
    if mode not in (1, 2):
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            f"transfer_mode {mode} is not supported; use 1 (strict) or 2 (force)",
        )
    raw_sources = get_list(p, "file_source_list")
    if not raw_sources:
        raise JobError.missing("file_source_list")
    sources: list[dict[str, Any]] = []
    file_count = 0
    for raw in raw_sources:
        if not isinstance(raw, dict):
            raise JobError.invalid("file_source_list")
        files = raw.get("file_list")
        if not isinstance(files, list) or not files:
            raise JobError.missing("file_source_list.file_list")
        file_type = get_int(raw, "file_type", default=1)
        if file_type == 1:
            paths = [_absolute(f, "file_source_list.file_list") for f in files]
            account = await _account(call, scope, raw.get("account"), "file_source_list.account")
            hosts = await call.services.submitter.resolve_hosts(
                parse_target(raw.get("server"), "file_source_list.server"),
                scope,
                action="FILE_DISTRIBUTION",
            )
            sources.append(
                {
                    "kind": "host",
                    "host_ids": [h.bk_host_id for h in hosts],
                    "files": paths,
                    "account": account.account,
                }
            )
            file_count += len(paths) * len(hosts)
        elif file_type == 2:
            sources.extend(
                # an upload belongs to the scope it was made in: a set's are the set's
                # own, not its members'
                await call.services.blobs.uploaded_sources(
                    [str(f or "") for f in files], {scope.bk_biz_id}
                )
            )
            file_count += len(files)
        elif file_type == 3:
            names = [str(f) for f in files]
            sources.append(
                await call.services.third_party.plan(scope, raw, names, "file_source_list")
            )
            file_count += len(files)
        else:
            raise JobError.invalid(
                "file_source_list.file_type", "1 (server) or 3 (third-party source)"
            )
    account, targets = await _targets(call, scope)
    if file_count * len(targets) > MAX_FILE_TASKS:
        raise JobError(
            ErrorCode.FILE_TASKS_EXCEED, f"File tasks exceed the limit of {MAX_FILE_TASKS}"
        )
    config = {
        "sources": sources,
        "target_path": target_path,
        "target_name": target_name,
        "transfer_mode": mode,
        "upload_speed_limit": get_int(p, "upload_speed_limit", maximum=MAX_SPEED_LIMIT),
        "download_speed_limit": get_int(p, "download_speed_limit", maximum=MAX_SPEED_LIMIT),
    }
    job_id, name, step_id = await submit_file(
        call.services.submitter,
        scope,
        _common(call, "File Distribution", TaskType.FAST_FILE, config, account, targets),
    )
    await audit(
        call,
        "fast_transfer_file",
        "job_instance",
        job_id,
        scope=scope,
        detail={"hosts": len(targets)},
    )
    return {"job_instance_id": job_id, "job_instance_name": name, "step_instance_id": step_id}


async def push_config_file(call: Call) -> dict[str, Any]:
    p = call.params
    scope = await call.scope("quick_transfer_file")
    target_path = _absolute(p.get("file_target_path"), "file_target_path")
    items = get_list(p, "file_list")
    if not items:
        raise JobError.missing("file_list")
    parsed = []
    for item in items:
        if not isinstance(item, dict) or not item.get("file_name"):
            raise JobError.missing("file_list.file_name")
        name = str(item["file_name"])
        if "/" in name or name in (".", ".."):
            raise JobError.invalid("file_list.file_name", f"{name!r} is not a file name")
        if len(name) > MAX_NAME:
            raise JobError.invalid("file_list.file_name", f"longer than {MAX_NAME} characters")
        # a file arrives byte for byte, whatever its encoding
        content = decode_base64_bytes(
            str(item.get("content") or ""), "file_list.content", MAX_CONFIG_FILE
        )
        parsed.append((name, content))
    account, targets = await _targets(call, scope)
    sources = []
    for name, content in parsed:
        blob_id = await call.services.blobs.create(
            name=name, kind="config", bk_biz_id=scope.bk_biz_id, owner=call.caller.username
        )
        await call.services.blobs.store_bytes(blob_id, content)
        sources.append({"kind": "blob", "blob_id": blob_id, "name": name, "mode": 0o644})
    config = {"sources": sources, "target_path": target_path, "transfer_mode": 2}
    job_id, name, step_id = await submit_file(
        call.services.submitter,
        scope,
        _common(call, "Push Config File", TaskType.FAST_FILE, config, account, targets),
    )
    await audit(
        call,
        "push_config_file",
        "job_instance",
        job_id,
        scope=scope,
        detail={"hosts": len(targets)},
    )
    return {"job_instance_id": job_id, "job_instance_name": name, "step_instance_id": step_id}


async def fetch(call: Call) -> dict[str, Any]:
    """Bring files from hosts to the server: ``{target_server, file_list, account_alias}``."""
    scope = await call.scope("quick_transfer_file")
    files = [_absolute(f, "file_list") for f in get_list(call.params, "file_list")]
    if not files:
        raise JobError.missing("file_list")
    account, hosts = await _targets(call, scope)
    config = {"direction": "fetch", "files": files}
    job_id, name, step_id = await submit_file(
        call.services.submitter,
        scope,
        _common(call, "File Fetch", TaskType.FAST_FILE, config, account, hosts),
    )
    await audit(call, "fetch", "job_instance", job_id, scope=scope, detail={"hosts": len(hosts)})
    return {"job_instance_id": job_id, "job_instance_name": name, "step_instance_id": step_id}


async def fetched(call: Call) -> list[dict[str, Any]]:
    """What a fetch brought back: one entry per host and file, downloadable by ``file_id``."""
    call.params["job_instance_id"] = call.request.path_params["job_instance_id"]
    job = await job_in_scope(call, "view_history")
    steps = await call.services.jobs.steps(job.id)
    out: list[dict[str, Any]] = []
    for step in steps:
        for row in await call.services.file_logs.rows(step.id, step.execute_count, mode=UPLOAD):
            blob = await call.services.blobs.get(row.blob_id) if row.blob_id else None
            out.append(
                {
                    "bk_host_id": row.bk_host_id,
                    "ip": row.src_ip,
                    "bk_cloud_id": row.src_cloud_id,
                    "path": row.src_path,
                    "file_id": row.blob_id,
                    # the server's folder per host: <cloud>_<ip> as [FILESRCIP] names it
                    "url": fetched_url(job.id, row) if row.blob_id else None,
                    "size": blob.size if blob else None,
                    "sha256": blob.sha256 if blob else None,
                    "status": row.status,
                }
            )
    return out


def fetched_url(job_id: int, row: Row[Any]) -> str:
    host_dir = source_label(row.src_cloud_id or 0, row.src_ip or "")
    return f"{OWN_PREFIX}/fetch/{job_id}/{host_dir}{row.src_path}"


async def download_fetched(request: Request) -> Response:
    """A fetched file by where it came from: ``/fetch/<job>/<cloud>_<ip>/<path on the host>``."""
    services = services_of(request)
    try:
        caller = await services.auth.authenticate(request, dict(request.query_params))
        job_id = need_int(dict(request.path_params), "job_instance_id", minimum=1)
        job = await services.jobs.job(job_id)
        if job is None or not await holds_scope(
            services.identity, caller, job.scope_type, job.scope_id
        ):
            raise JobError(
                ErrorCode.JOB_INSTANCE_NOT_EXIST,
                f"Job instance {job_id} does not exist",
                http_status=404,
            )
        host_dir = request.path_params["host_dir"]
        path = "/" + request.path_params["path"]
        for step in await services.jobs.steps(job_id):
            for row in await services.file_logs.rows(step.id, step.execute_count, mode=UPLOAD):
                label = source_label(row.src_cloud_id or 0, row.src_ip or "")
                if label == host_dir and row.src_path == path and row.blob_id:
                    blob = await services.blobs.get(row.blob_id)
                    if blob is not None and blob.state == COMPLETE:
                        await as_caller(
                            services.audit,
                            caller,
                            request,
                            "download_fetched_file",
                            "job_instance",
                            job_id,
                            scope_type=job.scope_type,
                            scope_id=job.scope_id,
                            detail={"host": host_dir, "path": path, "file_id": blob.id},
                        )
                        return BlobResponse(
                            await services.blobs.local_path(blob.id),
                            filename=blob.name,
                            headers={"X-Jobfleet-Sha256": blob.sha256 or ""},
                        )
        raise JobError(
            ErrorCode.NOT_FOUND, f"No file {path} from {host_dir} in job {job_id}", http_status=404
        )
    except (ValueError, KeyError):
        raise JobError(ErrorCode.BAD_REQUEST, "Malformed path", http_status=400) from None


async def _reader_scope(services: Services, caller: Caller, blob: Blob) -> str | None:
    """The scope through which the caller reads a file held for the scope numbered
    ``blob.bk_biz_id``: what a business makes is kept under its id, what a business set
    makes under the set's (as scripts and jobs are)."""
    scope_id = str(blob.bk_biz_id)
    if caller.holds(ScopeType.BIZ, scope_id):
        return ScopeType.BIZ
    if await holds_scope(services.identity, caller, ScopeType.BIZ_SET, scope_id):
        return ScopeType.BIZ_SET
    return None


async def download_file(request: Request) -> Response:
    """An operator downloads a file the server holds (fetched from a host, or uploaded)."""
    services = services_of(request)
    caller = await services.auth.authenticate(request, dict(request.query_params))
    blob_id = request.path_params["file_id"]
    blob = await services.blobs.get(blob_id)
    if blob is None or blob.state != COMPLETE:
        raise JobError(ErrorCode.NOT_FOUND, f"No file {blob_id}", http_status=404)
    scope_type = None if blob.bk_biz_id is None else await _reader_scope(services, caller, blob)
    if scope_type is None:
        raise JobError(
            ErrorCode.PERMISSION_DENIED,
            f"User {caller.username!r} through app {caller.app_code!r} may not read this file",
            http_status=403,
        )
    await as_caller(
        services.audit,
        caller,
        request,
        "download_file",
        "file",
        blob_id,
        scope_type=scope_type,
        scope_id=str(blob.bk_biz_id),
        detail={"name": blob.name, "size": blob.size},
    )
    return BlobResponse(
        await services.blobs.local_path(blob_id),
        filename=blob.name,
        headers={"X-Jobfleet-Sha256": blob.sha256 or ""},
    )


# file logs ------------------------------------------------------------------
def human_size(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("Bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def file_log_view(row: Row[Any], host: dict[str, Any], target_path: str = "") -> dict[str, Any]:
    """``target_path``: the step's target, for a download that failed before it had a
    file of its own to write (normpath would make its empty path ".")."""
    item: dict[str, Any] = {
        "mode": row.mode,
        "src_ip": {
            "bk_host_id": row.src_host_id,
            "bk_cloud_id": row.src_cloud_id or 0,
            "ip": row.src_ip or "0.0.0.0",
        },
        "src_path": row.src_path,
        "status": row.status,
        "log_content": row.log_content,
        "size": human_size(row.size),
        "speed": f"{(row.speed or 0) * 1024:.0f} KB/s",
        "process": f"{row.progress}%",
    }
    if row.mode == DOWNLOAD:
        item["dest_ip"] = host
        item["dest_path"] = posixpath.normpath(row.dest_path) if row.dest_path else target_path
    return item


async def file_logs_for(
    call: Call, step: Row[Any], count: int, hosts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    ids = [h["bk_host_id"] for h in hosts if h.get("bk_host_id")]
    rows = await call.services.file_logs.rows(step.id, count, host_ids=ids)
    target = str((step.config or {}).get("target_path") or "")
    by_host: dict[int, list[Row[Any]]] = {}
    for row in rows:
        by_host.setdefault(row.bk_host_id, []).append(row)
    return [
        {**h, "file_logs": [file_log_view(r, h, target) for r in by_host.get(h["bk_host_id"], [])]}
        for h in hosts
    ]


def register(router: APIRouter) -> None:
    add_api(router, "fast_transfer_file", fast_transfer_file, query=False)
    add_api(router, "push_config_file", push_config_file, query=False)
    router.add_api_route(OWN_PREFIX + "/fetch", make_endpoint(services_of, fetch), methods=["POST"])

    router.add_api_route(
        OWN_PREFIX + "/fetch/{job_instance_id}",
        make_endpoint(services_of, fetched),
        methods=["GET"],
    )
    router.add_api_route(
        OWN_PREFIX + "/fetch/{job_instance_id}/{host_dir}/{path:path}",
        download_fetched,
        methods=["GET"],
    )
    router.add_api_route(OWN_PREFIX + "/files/{file_id}", download_file, methods=["GET"])
