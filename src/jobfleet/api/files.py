"""Moving file bytes over HTTP: agents' uploads and downloads, operators' uploads."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from jobfleet.api import envelope
from jobfleet.api.errors import request_id
from jobfleet.api.params import get_list
from jobfleet.api.routing import Call, add_api, make_endpoint, services_of
from jobfleet.api.services import Services
from jobfleet.domain.agent_credentials import parse_credential
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.store.blobs import COMPLETE, USED_MESSAGE
from jobfleet.store.secrets import new_secret

PREFIX = "/api/jobfleet/v1"
MAX_NAME = 255


class BlobResponse(FileResponse):
    # Starlette reads 64 KiB per thread hop; a file step moves gigabytes
    chunk_size = 1024 * 1024


async def agent_host(services: Services, request: Request) -> int:
    cred = parse_credential(request.headers.get("authorization"))
    source = request.client.host if request.client else ""
    host = await services.auth.agent(*cred, source) if cred else None
    if host is None:
        raise JobError(ErrorCode.SERVICE_AUTH_FAIL, "Agent authentication failed", http_status=401)
    return host


def clean_name(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base in (".", "..") or len(base) > MAX_NAME or "\0" in base:
        raise JobError.invalid("file name", f"{name!r} is not a usable file name")
    return base


async def _receive(
    services: Services, request: Request, blob_id: str, *, replace: bool = False
) -> dict[str, Any]:
    blob = await services.blobs.receive(
        blob_id, request.stream(), max_size=services.limits.max_file_size, replace=replace
    )
    return {"file_id": blob.id, "name": blob.name, "size": blob.size, "sha256": blob.sha256}


async def agent_put(request: Request) -> Response:
    """A source agent sends the bytes of a file the engine asked it for."""
    services = services_of(request)
    host = await agent_host(services, request)
    blob_id = request.path_params["blob_id"]
    blob = await services.blobs.get(blob_id)
    if blob is None or blob.writer_host_id != host:
        raise JobError(
            ErrorCode.PERMISSION_DENIED, "This agent may not write that file", http_status=403
        )
    # a retry writes the file again; of two writes at once the later one is kept
    received = await _receive(services, request, blob_id, replace=True)
    return envelope.ok(received, request_id(request))


async def agent_get(request: Request) -> Response:
    """A target agent fetches a file it was sent; ``Range`` resumes a broken download."""
    services = services_of(request)
    host = await agent_host(services, request)
    blob_id = request.path_params["blob_id"]
    blob = await services.blobs.get(blob_id)
    if blob is None or not await services.blobs.may_read(blob_id, host):
        raise JobError(
            ErrorCode.PERMISSION_DENIED, "This agent may not read that file", http_status=403
        )
    if blob.state != COMPLETE:
        lost = services.blobs.why_lost(blob_id)
        if lost is not None:
            raise JobError(
                ErrorCode.BAD_REQUEST, f"The file will not be stored: {lost}", http_status=410
            )
        # a file its source serves to the targets is fetched now, for this fallback
        services.blobs.asked_for(blob_id)
        raise JobError(ErrorCode.BAD_REQUEST, "The file is not complete yet", http_status=409)
    return BlobResponse(
        await services.blobs.local_path(blob_id),
        filename=blob.name,
        headers={"X-Jobfleet-Sha256": blob.sha256 or ""},
    )


async def upload_with_token(request: Request) -> Response:
    """The URL handed out by ``generate_local_file_upload_url``: the token is the credential."""
    services = services_of(request)
    blob_id = request.path_params["blob_id"]
    source = request.client.host if request.client else ""
    services.auth.failures.check(source)
    blob = await services.blobs.check_token(blob_id, request.query_params.get("token", ""))
    if blob is None:
        services.auth.failures.take(source)
        raise JobError(ErrorCode.SERVICE_AUTH_FAIL, "Invalid upload token", http_status=401)
    if blob.state == COMPLETE:
        raise JobError(ErrorCode.BAD_REQUEST, USED_MESSAGE, http_status=409)
    return envelope.ok(await _receive(services, request, blob_id), request_id(request))


async def upload(call: Call) -> dict[str, Any]:
    """``POST /files?name=…&bk_biz_id=…`` with the file as the raw body."""
    scope = await call.scope("upload_file")
    name = clean_name(str(call.request.query_params.get("name") or ""))
    blob_id = await call.services.blobs.create(
        name=name, kind="upload", bk_biz_id=scope.bk_biz_id, owner=call.caller.username
    )
    result = await _receive(call.services, call.request, blob_id)
    result["path"] = f"{blob_id}/{name}"
    return result


async def generate_local_file_upload_url(call: Call) -> dict[str, Any]:
    scope = await call.scope("upload_file")
    names = [clean_name(str(n)) for n in get_list(call.params, "file_name_list")]
    if not names:
        raise JobError.missing("file_name_list")
    base = str(call.request.base_url).rstrip("/")
    url_map = {}
    for name in names:
        token = new_secret()
        blob_id = await call.services.blobs.create(
            name=name,
            kind="upload",
            bk_biz_id=scope.bk_biz_id,
            owner=call.caller.username,
            token=token,
        )
        url_map[name] = {
            "upload_url": f"{base}{PREFIX}/files/upload/{blob_id}?token={token}",
            "path": f"{blob_id}/{name}",
        }
    return {"url_map": url_map}


def register(router: APIRouter) -> None:
    router.add_api_route(PREFIX + "/agents/blobs/{blob_id}", agent_put, methods=["PUT"])
    router.add_api_route(PREFIX + "/agents/blobs/{blob_id}", agent_get, methods=["GET"])
    for method in ("PUT", "POST"):
        router.add_api_route(
            PREFIX + "/files/upload/{blob_id}",
            upload_with_token,
            methods=[method],
            operation_id=f"upload_with_token_{method.lower()}",
        )
    router.add_api_route(
        PREFIX + "/files", make_endpoint(services_of, upload, raw_body=True), methods=["POST"]
    )
    add_api(router, "generate_local_file_upload_url", generate_local_file_upload_url, query=False)
