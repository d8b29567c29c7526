"""Files from third-party sources (``file_type`` 3): downloaded into the server's file store
as the first phase of the file step, as bk-job's file gateway does.

At submission (``plan``) the source, its credential and every file's URL are checked, and
the step keeps only the source's id and the file names; the job is created at once. When
the step runs (``download``), the server fetches each file from the object store or
artifact server, with the source's credential, streaming it into a blob; each target host
shows the download as an upload-mode file log row (the source's name, progress, result).
A failed download fails the step; a terminated step stops its downloads. Then the step
distributes the blobs as it does uploaded files.

Fetches go through the same address guard as callbacks (``engine.outbound``), follow no
redirect, and are bounded by the server's file size limit. The credential's values are
decrypted only for the request. S3 requests are signed with AWS Signature Version 4 by
``botocore`` (the ``s3`` extra).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.file_sources import S3_KINDS, file_name, object_url
from jobfleet.domain.paths import LOCAL_SOURCE
from jobfleet.domain.status import FileLogStatus, HostStatus
from jobfleet.engine.file_gathering import Gathered, Prepared
from jobfleet.engine.outbound import Outbound, Refused
from jobfleet.engine.submit import Scope
from jobfleet.store.blobs import Blob, BlobStore
from jobfleet.store.file_sources import FileSourceStore
from jobfleet.store.filelogs import FAILED, SUCCESS, UPLOAD, WAITING, FileLogStore, update_row

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 60.0
# how often a download's progress is written to the file logs, in seconds
PROGRESS_INTERVAL = 1.0


def s3_headers(url: str, region: str, values: dict[str, str]) -> dict[str, str]:
    """The SigV4 headers of a GET of ``url`` (``Authorization``, ``X-Amz-Date``…)."""
    # loaded here: botocore holds ~4 MiB that a server with no S3 source never needs
    try:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
    except ImportError:  # pragma: no cover - the s3 extra is not installed
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            "S3 file sources need botocore: install jobfleet[s3] on the server",
        ) from None
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(values["credential_access_key"], values["credential_secret_key"])
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return {k: str(v) for k, v in request.headers.items() if k.lower() != "host"}


def http_headers(values: dict[str, str]) -> dict[str, str]:
    """Basic authentication for a user name and password, a bearer token otherwise."""
    if "credential_username" in values:
        pair = f"{values['credential_username']}:{values['credential_password']}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    token = values.get("credential_secret_key") or values.get("credential_password") or ""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class _Download:
    """One file being fetched: where it shows in the targets' file logs."""

    step_id: int
    execute_count: int
    host_ids: list[int]
    seq: int
    shown: str
    size: int | None = None
    status: int = WAITING
    progress: int = 0
    speed: float | None = None

    def rows(self, log: str) -> list[dict[str, Any]]:
        return [
            update_row(
                self.step_id,
                self.execute_count,
                host,
                UPLOAD,
                self.seq,
                status=self.status,
                size=self.size,
                speed=self.speed,
                progress=self.progress,
                log=log[:4000],
            )
            for host in self.host_ids
        ]


