"""Files from third-party sources (``file_type`` 3): fetched into the server's file store.

When a transfer (or a plan's file step) names a file source, the server fetches each file
from the object store or artifact server, with the source's credential, into a blob, and
the step distributes the blob as it does an uploaded file. Fetches go through the same
address guard as callbacks (``engine.outbound``), follow no redirect, and are bounded by
the server's file size limit. The credential's values are decrypted only for the request.

S3 requests are signed with AWS Signature Version 4 by ``botocore`` (the ``s3`` extra).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
from sqlalchemy import Row

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.file_sources import S3, file_name, object_url
from jobfleet.engine.outbound import Outbound, Refused
from jobfleet.engine.submit import Scope
from jobfleet.store.blobs import BlobStore
from jobfleet.store.file_sources import FileSourceStore

try:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError:  # pragma: no cover - the s3 extra is not installed
    S3SigV4Auth = None

FETCH_TIMEOUT = 60.0


def s3_headers(url: str, region: str, values: dict[str, str]) -> dict[str, str]:
    """The SigV4 headers of a GET of ``url`` (``Authorization``, ``X-Amz-Date``…)."""
    if S3SigV4Auth is None:
        raise JobError(
            ErrorCode.NOT_SUPPORTED,
            "S3 file sources need botocore: install jobfleet[s3] on the server",
        )
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


class ThirdPartyFiles:
    def __init__(
        self,
        store: FileSourceStore,
        blobs: BlobStore,
        outbound: Outbound,
        max_file_size: int | None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.outbound = outbound
        self.max_file_size = max_file_size

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
            row = await self.store.source_by_id(scope.biz_ids, number)
            if row is None:
                raise JobError(
                    ErrorCode.FILE_SOURCE_NOT_EXIST, f"File source does not exist: [{number}]"
                )
            return row
        if not isinstance(code, str) or not code:
            raise JobError.missing(f"{field}.file_source_id|{field}.file_source_code")
        row = await self.store.source_in(scope.biz_ids, code)
        if row is None:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_FOUND_BY_CODE,
                f"Cannot find file source by code [{code}]",
            )
        return row

    async def fetch(
        self, scope: Scope, raw: dict[str, Any], files: list[str], owner: str, field: str
    ) -> list[dict[str, Any]]:
        """Fetch ``files`` of the source ``raw`` names; the file-step sources of the blobs."""
        row = await self.source(scope, raw, field)
        if not row.enable:
            raise JobError(
                ErrorCode.FILE_SOURCE_NOT_EXIST, f"File source [{row.code}] is disabled"
            )
        credential = await self.store.credential(row.bk_biz_id, row.credential_id)
        values = self.store.values(credential)
        access = dict(row.access_params)
        sources = []
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
            for path in files:
                url = object_url(row.type, access, row.file_prefix or "", path)
                if row.type == S3:
                    headers = s3_headers(url, access.get("region", "us-east-1"), values)
                else:
                    headers = http_headers(values)
                blob_id = await self.blobs.create(
                    name=file_name(path), kind="third_party", bk_biz_id=row.bk_biz_id,
                    owner=owner,
                )
                await self._download(client, url, headers, blob_id, f"{row.code}:{path}")
                sources.append({"kind": "blob", "blob_id": blob_id, "name": file_name(path)})
        return sources

    async def _download(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        blob_id: str,
        what: str,
    ) -> None:
        try:
            async with self.outbound.get(client, url, headers=headers) as resp:
                if resp.status_code != 200:
                    raise JobError(
                        ErrorCode.THIRD_FILE_SOURCE_GET_OBJECT_FAILED,
                        f"Third file source response error: GetObject, "
                        f"Detail: [{what}: HTTP {resp.status_code}]",
                    )
                await self.blobs.receive(
                    blob_id, resp.aiter_bytes(), max_size=self.max_file_size
                )
        except Refused as exc:
            raise JobError.invalid("access_params", exc.reason) from None
        except httpx.HTTPError as exc:
            raise JobError(
                ErrorCode.THIRD_FILE_SOURCE_GET_OBJECT_FAILED,
                f"Third file source response error: GetObject, "
                f"Detail: [{what}: {type(exc).__name__}]",
            ) from None
