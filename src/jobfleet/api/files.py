"""Moving file bytes over HTTP: agents' uploads and downloads, operators' uploads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from jobfleet.api import envelope
from jobfleet.api.agent_channel import BLOBS_PREFIX
from jobfleet.api.auditing import audit, source_of
from jobfleet.api.errors import disk_refused_as_error, request_id
from jobfleet.api.params import get_list
from jobfleet.api.routing import OWN_PREFIX, Call, add_api, make_endpoint, services_of
from jobfleet.api.services import Services
from jobfleet.domain import protocol
from jobfleet.domain.agent_credentials import parse_credential
from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.protocol import ExactReader
from jobfleet.domain.status import ScopeType
from jobfleet.store.blobs import COMPLETE, USED_MESSAGE
from jobfleet.store.secrets import new_secret

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
    # the agents' routes have no endpoint wrapper: a full disk would be a bare 500
    # to the source agent, and its hosts would show nothing of why
    with disk_refused_as_error(request, services.db):
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


def _refused(name: str, reason: str) -> JobError:
    """A bad bundle request: the agent's own routes answer it with HTTP 400."""
    return JobError(
        ErrorCode.INVALID_PARAM_WITH_REASON,
        f"Invalid parameter [{name}]: {reason}",
        http_status=400,
    )


async def agent_put_bundle(request: Request) -> Response:
    """A source agent sends many small files in one body (bundles, ``domain.protocol``): a
    4-byte big-endian length, a JSON manifest ``{"files": [{"blob", "size"}, ...]}`` of
    that length, then each file's bytes in the manifest's order. Each file gets its own
    result: its size and sha256, or why it was not kept."""
    services = services_of(request)
    host = await agent_host(services, request)
    stream = ExactReader(request.stream())
    files = await _manifest(stream, services.limits.max_file_size)
    stored = await services.blobs.get_many([b for b, _ in files])
    if any(b not in stored or stored[b].writer_host_id != host for b, _ in files):
        raise JobError(
            ErrorCode.PERMISSION_DENIED,
            "This agent may not write one of those files",
            http_status=403,
        )
    with disk_refused_as_error(request, services.db):
        results = await services.blobs.receive_many(files, stream.rest())
    answer: list[dict[str, Any]] = []
    for blob_id, _ in files:
        result = results.get(blob_id, "not stored")
        if isinstance(result, str):
            answer.append({"file_id": blob_id, "error": result})
        else:
            answer.append({"file_id": blob_id, "size": result[0], "sha256": result[1]})
    return envelope.ok({"files": answer}, request_id(request))


async def _manifest(stream: ExactReader, max_file_size: int) -> list[tuple[str, int]]:
    head = await stream.take(4)
    length = int.from_bytes(head, "big") if head is not None else -1
    if not 0 < length <= protocol.BUNDLE_MAX_REQUEST_BYTES:
        raise _refused("manifest", "the body does not start with a manifest of a usable length")
    raw = await stream.take(length)
    try:
        parsed = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        raise _refused("manifest", "the manifest is not a JSON document") from None
    entries = parsed.get("files") if isinstance(parsed, dict) else None
    if not isinstance(entries, list) or not 0 < len(entries) <= protocol.BUNDLE_MAX_FILES:
        raise _refused("manifest", f"name 1 to {protocol.BUNDLE_MAX_FILES} files")
    files: list[tuple[str, int]] = []
    for entry in entries:
        blob = entry.get("blob") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if (
            not isinstance(blob, str)
            or not 0 < len(blob) <= 64
            or not isinstance(size, int)
            or isinstance(size, bool)
            or not 0 <= size <= min(protocol.BUNDLE_MAX_FILE_BYTES, max_file_size)
        ):
            raise _refused("manifest", "each file needs its id and a size within the limit")
        files.append((blob, size))
    if (
        len({b for b, _ in files}) != len(files)
        or sum(s for _, s in files) > protocol.BUNDLE_MAX_BYTES
    ):
        raise _refused("manifest", "the files must be distinct and within the bundle's size")
    return files


async def agent_bundle(request: Request) -> Response:
    """A target agent fetches many small files in one answer (bundles, ``domain.protocol``): their
    bytes one after another, in the order asked. Any file it may not have, or that is not
    stored yet, refuses the whole request: the agent then fetches each on its own."""
    services = services_of(request)
    host = await agent_host(services, request)
    ids = await _bundle_ids(request)
    stored = await services.blobs.get_many(ids)
    readable = await services.blobs.readable(ids, host)
    if any(b not in stored or b not in readable for b in ids):
        raise JobError(
            ErrorCode.PERMISSION_DENIED,
            "This agent may not read one of those files",
            http_status=403,
        )
    if any(stored[b].state != COMPLETE or stored[b].size is None for b in ids):
        raise JobError(
            ErrorCode.BAD_REQUEST, "One of those files is not complete yet", http_status=409
        )
    sizes = [int(stored[b].size or 0) for b in ids]
    if max(sizes) > protocol.BUNDLE_MAX_FILE_BYTES or sum(sizes) > protocol.BUNDLE_MAX_BYTES:
        raise _refused("blobs", "those files are too large to fetch together")
    paths = [await services.blobs.local_path(b) for b in ids]
    return StreamingResponse(
        _bundle_body(paths, sizes),
        media_type="application/octet-stream",
        headers={"Content-Length": str(sum(sizes))},
    )


