"""The asyncio client: the same surface as ``JobClient``, awaited."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from jobfleet.sdk import _flow
from jobfleet.sdk._api import AdminApi, BkApi, biz_scope, expect_dict, expect_list, with_scope
from jobfleet.sdk._errors import JobApiError, JobWaitTimeout
from jobfleet.sdk._models import (
    Credentials,
    ExecutionResult,
    FileLog,
    JobProgress,
    TransferProgress,
    TransferResult,
)
from jobfleet.sdk._notify import NotifyApi
from jobfleet.sdk._templates import TemplateApi, parse_text, text_request
from jobfleet.sdk._topology import TopologyApi
from jobfleet.sdk._transport import (
    DOWNLOAD_HEADERS,
    FILES_PATH,
    Method,
    RequestSpec,
    admin_request,
    bk_request,
    default_headers,
    download_path,
    is_file_response,
    not_a_file,
    parse_envelope,
    transport_error,
    upload_headers,
)

# called with the status of each poll and the seconds waited so far
Observer = Callable[[dict[str, Any], float], Awaitable[None]]


class AsyncJobClient(
    BkApi[Awaitable[dict[str, Any]]],
    AdminApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]]],
    TemplateApi[Awaitable[dict[str, Any]], Awaitable[str]],
    NotifyApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]]],
    TopologyApi[Awaitable[dict[str, Any]], Awaitable[list[dict[str, Any]]]],
):
    """A bk-job v3 client for jobfleet on asyncio; see ``JobClient``.

    >>> async with AsyncJobClient("http://127.0.0.1:8080", "app", "secret", "admin") as c:
    ...     result = await c.execute_and_wait("uptime", hosts=["10.0.0.1"])
    """

    def __init__(
        self,
        base_url: str,
        app_code: str,
        app_secret: str,
        username: str,
        *,
        biz: int | str | None = None,
        timeout: float = 30.0,
        verify: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(app_code, app_secret, username)
        self.biz = biz
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=default_headers(self.credentials),
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncJobClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def close(self) -> None:
        await self.aclose()

    # --- raw calls --------------------------------------------------------------

    async def call(
        self, name: str, params: Mapping[str, Any] | None = None, *, method: Method | None = None
    ) -> Any:
        """Call bk-job API ``name`` and return its ``data``; scope is filled from ``biz``."""
        scoped = with_scope(dict(params or {}), self.biz)
        return await self._send(bk_request(name, scoped, method))

    async def admin_call(
        self,
        method: Method,
        path: str,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call jobfleet's own API at ``/api/jobfleet/v1{path}`` and return its ``data``."""
        return await self._send(admin_request(method, path, json, params))

    async def _send(self, spec: RequestSpec) -> Any:
        request = self._http.build_request(
            spec.method, spec.path, params=spec.query, json=spec.body
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        return parse_envelope(response)

    def _bk(self, name: str, params: dict[str, Any]) -> Awaitable[dict[str, Any]]:
        return self._bk_async(name, params)

    async def _bk_async(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        return expect_dict(await self.call(name, params), name)

    def _admin_dict(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Awaitable[dict[str, Any]]:
        return self._admin_dict_async(method, path, body, params)

    async def _admin_dict_async(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return expect_dict(await self.admin_call(method, path, body, params), path)

    def _admin_list(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Awaitable[list[dict[str, Any]]]:
        return self._admin_list_async(path, params)

    async def _admin_list_async(
        self, path: str, params: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        return expect_list(await self.admin_call("GET", path, None, params), path)

    def _admin_text(self, path: str, params: dict[str, Any]) -> Awaitable[str]:
        return self._admin_text_async(path, params)

    async def _admin_text_async(self, path: str, params: dict[str, Any]) -> str:
        request = text_request(self._http, "GET", path, params)
        return parse_text(await self._send_built(request))

    def _admin_send_text(
        self, path: str, text: str, params: dict[str, Any]
    ) -> Awaitable[dict[str, Any]]:
        return self._admin_send_text_async(path, text, params)

    async def _admin_send_text_async(
        self, path: str, text: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        response = await self._send_built(text_request(self._http, "POST", path, params, text))
        return expect_dict(parse_envelope(response), path)

    async def _send_built(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc

    # --- helpers ----------------------------------------------------------------

    async def execute_and_wait(
        self,
        script: str,
        *,
        hosts: list[str] | None = None,
        host_ids: list[int] | None = None,
        bk_cloud_id: int = 0,
        language: int = 1,
        params: str = "",
        account: str = "root",
        timeout: int = 7200,
        biz: int | str | None = None,
        task_name: str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> ExecutionResult:
        """Run ``script`` on hosts, wait for the end, and return every host's result and log.

        ``hosts`` are IPs (``"ip"`` or ``"cloud:ip"``) in cloud area ``bk_cloud_id``;
        ``host_ids`` are bk host ids. Raises ``JobWaitTimeout`` after ``wait_timeout``
        seconds (the job itself keeps running).
        """
        request = _flow.script_request(
            script,
            hosts=hosts,
            host_ids=host_ids,
            bk_cloud_id=bk_cloud_id,
            language=language,
            params=params,
            account=account,
            timeout=timeout,
            task_name=task_name,
        )
        submitted = await self.fast_execute_script(**request, **biz_scope(biz))
        job_id, step_id = _flow.submitted_ids(submitted)
        status = await self.wait_for_job(
            job_id,
            step_instance_id=step_id,
            biz=biz,
            poll_interval=poll_interval,
            wait_timeout=wait_timeout,
            on_progress=on_progress,
        )
        return await self._result(job_id, step_id, status, biz=biz)

    async def wait_for_job(
        self,
        job_instance_id: int,
        *,
        step_instance_id: int | None = None,
        biz: int | str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[JobProgress], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is finished; return the last ``get_job_instance_status`` data.

        Progress counts the hosts of ``step_instance_id`` (default: the latest started step).
        A few failed polls in a row without a server answer are retried, so a server
        restart does not end the wait.
        """

        async def observe(status: dict[str, Any], elapsed: float) -> None:
            if on_progress is not None:
                on_progress(_flow.progress_of(job_instance_id, status, step_instance_id, elapsed))

        return await self._wait(job_instance_id, biz, poll_interval, wait_timeout, observe)

    async def _wait(
        self,
        job_instance_id: int,
        biz: int | str | None,
        poll_interval: float,
        wait_timeout: float | None,
        observe: Observer,
    ) -> dict[str, Any]:
        started = time.monotonic()
        failures = 0
        while True:
            try:
                status = await self.get_job_instance_status(
                    job_instance_id, return_ip_result=True, **biz_scope(biz)
                )
                elapsed = time.monotonic() - started
                # inside the retry: an observer may call the server too
                await observe(status, elapsed)
            except JobApiError as exc:
                failures += 1
                delay = _flow.retry_delay(exc, failures, poll_interval)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            failures = 0
            if _flow.is_finished(status):
                return status
            if wait_timeout is not None and elapsed >= wait_timeout:
                raise JobWaitTimeout(job_instance_id, elapsed)
            await asyncio.sleep(poll_interval)

    async def get_result(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        *,
        ips: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        biz: int | str | None = None,
        logs: bool = True,
    ) -> ExecutionResult:
        """A job's current state and its hosts' results (and logs) for one step.

        Without ``step_instance_id`` the latest started step is used; ``ips`` /
        ``host_ids`` keep only those hosts.
        """
        status = await self.get_job_instance_status(
            job_instance_id, return_ip_result=True, **biz_scope(biz)
        )
        return await self._result(
            job_instance_id,
            step_instance_id,
            status,
            ips=ips,
            host_ids=host_ids,
            biz=biz,
            logs=logs,
        )

    async def get_logs(
        self,
        job_instance_id: int,
        step_instance_id: int | None = None,
        host_ids: Sequence[int] | None = None,
        *,
        biz: int | str | None = None,
    ) -> dict[int, str]:
        """Host id → log of one step (default: the latest started), for all or some hosts."""
        if step_instance_id is None or host_ids is None:
            result = await self.get_result(
                job_instance_id, step_instance_id, host_ids=host_ids, biz=biz, logs=False
            )
            step_instance_id = result.step_instance_id
            host_ids = _flow.log_host_ids(result.hosts)
        return (await self._fetch_logs(job_instance_id, step_instance_id, host_ids, biz)).text

    async def _result(
        self,
        job_instance_id: int,
        step_instance_id: int | None,
        status: dict[str, Any],
        *,
        ips: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        biz: int | str | None = None,
        logs: bool = True,
    ) -> ExecutionResult:
        step = _flow.require_step(status, job_instance_id, step_instance_id)
        hosts = _flow.select_hosts(_flow.host_results(step), ips, host_ids)
        if logs:
            found = await self._fetch_logs(
                job_instance_id, int(step["step_instance_id"]), _flow.log_host_ids(hosts), biz
            )
            _flow.with_logs(hosts, found)
        return _flow.execution_result(job_instance_id, status, step, hosts)

    async def _fetch_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        host_ids: Sequence[int],
        biz: int | str | None,
    ) -> _flow.StepLogs:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(host_ids):
            logs.add(
                await self.batch_get_job_instance_ip_log(
                    job_instance_id, step_instance_id, host_id_list=chunk, **biz_scope(biz)
                )
            )
        return logs

    # --- files ------------------------------------------------------------------
    # Disk reads, writes and hashing run in worker threads: never on the event loop.

    async def upload_file(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        biz: int | str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Send a local file to the server, streamed from disk.

        Returns ``{file_id, name, size, sha256, path}``; ``path`` is what a
        ``fast_transfer_file`` source with ``file_type: 2`` takes. ``on_progress`` is
        called with the bytes sent so far.
        """
        item = await asyncio.to_thread(_flow.local_file, path, name)
        return await self._upload(item, biz, on_progress)

    async def _upload(
        self,
        item: _flow.LocalFile,
        biz: int | str | None,
        on_progress: Callable[[int], None] | None,
    ) -> dict[str, Any]:
        digest = hashlib.sha256()
        sent = 0

        def read(fh: IO[bytes], size: int) -> bytes:
            chunk = fh.read(size)
            digest.update(chunk)
            return chunk

        async def body() -> AsyncGenerator[bytes, None]:
            nonlocal sent
            fh = await asyncio.to_thread(item.path.open, "rb")
            try:
                # never more than announced: a growing file must not break the request
                while sent < item.size:
                    chunk = await asyncio.to_thread(
                        read, fh, min(_flow.CHUNK_SIZE, item.size - sent)
                    )
                    if not chunk:
                        raise _flow.shrunk(item)
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress(sent)
                    yield chunk
            finally:
                await asyncio.to_thread(fh.close)

        stream = body()
        request = self._http.build_request(
            "POST",
            FILES_PATH,
            params=_flow.upload_query(item.name, self.biz if biz is None else biz),
            headers=upload_headers(item.size),
            content=stream,
        )
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        finally:
            # a server that refuses early (413) leaves the body unread: close the file now
            await stream.aclose()
        answer = expect_dict(parse_envelope(response), FILES_PATH)
        return _flow.checked_upload(answer, item, sent, digest.hexdigest())

    async def download_file(
        self,
        file_id: str,
        dest_path: str | os.PathLike[str],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Save a file the server holds (fetched from a host, or uploaded) at ``dest_path``.

        The bytes go to a temporary file beside it that is renamed once complete and,
        when the server sends its sha256, verified; ``dest_path`` is never left half
        written. ``on_progress`` is called with the bytes received so far.
        """
        dest = Path(dest_path)
        request = self._http.build_request("GET", download_path(file_id), headers=DOWNLOAD_HEADERS)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        try:
            if not is_file_response(response):
                await response.aread()
                raise not_a_file(response)
            expected = response.headers.get(_flow.SHA256_HEADER)
            temp = _flow.temp_path(dest)
            digest = hashlib.sha256()

            def write(fh: IO[bytes], chunk: bytes) -> None:
                fh.write(chunk)
                digest.update(chunk)

            try:
                received = 0
                fh = await asyncio.to_thread(temp.open, "xb")
                try:
                    async for chunk in response.aiter_bytes(_flow.CHUNK_SIZE):
                        await asyncio.to_thread(write, fh, chunk)
                        received += len(chunk)
                        if on_progress is not None:
                            on_progress(received)
                    await asyncio.to_thread(_flush, fh)
                finally:
                    await asyncio.to_thread(fh.close)
                _flow.check_download(file_id, expected, digest.hexdigest())
                await asyncio.to_thread(temp.replace, dest)
            except BaseException:
                await asyncio.shield(asyncio.to_thread(temp.unlink, missing_ok=True))
                raise
        except httpx.TransportError as exc:
            raise transport_error(exc, request) from exc
        finally:
            await response.aclose()

    async def transfer_and_wait(
        self,
        files: Sequence[str | os.PathLike[str]] | None = None,
        *,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
        hosts: Sequence[str] | None = None,
        host_ids: Sequence[int] | None = None,
        bk_cloud_id: int = 0,
        target_path: str,
        account: str = "root",
        transfer_mode: int = 2,
        upload_speed_limit: int | None = None,
        download_speed_limit: int | None = None,
        timeout: int = 7200,
        biz: int | str | None = None,
        task_name: str | None = None,
        poll_interval: float = 0.5,
        wait_timeout: float | None = None,
        on_progress: Callable[[TransferProgress], None] | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> TransferResult:
        """Copy files to ``target_path`` on hosts, wait for the end, and return each
        target's result and file logs.

        ``files`` are local paths, uploaded to the server first (``on_upload`` gets the
        bytes sent and the total); ``remote_files`` are ``(paths, source host IPs)``
        pairs copied from those hosts. ``transfer_mode`` 1 (strict) fails a target whose
        directory is missing, 2 (force) creates it; speed limits are MB/s.
        ``on_progress`` gets the targets' host counts and bytes written after each poll.
        """
        local = await asyncio.to_thread(_flow.local_files, list(files or []))
        request = _flow.transfer_request(
            local=bool(local),
            remote_files=remote_files,
            hosts=hosts,
            host_ids=host_ids,
            bk_cloud_id=bk_cloud_id,
            target_path=target_path,
            account=account,
            transfer_mode=transfer_mode,
            upload_speed_limit=upload_speed_limit,
            download_speed_limit=download_speed_limit,
            timeout=timeout,
            task_name=task_name,
        )
        uploads = await self._upload_all(local, biz, on_upload)
        submitted = await self.fast_transfer_file(
            **_flow.with_uploads(request, uploads), **biz_scope(biz)
        )
        job_id, step_id = _flow.submitted_ids(submitted)
        tally = _flow.ByteTally()

        async def observe(status: dict[str, Any], elapsed: float) -> None:
            if on_progress is None:
                return
            targets = _flow.host_results(_flow.pick_step(status, step_id))
            pending = tally.pending(targets)
            if pending:
                tally.record(targets, await self._fetch_logs(job_id, step_id, pending, biz))
            on_progress(tally.progress(_flow.progress_of(job_id, status, step_id, elapsed)))

        status = await self._wait(job_id, biz, poll_interval, wait_timeout, observe)
        result = await self._result(job_id, step_id, status, biz=biz)
        sources = await self._source_logs(job_id, step_id, remote_files, bk_cloud_id, biz)
        return _flow.transfer_result(result, uploads, sources)

    async def _upload_all(
        self,
        local: list[_flow.LocalFile],
        biz: int | str | None,
        on_upload: Callable[[int, int], None] | None,
    ) -> list[dict[str, Any]]:
        total = sum(item.size for item in local)
        done = 0
        uploads = []
        for item in local:

            def report(sent: int, before: int = done) -> None:
                if on_upload is not None:
                    on_upload(before + sent, total)

            uploads.append(await self._upload(item, biz, report))
            done += item.size
        return uploads

    async def _source_logs(
        self,
        job_instance_id: int,
        step_instance_id: int,
        remote_files: Sequence[tuple[Sequence[str], Sequence[str]]] | None,
        bk_cloud_id: int,
        biz: int | str | None,
    ) -> list[FileLog]:
        logs = _flow.StepLogs()
        for chunk in _flow.chunks(_flow.source_ips(remote_files, bk_cloud_id)):
            logs.add(
                await self.batch_get_job_instance_ip_log(
                    job_instance_id, step_instance_id, ip_list=chunk, **biz_scope(biz)
                )
            )
        return _flow.upload_logs(logs)


def _flush(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())