class ThirdPartyFiles:
    def __init__(
        self,
        store: FileSourceStore,
        blobs: BlobStore,
        outbound: Outbound,
        max_file_size: int | None,
        file_logs: FileLogStore,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.outbound = outbound
        self.max_file_size = max_file_size
        self.file_logs = file_logs

    async def source(self, scope: Scope, raw: dict[str, Any], field: str) -> Row[Any]:
        """The file source a ``file_source_list`` entry names (``file_source_id`` wins
        over ``file_source_code``), in the scope's businesses."""
        source_id = raw.get("file_source_id")
        code = raw.get("file_source_code")
        if source_id not in (None, ""):
            try:
                number = int(source_id)
            except (TypeError, ValueError):
                raise JobError.invalid(f"{field}.file_source_id") from None
            row = await self._in_scope(
                scope, lambda biz_ids: self.store.source_by_id(biz_ids, number)
            )
            if row is None:
                raise JobError(
                    ErrorCode.FILE_SOURCE_NOT_EXIST, f"File source does not exist: [{number}]"
                )
            return row
        if not isinstance(code, str) or not code:
            raise JobError.missing(f"{field}.file_source_id|{field}.file_source_code")
        row = await self._in_scope(scope, lambda biz_ids: self.store.source_in(biz_ids, code))
        if row is None:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_FOUND_BY_CODE,
                f"Cannot find file source by code [{code}]",
            )
        return row

    @staticmethod
    async def _in_scope(
        scope: Scope, find: Callable[[set[int]], Awaitable[Row[Any] | None]]
    ) -> Row[Any] | None:
        """The scope's own source (a business set's are made under the set's id), else
        one of its businesses'."""
        row = await find({scope.bk_biz_id})
        if row is None and scope.biz_ids != {scope.bk_biz_id}:
            row = await find(scope.biz_ids)
        return row

    async def plan(
        self, scope: Scope, raw: dict[str, Any], files: list[str], field: str
    ) -> dict[str, Any]:
        """The file-step source of ``files`` of the source ``raw`` names, checked now
        (source, credential, file paths, destination address) and fetched when the
        step runs."""
        import httpx  # on first use: ~5 MiB with rich and pygments, see outbound.checked

        row = await self.source(scope, raw, field)
        if not row.enable:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_EXIST, f"File source [{row.code}] is disabled"
            )
        await self.store.credential(row.bk_biz_id, row.credential_id)
        access = dict(row.access_params)
        for path in files:
            url = object_url(row.type, access, row.file_prefix or "", path)
            try:
                await self.outbound.checked(url)
            except Refused as exc:
                raise JobError.invalid("access_params", exc.reason) from None
            except httpx.HTTPError:
                pass  # a name that does not resolve now may when the step runs
        return {
            "kind": "third_party",
            "file_source_id": row.id,
            "bk_biz_id": row.bk_biz_id,
            "code": row.code,
            "alias": row.alias,
            "files": list(files),
        }

    async def download(
        self,
        step: Row[Any],
        source: dict[str, Any],
        host_ids: list[int],
        first_seq: int,
        deadline: float,
    ) -> Gathered:
        """Fetch a source's files into blobs, one after another, shown in the file logs
        of ``host_ids`` (rows from ``first_seq`` on); the first failure ends it."""
        import httpx  # on first use: ~5 MiB with rich and pygments, see outbound.checked

        files = [str(f) for f in source.get("files") or []]
        name = f"{source.get('alias') or source.get('code')} ({source.get('code')})"
        downloads = [
            _Download(step.id, step.execute_count, host_ids, first_seq + n, path)
            for n, path in enumerate(files)
        ]
        # a server that restarted during the downloads starts them again
        await self.file_logs.remove(
            step.id, step.execute_count, UPLOAD, range(first_seq, first_seq + len(files))
        )
        await self.file_logs.add(
            [
                {
                    "step_instance_id": step.id,
                    "execute_count": step.execute_count,
                    "bk_host_id": host,
                    "mode": UPLOAD,
                    "seq": item.seq,
                    "src_path": item.shown,
                    "status": WAITING,
                    "progress": 0,
                    "log_content": f"Waiting to download from file source {name}",
                }
                for item in downloads
                for host in host_ids
            ]
        )
        current: _Download | None = None
        try:
            async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                row, values = await self._open(source)
                prepared = []
                async with httpx.AsyncClient(
                    timeout=FETCH_TIMEOUT, follow_redirects=False
                ) as client:
                    for item in downloads:
                        current = item
                        prepared.append(await self._one(client, row, values, item, name))
            return Gathered(None, prepared)
        except JobError as exc:
            return await self._failed(downloads, current, name, exc.message)
        except TimeoutError:
            return await self._failed(
                downloads, current, name, "the step timed out", HostStatus.GSE_TIMEOUT
            )
        except OSError as exc:
            reason = f"the server's file store: {exc.strerror or type(exc).__name__}"
            return await self._failed(downloads, current, name, reason, HostStatus.GSE_FILE_ERROR)
        except asyncio.CancelledError:
            await self._failed(downloads, current, name, "the step was terminated")
            raise
        except Exception as exc:
            # anything else (a credential no header can carry, a library's own error) ends
            # the downloads too, else the targets wait for them forever; the error's text
            # may quote a credential, so only its kind is shown
            log.warning(
                "file_source_download_failed step=%s source=%s error=%s",
                step.id, source.get("code"), type(exc).__name__,
            )
            reason = f"an unexpected error on the server ({type(exc).__name__})"
            return await self._failed(downloads, current, name, reason, HostStatus.GSE_FILE_ERROR)

    async def _open(self, source: dict[str, Any]) -> tuple[Row[Any], dict[str, str]]:
        """The source as it is now, and its credential's clear values."""
        biz = int(source["bk_biz_id"])
        row = await self.store.source_by_id({biz}, int(source["file_source_id"]))
        if row is None or not row.enable:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_EXIST,
                f"File source [{source.get('code')}] no longer exists or is disabled",
            )
        credential = await self.store.credential(row.bk_biz_id, row.credential_id)
        return row, self.store.values(credential)

    async def _one(
        self,
        client: httpx.AsyncClient,
        row: Row[Any],
        values: dict[str, str],
        item: _Download,
        name: str,
    ) -> Prepared:
        access = dict(row.access_params)
        url = object_url(row.type, access, row.file_prefix or "", item.shown)
        if row.type in S3_KINDS:
            headers = s3_headers(url, access.get("region", "us-east-1"), values)
        else:
            headers = http_headers(values)
        blob_id = await self.blobs.create(
            name=file_name(item.shown), kind="third_party", bk_biz_id=row.bk_biz_id
        )
        item.status = int(FileLogStatus.PULLING)
        await self.file_logs.update(item.rows(f"Downloading from file source {name}"))
        blob = await self._download(client, url, headers, blob_id, item, name)
        item.status, item.progress, item.size = SUCCESS, 100, blob.size
        await self.file_logs.update(
            item.rows(f"Downloaded from file source {name}: {blob.size} bytes")
        )
        return Prepared(
            LOCAL_SOURCE,
            None,
            None,
            None,
            item.shown,
            file_name(item.shown),
            False,
            0o644,
            blob.id,
            blob.size,
            blob.sha256,
        )

    async def _failed(
        self,
        downloads: list[_Download],
        current: _Download | None,
        name: str,
        reason: str,
        status: int = HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST,
    ) -> Gathered:
        message = f"Download from file source {name} failed: {reason}"
        updates: list[dict[str, Any]] = []
        for item in downloads:
            if item.status == SUCCESS:
                continue
            item.status = FAILED
            updates.extend(
                item.rows(
                    message if item is current or current is None else f"Not downloaded: {message}"
                )
            )
        await self.file_logs.update(updates)
        return Gathered(None, status=int(status), message=message)

    async def _download(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        blob_id: str,
        item: _Download,
        name: str,
    ) -> Blob:
        import httpx  # on first use: ~5 MiB with rich and pygments, see outbound.checked

        what = f"{item.shown}"
        try:
            async with self.outbound.get(client, url, headers=headers) as resp:
                if resp.status_code != 200:
                    raise JobError(
                        ErrorCode.THIRD_FILE_SOURCE_GET_OBJECT_FAILED,
                        f"Third file source response error: GetObject, "
                        f"Detail: [{what}: HTTP {resp.status_code}]",
                    )
                total = _length(resp)
                return await self.blobs.receive(
                    blob_id,
                    self._progress(resp.aiter_bytes(), item, total, name),
                    max_size=self.max_file_size,
                )
        except Refused as exc:
            raise JobError.invalid("access_params", exc.reason) from None
        except httpx.HTTPError as exc:
            raise JobError(
                ErrorCode.THIRD_FILE_SOURCE_GET_OBJECT_FAILED,
                f"Third file source response error: GetObject, "
                f"Detail: [{what}: {type(exc).__name__}]",
            ) from None

    async def _progress(
        self, chunks: AsyncIterator[bytes], item: _Download, total: int | None, name: str
    ) -> AsyncIterator[bytes]:
        """The body's chunks, with the file logs told how far it got (at most once a
        second)."""
        started = last = time.monotonic()
        done = 0
        async for chunk in chunks:
            done += len(chunk)
            yield chunk
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL:
                last = now
                item.size = total
                item.progress = min(99, done * 100 // total) if total else 0
                item.speed = done / 1024 / max(now - started, 1e-3)
                await self.file_logs.update(
                    item.rows(f"Downloading from file source {name}: {done} bytes")
                )


def _length(resp: httpx.Response) -> int | None:
    try:
        return int(resp.headers["content-length"])
    except (KeyError, ValueError):
        return None