async def _bundle_ids(request: Request) -> list[str]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > protocol.BUNDLE_MAX_REQUEST_BYTES:
            raise JobError(ErrorCode.BAD_REQUEST, "The list of files is too long", http_status=413)
    try:
        parsed = orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise _refused("blobs", "the body is not a JSON document") from None
    ids = parsed.get("blobs") if isinstance(parsed, dict) else None
    if (
        not isinstance(ids, list)
        or not ids
        or len(ids) > protocol.BUNDLE_MAX_FILES
        or not all(isinstance(b, str) and 0 < len(b) <= 64 for b in ids)
        or len(set(ids)) != len(ids)
    ):
        raise _refused(
            "blobs", f"give 1 to {protocol.BUNDLE_MAX_FILES} distinct file ids as a list of strings"
        )
    return ids


async def _bundle_body(paths: list[Path], sizes: list[int]) -> AsyncIterator[bytes]:
    """The files' bytes, about a MiB per thread hop however small each file is."""
    at = 0
    while at < len(paths):
        data, at = await asyncio.to_thread(_read_files, paths, sizes, at)
        yield data


def _read_files(paths: list[Path], sizes: list[int], at: int) -> tuple[bytes, int]:
    out = bytearray()
    while at < len(paths) and (not out or len(out) + sizes[at] <= BlobResponse.chunk_size):
        with paths[at].open("rb", buffering=0) as fh:
            data = fh.read(sizes[at] + 1)
        if len(data) != sizes[at]:
            # the stored file is not what its row says: the agent's check fails the
            # bundle and it fetches the files one by one
            raise OSError(f"stored file {paths[at].name} has {len(data)} bytes, not {sizes[at]}")
        out += data
        at += 1
    return bytes(out), at


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
    received = await _receive(services, request, blob_id)
    # no app credentials here: the upload is the doing of the user who asked for the URL
    await services.audit.record(
        app_code="",
        username=blob.owner,
        action="upload_file",
        resource_type="file",
        resource_id=blob_id,
        scope_type=await _scope_type(services, blob.bk_biz_id),
        scope_id=None if blob.bk_biz_id is None else str(blob.bk_biz_id),
        detail=_upload_detail(received),
        source_ip=source_of(request),
    )
    return envelope.ok(received, request_id(request))


async def _scope_type(services: Services, scope_id: int | None) -> str | None:
    """The kind of scope a file is held for: a business, or a business set."""
    if scope_id is None:
        return None
    if await services.identity.biz_set_members(scope_id) is not None:
        return ScopeType.BIZ_SET
    return ScopeType.BIZ


def _upload_detail(received: dict[str, Any]) -> dict[str, Any]:
    return {k: received[k] for k in ("name", "size", "sha256")}


async def upload(call: Call) -> dict[str, Any]:
    """``POST /files?name=…&bk_biz_id=…`` with the file as the raw body."""
    scope = await call.scope("upload_file")
    name = clean_name(str(call.request.query_params.get("name") or ""))
    blob_id = await call.services.blobs.create(
        name=name, kind="upload", bk_biz_id=scope.bk_biz_id, owner=call.caller.username
    )
    result = await _receive(call.services, call.request, blob_id)
    result["path"] = f"{blob_id}/{name}"
    await audit(call, "upload_file", "file", blob_id, scope=scope, detail=_upload_detail(result))
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
            "upload_url": f"{base}{OWN_PREFIX}/files/upload/{blob_id}?token={token}",
            "path": f"{blob_id}/{name}",
        }
    await audit(
        call, "generate_local_file_upload_url", "file", "", scope=scope, detail={"files": names}
    )
    return {"url_map": url_map}


def register(router: APIRouter) -> None:
    router.add_api_route(
        BLOBS_PREFIX + protocol.BUNDLE_PATH, agent_bundle, methods=["POST"]
    )
    # before the route of one file, which would take "bundle" for a file's id
    router.add_api_route(
        BLOBS_PREFIX + protocol.BUNDLE_PATH, agent_put_bundle, methods=["PUT"]
    )
    router.add_api_route(BLOBS_PREFIX + "{blob_id}", agent_put, methods=["PUT"])
    router.add_api_route(BLOBS_PREFIX + "{blob_id}", agent_get, methods=["GET"])
    for method in ("PUT", "POST"):
        router.add_api_route(
            OWN_PREFIX + "/files/upload/{blob_id}",
            upload_with_token,
            methods=[method],
            operation_id=f"upload_with_token_{method.lower()}",
        )
    router.add_api_route(
        OWN_PREFIX + "/files", make_endpoint(services_of, upload, raw_body=True), methods=["POST"]
    )
    add_api(router, "generate_local_file_upload_url", generate_local_file_upload_url, query=False)
